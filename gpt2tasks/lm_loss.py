"""The LM head's linear layer and its cross-entropy in one pass over token chunks.

The plain way, `F.cross_entropy(lm_head(hidden), targets)`, materialises the (tokens x vocab) logits
in the model's dtype, again in fp32 for the loss, and their gradient: for `gpt2` at batch 16 x 1024
that is 16,384 x 50,257 numbers three times over (about 8 GB in bf16 + fp32), more than the whole
model's activations. Here the tokens are cut into chunks of `chunk_tokens`; for each chunk the
forward computes the logits, their log-sum-exp, the NLL and -- when a gradient is wanted -- at once
the gradient of the summed NLL with respect to the logits (softmax - one-hot), which is turned into
the chunk's hidden-state gradient and added into the weight gradient before the next chunk. So at
most one chunk's logits exist at a time, and the work is the plain loss's three matmuls (logits,
d_hidden, d_weight): nothing is recomputed (the layout of Liger-Kernel's fused linear
cross-entropy, in plain PyTorch ops that torch.compile can fuse).

Vocabulary padding: the output projection's weight is padded with zero rows to a multiple of
`vocab_multiple` (64: 50,257 -> 50,304) for the matmuls only, because GEMMs whose sizes are
multiples of 64 run markedly faster on GPUs (+17% whole-step throughput for `gpt2`: docs/design.md,
"Performance baseline"). The padded columns' logits are set to -inf before the softmax, so they
are never predicted and get no gradient: the loss and every gradient are those of the unpadded
vocabulary, exactly.
The model itself keeps its vocabulary (checkpoints, generation, evaluation and exports are those
of the real vocabulary: an export has vocab_size 50,257).

The result is the *summed* NLL over the targets that are not `IGNORE_INDEX`; divide by their count
for the mean. Gradients are computed in the forward, so they are exact only for a loss that is
a multiple of this sum (any `grad_output` scale, not a per-token reweighting) -- which is how the
LM step uses it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def padded_size(size: int, multiple: int | None) -> int:
    """`size` rounded up to a multiple of `multiple` (unchanged for None, 0 or 1)."""
    if not multiple or multiple <= 1:
        return size
    return -(-size // multiple) * multiple


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                vocab_multiple: int, compute_dtype: torch.dtype) -> torch.Tensor:
        vocab = weight.shape[0]
        padded = padded_size(vocab, vocab_multiple)
        w = weight.to(compute_dtype)  # (V, C); one cast per step, not one per chunk
        if padded > vocab:
            w = F.pad(w, (0, 0, 0, padded - vocab))  # (Vp, C), zero rows: their logits are masked below
        h = hidden.to(compute_dtype)  # (N, C)
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: fp32 at least
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # LoRA: the tied weight is frozen
        wants_grad = need_h or need_w
        grad_h = torch.empty_like(h) if need_h else None  # (N, C)
        grad_w = torch.zeros(padded, h.shape[1], dtype=acc, device=h.device) if need_w else None  # (Vp, C)
        total = torch.zeros((), dtype=acc, device=h.device)
        for start in range(0, h.shape[0], chunk_tokens):
            hc = h[start:start + chunk_tokens]  # (n, C)
            tc = targets[start:start + chunk_tokens]  # (n,)
            logits = (hc @ w.t()).to(acc)  # (n, Vp): the only vocab-sized tensor, one chunk at a time
            if padded > vocab:
                logits[:, vocab:] = float("-inf")  # padded rows are never predicted
            valid = tc != IGNORE_INDEX  # (n,)
            safe = tc.clamp(min=0).unsqueeze(1)  # (n, 1): ignored targets point at 0, then masked out
            # log-softmax in place (one vocab-sized buffer per chunk, not the three of logsumexp + softmax):
            # shift by the row max, exponentiate, normalise.
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            target = logits.gather(1, safe).squeeze(1)  # (n,) shifted logit of the target
            probs = logits.exp_()  # (n, Vp), padded columns exp(-inf) = 0
            norm = probs.sum(dim=-1)  # (n,)
            total = total + ((norm.log() - target) * valid).sum()
            if wants_grad:
                # d(sum of NLL)/d logits = softmax - one_hot(target), zero on ignored rows.
                g = probs.div_(norm.unsqueeze(1))
                g.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=g.dtype))
                g.mul_(valid.unsqueeze(1).to(g.dtype))
                g = g.to(compute_dtype)  # (n, Vp)
                if need_h:
                    grad_h[start:start + chunk_tokens] = g @ w  # (n, C)
                if need_w:
                    grad_w += (g.t() @ hc).to(acc)  # (Vp, C), accumulated in fp32
                del g
            del logits, probs  # before the next chunk's logits are allocated
        ctx.grads = (grad_h, grad_w[:vocab] if need_w else None)  # the padded rows' gradient is 0: dropped
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad_h, grad_w), (hidden_dtype, weight_dtype) = ctx.grads, ctx.dtypes
        return (None if grad_h is None else (grad_h * grad_output).to(hidden_dtype),
                None if grad_w is None else (grad_w * grad_output).to(weight_dtype), None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                         vocab_multiple: int | None = None) -> torch.Tensor:
    """Summed NLL of `targets` (N,) under the logits `hidden (N, C) @ weight (V, C).T`, computed chunk
    by chunk (see the module docstring); targets equal to IGNORE_INDEX count nothing. Under autocast
    the matmuls run in the autocast dtype (as the LM head's Linear would), the softmax in fp32."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, int(chunk_tokens), int(vocab_multiple or 1), dtype)


@functools.cache
def compiled_linear_cross_entropy():
    """linear_cross_entropy through torch.compile (built once, on first use)."""
    return torch.compile(linear_cross_entropy)
