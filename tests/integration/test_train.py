"""In-process training runs on tiny models: outputs, learning, resume, label kinds, local checkpoints."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gpt2tasks import resume
from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.train import train
from tests.conftest import write_jsonl

FAST = ("trainer.max_epochs=2", "data.max_train_samples=256", "data.max_eval_samples=96")


def test_default_task_trains_and_writes_the_run(cfg_factory, tmp_path):
    out = tmp_path / "run"
    metrics = train(cfg_factory("logger=csv", "trainer.max_epochs=4", "data.max_train_samples=640",
                                "trainer.log_every_n_steps=1", output_dir=out))
    assert set(metrics) == {"val/accuracy", "val/f1", "val/loss", "test/accuracy", "test/f1", "test/loss"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "config.yaml").read_text().startswith("seed: 42")
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    # the loss goes down: mean of the first 10 steps' train losses vs the last 10 (random batches:
    # one batch's loss is noisy, so means over several)
    rows = [line.split(",") for line in (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("train/loss")
    losses = [float(r[col]) for r in rows[1:] if r[col]]
    assert len(losses) == 80  # 640 / 32 x 4 epochs, every step logged
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05
    # 4 short epochs only check the plumbing; the full default run reaches ~0.96 (README). How fast a
    # random-init model leaves chance level here varies by seed and machine, so no tight bound.
    assert 0.0 <= metrics["val/accuracy"] <= 1.0 and metrics["val/loss"] < 1.0


def test_eval_reproduces_the_validation_metrics(cfg_factory, tmp_path):
    out = tmp_path / "run"
    metrics = train(cfg_factory(*FAST, output_dir=out))
    again = evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt"))
    assert again == metrics  # exactly: same preprocessing, batches and weights


class CountEvaluations(Callback):
    """How many times each stage ran outside fit, and which weights the final test saw."""

    def __init__(self):
        self.runs: dict[str, int] = {}

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == "validate":
            self.runs["validate"] = self.runs.get("validate", 0) + 1

    def on_test_start(self, trainer, pl_module):
        self.runs["test"] = self.runs.get("test", 0) + 1


class NudgeAtEnd(Callback):
    """Changes the weights in place after the last validation (as weight averaging would): the
    best checkpoint no longer holds the weights in memory."""

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            for p in pl_module.parameters():
                p.add_(0.01)


def test_final_numbers_reuse_the_validation_that_chose_the_best_when_it_is_in_memory(cfg_factory, tmp_path,
                                                                                     monkeypatch):
    # One epoch, one validation: the best checkpoint is the final step, held in memory. The final
    # numbers are that validation's (no reload, no second validation); the test set still runs.
    out, counted, writes = tmp_path / "run", CountEvaluations(), []
    save_atomic = resume.save_atomic
    monkeypatch.setattr(resume, "save_atomic", lambda trainer, path, *a: (writes.append(Path(path).name),
                                                                          save_atomic(trainer, path, *a)))
    metrics = train(cfg_factory("trainer.max_epochs=1", "data.max_train_samples=256", "data.max_eval_samples=96",
                                output_dir=out), callbacks=[counted])
    assert counted.runs == {"test": 1}
    # the final state written once: best.ckpt by the validation training stops after (marked
    # finished), last.ckpt a hard link to it -- not again after the final epoch's end or at the end
    assert writes == ["best.ckpt"]
    assert (out / "checkpoints" / "last.ckpt").samefile(out / "checkpoints" / "best.ckpt")
    assert resume.finished_limits(torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True))
    assert set(metrics) == {"val/accuracy", "val/f1", "val/loss", "test/accuracy", "test/f1", "test/loss"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics  # exactly what a reload gives
    # the checkpoints, written straight to their files (resume.DirectCheckpointIO), load and resume
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no .partial left
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 8 and ckpt["optimizer_states"] and "gpt2tasks" in ckpt


def test_final_numbers_reload_the_best_when_the_weights_changed_since(cfg_factory, tmp_path):
    out, counted = tmp_path / "run", CountEvaluations()
    metrics = train(cfg_factory("trainer.max_epochs=1", "data.max_train_samples=256", "data.max_eval_samples=96",
                                output_dir=out), callbacks=[counted, NudgeAtEnd()])
    assert counted.runs == {"validate": 1, "test": 1}
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics


class CrashAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_gives_the_uninterrupted_result(cfg_factory, tmp_path):
    # dropout stays on: the checkpoint's RNG state makes the resumed epochs identical
    args = ("trainer.max_epochs=3", "data.max_train_samples=192", "data.max_eval_samples=64")
    full = train(cfg_factory(*args, output_dir=tmp_path / "full"))
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg_factory(*args, output_dir=crashed), callbacks=[CrashAtEpoch(2)])
    assert not (crashed / "metrics.json").exists()
    resumed = train(cfg_factory(*args, "resume=true", output_dir=crashed))
    assert resumed == full


def test_output_dir_with_a_run_is_refused_then_overwritten(cfg_factory, tmp_path):
    out = tmp_path / "run"
    train(cfg_factory(*FAST, "trainer.max_epochs=1", output_dir=out))
    before = (out / "checkpoints" / "best.ckpt").read_bytes()
    with pytest.raises(UserError, match="holds a previous run.*overwrite=true.*resume=true"):
        train(cfg_factory(*FAST, output_dir=out))
    assert (out / "checkpoints" / "best.ckpt").read_bytes() == before  # nothing touched
    train(cfg_factory(*FAST, "trainer.max_epochs=1", "overwrite=true", "seed=7", output_dir=out))
    assert "seed: 7" in (out / "config.yaml").read_text()


def _synthetic(n, kind, seed=0):
    """Texts whose label is readable from words, for multi-label and regression."""
    g = torch.Generator().manual_seed(seed)
    words = ["red", "blue", "green"]
    rows = []
    for _ in range(n):
        present = [w for w in words if torch.rand(1, generator=g).item() < 0.5]
        filler = ["the", "a", "some", "this"][int(torch.randint(4, (1,), generator=g))]
        text = f"{filler} " + " and ".join(present or ["nothing"])
        label = present if kind == "multi" else float(len(present)) + 0.5
        rows.append({"text": text, "label": label})
    return rows


@pytest.mark.parametrize("kind,metrics,monitor", [
    ("multi", "[f1_micro,f1_macro,accuracy]", "val/f1_micro"),
    ("regression", "[pearson,spearman,mse]", "val/pearson"),
])
def test_multi_label_and_regression_learn(kind, metrics, monitor, cfg_factory, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", _synthetic(480, kind))
    val_file = write_jsonl(tmp_path / "val.jsonl", _synthetic(96, kind, seed=1))
    result = train(cfg_factory("task=text_classification", f"data.train_file={train_file}",
                               f"data.validation_file={val_file}", f"task.metrics={metrics}",
                               f"task.monitor={monitor}", "trainer.max_epochs=6", "optim.lr=2e-3",
                               "data.batch_size=16"))
    assert result[monitor] > 0.8


def test_local_pretrained_checkpoint_and_pair_inputs(cfg_factory, tmp_path, tiny_gpt2_dir):
    """model.name_or_path=<local dir> loads its weights and tokenizer; sentence pairs get a separator."""
    rows = [{"a": f"the {w} one", "b": f"the {v} one", "same": int(w == v)}
            for w in ["red", "blue", "green", "black"] for v in ["red", "blue", "green", "black"]] * 12
    train_file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = train(cfg_factory("task=text_classification", f"model.name_or_path={tiny_gpt2_dir}",
                               f"data.train_file={train_file}", f"data.validation_file={train_file}",
                               "data.text_column=a", "data.text_pair_column=b", "data.label_column=same",
                               "trainer.max_epochs=1", "task.metrics=[accuracy,f1]"))
    assert 0.0 <= result["val/accuracy"] <= 1.0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    (task,) = ckpt["gpt2tasks"]["tasks"].values()
    hf_config = task["hf_config"]
    assert hf_config["n_embd"] == 32 and hf_config["id2label"] == {"0": "0", "1": "1"} or hf_config["id2label"] == {0: "0", 1: "1"}
    assert hf_config["pad_token_id"] == hf_config["eos_token_id"]


def test_tokenization_is_cached_and_keyed_by_what_it_depends_on(cfg_factory, tmp_path):
    """A second run reuses the tokenized splits; a different row limit must not hit the same cache."""
    import os

    from gpt2tasks.build import build_for_training

    cache = tmp_path / "cache"

    def setup(*overrides):
        dm, _, _ = build_for_training(cfg_factory(f"data.cache_dir={cache}", *overrides))
        return dm.tasks["sample_sentiment"]  # the run's one task's datamodule

    first = setup("data.max_eval_samples=64")
    files = sorted((cache / "tokenized").glob("*.arrow"))
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    again = setup("data.max_eval_samples=64")
    assert sorted((cache / "tokenized").glob("*.arrow")) == files  # nothing new written
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    assert again.datasets["val"].rows == first.datasets["val"].rows
    more = setup("data.max_eval_samples=128")
    assert len(more.datasets["val"]) == 128 and len(first.datasets["val"]) == 64


def test_dedicated_pad_token_resizes_saves_and_reloads(cfg_factory, tmp_path):
    out = tmp_path / "run"
    metrics = train(cfg_factory(*FAST, "trainer.max_epochs=1", "model.pad_token=add", output_dir=out))
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    (name, info), = ckpt["gpt2tasks"]["tasks"].items()
    vocab = info["hf_config"]["vocab_size"]
    assert ckpt["state_dict"][f"model.{name}.model.transformer.wte.weight"].shape[0] == vocab
    assert info["hf_config"]["pad_token_id"] == vocab - 1 != info["hf_config"]["eos_token_id"]
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics
