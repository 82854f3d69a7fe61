"""The fused (chunked) LM head + cross-entropy and the padded vocabulary: exact against the plain loss."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2tasks.lm_loss import IGNORE_INDEX, linear_cross_entropy, padded_size
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.lm import LanguageModelingModule
from gpt2tasks.throughput import peak_cpu_bytes

VOCAB = 1000  # not a multiple of 64: padding to 1024 is exercised


def lm_module(vocab=VOCAB, n_embd=32, n_positions=64, seed=0, **options):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=n_embd, n_positions=n_positions, vocab_size=vocab,
                        pad_token_id=0, eos_token_id=0, bos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return LanguageModelingModule(GPT2LMHeadModel(config), OptimSpec(),
                                  EvalSpec(metrics=["perplexity"], options=options)).train()


def padded_batch(vocab=VOCAB, rows=3, length=21, seed=1):
    """Right-padded rows of different lengths; a real eos (0) inside a row, pad = eos."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (rows, length), generator=g)
    mask = torch.ones_like(input_ids)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    input_ids[mask == 0] = 0
    input_ids[0, 4] = 0  # a real eos: a target like any other
    return {"input_ids": input_ids, "attention_mask": mask}


def loss_and_grads(module, batch):
    module.zero_grad(set_to_none=True)
    loss, _ = module.step(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}


def test_padded_size():
    assert padded_size(50257, 64) == 50304
    assert padded_size(50304, 64) == 50304
    assert padded_size(50257, 1) == padded_size(50257, 0) == padded_size(50257, None) == 50257


@pytest.mark.parametrize("chunk,multiple", [(7, 64), (7, 1), (4096, 64), (5, 128)])
def test_chunked_loss_and_gradients_equal_the_plain_loss(chunk, multiple):
    """The training loss (fused LM head + cross-entropy, vocab padded) equals the plain loss over full
    logits, and so does every parameter's gradient (fp32)."""
    batch = padded_batch()
    plain = lm_module(loss_chunk_tokens=0)
    fused = lm_module(loss_chunk_tokens=chunk, pad_vocab_multiple=multiple)
    ref_loss, ref_grads = loss_and_grads(plain, batch)
    loss, grads = loss_and_grads(fused, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    # ... which is the HF head's own loss where nothing is padded (row 0 alone)
    row = {k: v[:1] for k, v in batch.items()}
    with torch.no_grad():
        hf = plain.model(input_ids=row["input_ids"], labels=row["input_ids"]).loss
    torch.testing.assert_close(fused.step(row)[0].detach(), hf, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_evaluation_keeps_the_exact_plain_path():
    """No gradient: the per-row NLL and token counts that exact perplexity needs, as before."""
    module = lm_module(loss_chunk_tokens=7).eval()
    with torch.no_grad():
        loss, out = module.step(padded_batch())
    assert out["tokens"].tolist() == [20, 14, 5]
    torch.testing.assert_close(loss, out["nll"].sum() / 39)


def test_padded_vocabulary_is_never_predicted():
    """Real logits far below 0 while the padded rows (zeros) would score 0: unmasked, the padded
    entries would take almost all the probability mass and the loss would be far off."""
    torch.manual_seed(0)
    hidden = torch.randn(10, 8, dtype=torch.float64)
    weight = torch.randn(VOCAB, 8, dtype=torch.float64)
    weight[:, 0] = 0
    hidden[:, 0] = 1
    bias_to_minus_40 = torch.zeros(VOCAB, 8, dtype=torch.float64)
    bias_to_minus_40[:, 0] = -40.0  # every real logit shifted by -40 through feature 0
    weight = (weight + bias_to_minus_40).requires_grad_()
    hidden.requires_grad_()
    targets = torch.randint(0, VOCAB, (10,))
    targets[3] = IGNORE_INDEX
    reference = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    gh, gw = torch.autograd.grad(reference, (hidden, weight))
    for multiple in (1, 64, 4096):
        out = linear_cross_entropy(hidden, weight, targets, chunk_tokens=3, vocab_multiple=multiple)
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-10)
        h, w = torch.autograd.grad(out, (hidden, weight))
        torch.testing.assert_close(h, gh, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(w, gw, rtol=1e-10, atol=1e-12)
        assert w.shape == (VOCAB, 8)  # the gradient has the real vocabulary's rows only


def test_bf16_autocast_matches_the_plain_autocast_loss():
    """Under autocast the matmuls run in bf16 as the LM head's Linear would, the softmax in fp32."""
    batch = padded_batch()
    plain, fused = lm_module(loss_chunk_tokens=0), lm_module(loss_chunk_tokens=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, ref_grads = loss_and_grads(plain, batch)
        loss, grads = loss_and_grads(fused, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-2, atol=1e-2)
    wte = "model.transformer.wte.weight"
    assert grads[wte].dtype == torch.float32
    rel = (grads[wte] - ref_grads[wte]).norm() / ref_grads[wte].norm()
    assert rel < 2e-2


def test_fused_loss_never_holds_the_full_logits():
    """One training step (forward + backward) of a GPT-2-vocabulary model on 2 x 256 tokens: the plain
    loss holds the (510 x 50257) fp32 logits (98 MiB) several times over, the fused loss one chunk."""
    batch = {"input_ids": torch.randint(0, 50257, (2, 256)), "attention_mask": torch.ones(2, 256, dtype=torch.long)}
    peaks = {}
    for chunk in (0, 128):
        module = lm_module(vocab=50257, n_embd=64, n_positions=256, loss_chunk_tokens=chunk)
        peaks[chunk] = peak_cpu_bytes(lambda: module.step(batch)[0].backward())
    logits = 510 * 50257 * 4
    assert peaks[0] > 2 * logits  # logits + log-softmax + their gradient
    assert peaks[128] < peaks[0] / 3
    assert peaks[128] < logits  # never one full copy of the logits


def test_bad_loss_options_name_the_key(cfg_factory):
    from gpt2tasks.config import validate_config
    from gpt2tasks.errors import UserError

    with pytest.raises(UserError) as err:
        validate_config(cfg_factory("task=sample_lm", "task.loss_chunk_tokens=-5", "task.pad_vocab_multiple=true"))
    assert "task.loss_chunk_tokens=-5" in str(err.value) and "task.pad_vocab_multiple=True" in str(err.value)
    validate_config(cfg_factory("task=sample_lm", "task.loss_chunk_tokens=0", "task.pad_vocab_multiple=1"))
