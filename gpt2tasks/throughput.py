"""Training throughput on the progress bar and in the logger: samples/s, real tokens/s, MFU.

Lightning ships a `ThroughputMonitor` too, but it syncs CUDA every step, logs under
`train|device/...` and never touches the progress bar; this one counts what users compare --
samples and *real* (non-pad) tokens, from the batch's attention mask -- over a sliding window of
steps, and turns model FLOPs (gpt2tasks.flops) into MFU when a peak is known.

Logged every step: `train/samples_per_sec`, `train/tokens_per_sec` (on the progress bar as
`samples/s` and `tokens/s`),
`train/padding_fraction`, and `train/mfu` when a peak is known (the datasheet on a known GPU,
`throughput.peak_tflops` otherwise).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import lightning as L
import torch

from gpt2tasks.flops import FlopCounter, default_peak_flops


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
        # A multi-task module's batches each run one task's head: count that head's FLOPs.
        heads = pl_module.tasks if hasattr(pl_module, "tasks") else {None: pl_module}
        self._counters = {name: FlopCounter(m.model, m.computes_vocab_logits) for name, m in heads.items()}
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
        counter = self._counters[batch.get("task")]
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
