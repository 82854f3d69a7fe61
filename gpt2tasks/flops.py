"""Model FLOPs and MFU (model FLOPs utilisation), shared by the throughput callback and scripts/bench.py.

Convention (PaLM appendix B / nanoGPT, the one DESIGN.md section 6 uses):

    training FLOPs per real token = 6 * N + 12 * L * C * T

- N: parameters that do a matmul per token, each once. Embeddings (wte, wpe) are lookups and never
  count; the LM head's V x C output projection (tied to wte) counts for the LM kind only -- the
  other heads never run it. For gpt2 LM: N = 124.4M - 0.8M (wpe) = 123.7M.
- 12 * L * C * T: attention scores and weighted sum (QK^T and AV: 2 matmuls x 2 FLOPs x (forward +
  2 x backward) = 12 per layer, width C, context T), the full square as PaLM counts it (not halved
  for causal masking). T is each row's *real* length: padding is not work the model needs, so a
  padded batch never earns FLOPs for its padding. A batch of rows with lengths t_i therefore costs
  6 * N * sum(t_i) + 12 * L * C * sum(t_i ** 2).
- Peak: on GPU the datasheet dense bf16 rate (H100 SXM: 989 TFLOP/s); on CPU a GEMM rate measured
  on this machine (`measure_cpu_peak`), since CPU datasheets mean little with shared cores.
"""

from __future__ import annotations

import time

import torch
from torch import nn

#: dense bf16 tensor-core peak (no sparsity) in FLOP/s, by a substring of torch.cuda.get_device_name()
GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM; matched after "H100 PCIe"
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}


def matmul_parameters(model: nn.Module, uses_lm_head: bool) -> int:
    """N: parameters of `model` (an HF GPT-2 head model) that multiply every token, each once.

    Embedding lookups cost no FLOPs, so wte and wpe never count; the LM head's output projection
    (V x C, tied to wte or not) counts only when `uses_lm_head` (the LM kind)."""
    transformer = model.transformer
    lm_head = getattr(model, "lm_head", None)  # GPT2DoubleHeadsModel has one too
    skip = {id(transformer.wte.weight), id(transformer.wpe.weight)}
    skip |= {id(p) for p in lm_head.parameters()} if lm_head is not None else set()
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total + (lm_head.weight.numel() if uses_lm_head and lm_head is not None else 0)


def flops_per_token(n_params: int, n_layer: int, n_embd: int, context: float) -> float:
    """Training FLOPs for one token that attends over `context` tokens (see module docstring)."""
    return 6 * n_params + 12 * n_layer * n_embd * context


def batch_flops(n_params: int, n_layer: int, n_embd: int, row_lengths: torch.Tensor) -> float:
    """Training FLOPs of one batch whose rows (sequences) have these real lengths."""
    lengths = row_lengths.double()
    return float(6 * n_params * lengths.sum() + 12 * n_layer * n_embd * (lengths ** 2).sum())


def row_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real length of every sequence: (B, T) -> (B,), and (B, choices, T) -> (B * choices,)."""
    return attention_mask.reshape(-1, attention_mask.shape[-1]).sum(-1)


class FlopCounter:
    """Per-batch training FLOPs of one GPT-2 head model (N and shape read once)."""

    def __init__(self, model: nn.Module, uses_lm_head: bool):
        config = model.config
        self.n_params = matmul_parameters(model, uses_lm_head)
        self.n_layer, self.n_embd = int(config.n_layer), int(config.n_embd)

    def per_token(self, context: float) -> float:
        return flops_per_token(self.n_params, self.n_layer, self.n_embd, context)

    def batch(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """FLOPs of a batch as a 0-dim tensor on the mask's device: no host sync (callbacks run every step)."""
        lengths = row_lengths(attention_mask).double()
        return 6 * self.n_params * lengths.sum() + 12 * self.n_layer * self.n_embd * (lengths ** 2).sum()


def gpu_peak_flops(device_name: str) -> float | None:
    """Datasheet dense bf16 FLOP/s of a known GPU, else None."""
    for key, peak in GPU_BF16_PEAK.items():
        if key in device_name:
            return peak
    return None


def measure_cpu_peak(size: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of a big fp32 matmul on this CPU with torch's current thread count (best of a few
    repeats: the machine's attainable GEMM rate, an honest ceiling for fp32 training)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool, caches
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            return 2 * size ** 3 / best


def default_peak_flops(device: torch.device) -> float | None:
    """The peak MFU is measured against when none is configured: the datasheet on a known GPU;
    None on CPU (measuring it costs a second at start-up; scripts/bench.py measures it)."""
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    return None
