"""The throughput callback on a tiny run: per-step counts match the batches, logged rates are consistent."""

import csv
import dataclasses

import pytest
import torch

from gpt2tasks.throughput import ThroughputMonitor
from gpt2tasks.train import train


def test_throughput_monitor_logs_samples_tokens_and_mfu(cfg_factory, tmp_path):
    probe = ThroughputMonitor(peak_flops=1e12, window=4)  # a second monitor, to read its history
    cfg = cfg_factory("logger=csv", "trainer.max_steps=6", "trainer.max_epochs=-1", "data.batch_size=8",
                      "trainer.log_every_n_steps=1", "throughput.peak_tflops=1", output_dir=tmp_path / "run")
    train(cfg, callbacks=[probe])

    steps = [dataclasses.replace(s, tokens=int(s.tokens), flops=float(s.flops)) for s in probe.history]
    assert len(steps) == 6 and all(s.samples == 8 and s.seconds > 0 for s in steps)
    # Real tokens: at least one per sample, never more than the padded batch; dynamic padding
    # leaves every batch at least one full row, so padded tokens <= 8 x the longest row.
    assert all(8 <= s.tokens <= s.padded for s in steps)
    assert all(s.flops > 6 * s.tokens * 100_000 for s in steps)  # tiny has ~0.4M matmul parameters

    rows = [r for r in csv.DictReader(open(next((tmp_path / "run").glob("logs/version_*/metrics.csv"))))
            if r.get("train/samples_per_sec")]
    assert len(rows) == 6
    last = rows[-1]
    samples_s, tokens_s = float(last["train/samples_per_sec"]), float(last["train/tokens_per_sec"])
    window = steps[-4:]
    seconds = sum(s.seconds for s in window)
    # The logged rates are the callback's own window (the probe shares its step clock to ~ms).
    assert abs(tokens_s / samples_s - sum(s.tokens for s in window) / sum(s.samples for s in window)) < 1e-3
    assert 0.5 < samples_s / (32 / seconds) < 2
    assert 0 <= float(last["train/padding_fraction"]) < 1
    # MFU x peak / tokens/s = FLOPs per real token of the window
    flops_per_token = float(last["train/mfu"]) * 1e12 / tokens_s
    assert abs(flops_per_token / (sum(s.flops for s in window) / sum(s.tokens for s in window)) - 1) < 1e-3


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


class HostReadSpy:
    """Lightning callback recording every tensor-to-host read (each one a GPU sync on CUDA) made from
    the start to the end of training steps 2..6 (data loading, before the step, is left out)."""

    def __init__(self):
        import traceback

        self.calls, self.saved, self.traceback = [], {}, traceback

    def start(self):
        for name in HOST_READS:
            original = self.saved[name] = getattr(torch.Tensor, name)

            def spy(*args, _original=original, _name=name, **kwargs):
                where = self.traceback.extract_stack(limit=3)[0]
                self.calls.append(f"{_name} at {where.filename}:{where.lineno}")
                return _original(*args, **kwargs)

            setattr(torch.Tensor, name, spy)

    def stop(self):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)
        self.saved = {}


@pytest.mark.parametrize("task, batches", [("sample_lm", []), ("sample_sentiment", []),  # packed (the default)
                                           ("sample_sentiment", ["data.pack_examples=false"])])  # padded
def test_training_steps_never_read_tensors_on_the_host(task, batches, cfg_factory, monkeypatch):
    """Steps between logging intervals make no host sync: no `.item()`, `bool(tensor)`, ... in the
    step, the loss, clipping, the optimizer, the throughput callback or the progress bar (the one
    used on CUDA, redrawn at the logging interval)."""
    import lightning as L

    import gpt2tasks.build as build

    monkeypatch.setattr(build, "runs_on_cuda", lambda trainer: True)
    spy = HostReadSpy()

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if 2 <= batch_idx <= 6:
                spy.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            spy.stop()

    try:
        train(cfg_factory(f"task={task}", *batches, "trainer.max_steps=8", "data.batch_size=4", "data.max_train_samples=64",
                          "data.max_eval_samples=8", "trainer.log_every_n_steps=50", "trainer.enable_progress_bar=true",
                          "logger=csv"), callbacks=[Window()])
    finally:
        spy.stop()
    assert spy.calls == []
