"""Training throughput on the progress bar and in the logger: samples/s, real tokens/s, MFU;
and the model FLOPs behind MFU (also scripts/bench.py's).

Lightning ships a `ThroughputMonitor` too, but it syncs CUDA every step, logs under
`train|device/...` and never touches the progress bar; this one counts what users compare --
samples and *real* (non-pad) tokens, from the batch's attention mask -- over a sliding window of
steps, and turns model FLOPs (counted below) into MFU when a peak is known.

Logged every step: `train/samples_per_sec`, `train/tokens_per_sec` (on the progress bar as
`samples/s` and `tokens/s`),
`train/padding_fraction`, and `train/mfu` when a peak is known (the datasheet on a known GPU,
`throughput.peak_tflops` otherwise).

Model FLOPs (the convention of PaLM appendix B / nanoGPT, the one docs/design.md's "Performance baseline" uses):

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
from collections import deque
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn


@dataclass
class StepCount:
    """One training step. tokens and flops are 0-dim tensors on the batch's device: reading them
    every step would sync the GPU and stall its queue; Lightning reads the logged rates only when
    it writes logs or redraws the progress bar."""

    seconds: float  # wall time since the previous step ended (data loading + forward + backward + step)
    samples: int
    tokens: torch.Tensor | int  # real tokens (attention mask sum)
    padded: int  # tokens the model ran on, padding included
    flops: torch.Tensor | float  # model FLOPs of the real tokens


class ThroughputMonitor(L.Callback):
    def __init__(self, peak_flops: float | None = None, window: int = 20):
        self.peak_flops = peak_flops
        self.window: deque[StepCount] = deque(maxlen=window)
        self.history: list[StepCount] = []  # every step of this fit, for scripts and tests
        self._counters: dict[str | None, FlopCounter] = {}  # per task of a multi-task module, else one (None)
        self._last_end: float | None = None
        self._batch_start = 0.0

    @classmethod
    def from_config(cls, cfg) -> ThroughputMonitor:
        peak_tflops = cfg.get("throughput", {}).get("peak_tflops")
        return cls(peak_flops=peak_tflops * 1e12 if peak_tflops else None)

    def state_dict(self) -> dict[str, list[list[float]]]:
        # The sliding window travels with checkpoints, so a resumed run's rates cover the same last
        # steps as the uninterrupted run's (plain floats: checkpoints load with weights_only=True).
        return {"window": [[s.seconds, s.samples, float(s.tokens), s.padded, float(s.flops)] for s in self.window]}

    def load_state_dict(self, state: dict[str, list[list[float]]]) -> None:
        self.window.clear()
        for seconds, samples, tokens, padded, flops in state.get("window", []):
            self.window.append(StepCount(seconds, int(samples), tokens, int(padded), flops))
        self._last_end = None  # the first step after the restart is timed from its own start

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each batch runs one task's head (tasks/multitask.py): count that head's FLOPs.
        self._counters = {name: FlopCounter(m.model, m.computes_vocab_logits) for name, m in pl_module.tasks.items()}
        if self.peak_flops is None:
            self.peak_flops = default_peak_flops(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last_end = None  # validation (and checkpointing after it) is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        # The first step after a pause is timed from its own start (its data loading is not seen).
        seconds = now - (self._last_end if self._last_end is not None else self._batch_start)
        self._last_end = now
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        counter = self._counters[pl_module.task_of(batch)]
        # shapes are known on the host; a packed batch (data.pack_examples) counts examples, not rows
        samples, padded = (len(batch["idx"]) if "pack_index" in batch else ids.shape[0]), ids.numel()
        if mask is not None:
            tokens, flops = mask.sum(), counter.batch(mask)
        else:  # packed LM blocks without a mask: every token is real
            tokens, flops = padded, padded * counter.per_token(ids.shape[-1])
        step = StepCount(seconds, samples, tokens, padded, flops)
        self.window.append(step)
        self.history.append(step)

        elapsed = sum(s.seconds for s in self.window)
        if elapsed <= 0:
            return
        log = dict(on_step=True, on_epoch=False, batch_size=samples)
        rates = {"samples": sum(s.samples for s in self.window) / elapsed,
                 "tokens": sum(s.tokens for s in self.window) / elapsed}
        for what, rate in rates.items():
            pl_module.log(f"train/{what}_per_sec", rate, **log)
            pl_module.log(f"{what}/s", rate, prog_bar=True, logger=False, **log)  # short names fit the bar
        pl_module.log("train/padding_fraction",
                      1 - sum(s.tokens for s in self.window) / sum(s.padded for s in self.window), **log)
        if self.peak_flops:
            # Per device: each rank counts its own batches against its own peak.
            pl_module.log("train/mfu", sum(s.flops for s in self.window) / elapsed / self.peak_flops, **log)


def peak_cpu_bytes(fn) -> int:
    """Peak of the bytes torch allocated on the CPU while `fn` ran, from the profiler's allocation
    events (CPU has no max_memory_allocated). For benchmarks and memory tests."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


# ---- model FLOPs (see the module docstring) ---------------------------------------------------------
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
