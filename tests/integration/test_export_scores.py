"""What `eval` scores is chosen on purpose and said; an export describes the weights it holds.

One tiny run (validation every 3 steps, 12 steps, eval sets cut to 8 rows by data.max_eval_samples;
monitored so that its best checkpoint is the first validation's, not the last) serves every test:
- eval of the run's own files keeps that cut (metrics.json reproduced exactly); a file named on the
  eval command line is scored whole unless the same command sets data.max_eval_samples; the rows
  scored per set are printed and written to output=; predict reads every input row;
- the export of last.ckpt reports last.ckpt's metrics and step, best.ckpt's metrics.json's; a
  checkpoint written between validations (a run stopped mid-way) is evaluated at export when the
  run's data is there, and otherwise gets no metrics and a sentence saying why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from gpt2tasks import runfile
from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate, evaluate_checkpoint
from gpt2tasks.export import ExportOptions, export, md_text
from gpt2tasks.predict import predict
from gpt2tasks.resources import DATA_DIR
from gpt2tasks.train import train

SENTIMENT = DATA_DIR / "sample_sentiment"
# 24 rows / batch 4 = 6 steps an epoch, validations after steps 3 and 6 of each; val/loss monitored
# with mode=max (the worst loss), so best.ckpt is an earlier validation's than last.ckpt (step 12).
RUN = ("trainer.max_epochs=2", "data.max_train_samples=24", "data.max_eval_samples=8", "data.batch_size=4",
       "trainer.val_check_interval=3", "task.monitor=val/loss", "task.mode=max", "data.max_length=32")
N_TEST = 300  # rows of data/sample_sentiment/test.csv


def _rows(path: Path, n: int) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))[:n]


def _write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import compose

    out = tmp_path_factory.mktemp("scored") / "run"
    train(compose(f"output_dir={out}", "logger=none", "trainer.enable_progress_bar=false", *RUN))
    return out


@pytest.fixture(scope="module")
def forty_rows(tmp_path_factory) -> Path:
    """A 40-row validation file (the run scored 8 rows of its own)."""
    return _write_rows(tmp_path_factory.mktemp("data") / "new.csv", _rows(SENTIMENT / "validation.csv", 40))


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


# ---- class 7: what eval scores ------------------------------------------------------------------
def test_plain_eval_keeps_the_runs_limit_and_reproduces_its_metrics(run):
    metrics, rows = evaluate(str(run / "checkpoints" / "best.ckpt"))
    assert metrics == json.loads((run / "metrics.json").read_text())
    assert rows == {"val": (8, 300, "data.max_eval_samples=8"), "test": (8, N_TEST, "data.max_eval_samples=8")}


def test_a_named_eval_file_is_scored_whole_and_the_runs_own_files_keep_their_limit(run, forty_rows):
    ckpt = str(run / "checkpoints" / "best.ckpt")
    metrics, rows = evaluate(ckpt, [f"data.validation_file={forty_rows}"])
    assert rows == {"val": (40, 40, None), "test": (8, N_TEST, "data.max_eval_samples=8")}
    saved = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if k.startswith("test/")} == {k: v for k, v in saved.items()
                                                                         if k.startswith("test/")}
    # The first 8 rows are the run's own validation rows: the 40 give other numbers.
    assert metrics["val/loss"] != saved["val/loss"]
    # data.max_eval_samples on the same command line: every set is cut to it.
    metrics, rows = evaluate(ckpt, [f"data.validation_file={forty_rows}", "data.max_eval_samples=5"])
    assert rows == {"val": (5, 40, "data.max_eval_samples=5"), "test": (5, N_TEST, "data.max_eval_samples=5")}


def test_eval_prints_and_writes_the_rows_it_scored(run, forty_rows, tmp_path, cli):
    done = cli("eval", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", f"data.validation_file={forty_rows}",
               f"output={tmp_path / 'eval.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored val: 40 rows; test: 8 of 300 rows (data.max_eval_samples=8)\n{" in done.stdout
    printed = json.loads(done.stdout[done.stdout.index("{"):])
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written == {**printed, "val/rows": 40, "test/rows": 8, "test/rows_in_file": 300}


def test_predict_reads_every_input_row_whatever_the_runs_eval_limit(run, forty_rows, tmp_path):
    written = predict(str(run / "checkpoints" / "best.ckpt"), str(forty_rows), str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert written == 40 and [line["index"] for line in lines] == list(range(40))


# ---- class 8: an export describes its weights ---------------------------------------------------
def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1]), text


def _reported(meta: dict, step: int | None = None) -> dict[str, float]:
    """model-index's metrics; `step`: each must say it scores the weights of that step."""
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert step is None or all(m["args"]["step"] == step for m in metrics)
    return {m["name"]: m["value"] for m in metrics}


def test_export_of_last_reports_last_metrics_and_step_and_best_reports_metrics_json(run, tmp_path):
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert _step(last) == 12 and _step(best) in (3, 6, 9)  # the run this test needs: best is not last
    saved = json.loads((run / "metrics.json").read_text())

    folder = export(ExportOptions(ckpt=str(last), out=str(tmp_path / "last")))
    meta, text = _card(folder)
    own = evaluate_checkpoint(str(last))  # what last.ckpt's weights score on the run's (cut) eval sets
    assert _reported(meta, step=12) == {k: v for k, v in own.items() if k.startswith("val/")}
    assert _reported(meta)["val/loss"] != saved["val/loss"]
    assert "Metrics of these weights (last.ckpt, step 12, after 2 epochs): the validation of training" in text
    assert "| trained (these weights) | step 12, after 2 epochs |" in text and "best checkpoint" not in text
    # The Hub's own reader takes the metadata (its schema: no result source without a URL).
    assert len(ModelCard.load(folder / "README.md").data.eval_results) == len(_reported(meta))
    # Its pictures: the run's curves, not best.ckpt's confusion matrix.
    assert sorted(p.name for p in (tmp_path / "last" / "plots").iterdir()) == ["curves.png"]

    meta, text = _card(export(ExportOptions(ckpt=str(best), out=str(tmp_path / "best"))))
    step = _step(best)  # a validation 3 or 6 batches into an epoch of 6
    assert _reported(meta, step=step) == saved
    assert f"best.ckpt, step {step}, {(step - 1) % 6 + 1} batches into epoch {(step - 1) // 6 + 1}" in text
    assert "(its metrics.json)" in text
    assert "confusion_matrix.png" in {p.name for p in (tmp_path / "best" / "plots").iterdir()}


class StopAt(Callback):
    """Ends training with an error when step `step` starts (the run stopped mid-way)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("stopped")


def test_a_checkpoint_between_validations_is_evaluated_at_export_or_has_no_metrics(tmp_path):
    from tests.conftest import compose

    # The run's own copy of its validation file, to take away later.
    val = _write_rows(tmp_path / "val.csv", _rows(SENTIMENT / "validation.csv", 8))
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stopped"):
        train(compose(f"output_dir={out}", "logger=none", "trainer.enable_progress_bar=false", *RUN,
                      f"data.validation_file={val}", "checkpoint.every_n_train_steps=2", "trainer.max_epochs=3"),
              callbacks=[StopAt(5)])
    last = out / "checkpoints" / "last.ckpt"
    assert _step(last) == 4  # written by the step interval, after the validation of step 3
    assert "validation" not in torch.load(last, map_location="cpu", weights_only=True)["gpt2tasks"]

    meta, text = _card(export(ExportOptions(ckpt=str(last), out=str(tmp_path / "evaluated"))))
    assert _reported(meta, step=4) == evaluate_checkpoint(str(last))  # these weights, val and test
    assert "step 4, 4 batches into epoch 1" in text and "evaluated when exporting" in text
    assert md_text("trainer.max_epochs=3") in text and "after 3 epochs" not in text

    val.unlink()
    meta, text = _card(export(ExportOptions(ckpt=str(last), out=str(tmp_path / "unscored"))))
    assert "model-index" not in meta and "| metric | value |" not in text
    assert "No metrics: no evaluation of these weights (last.ckpt, step 4, 4 batches into epoch 1)" in text
    assert md_text(f"data.validation_file={val} does not exist") in text  # a path, as literal markdown


# ---- which sets a command line names (no model needed) -------------------------------------------
@pytest.mark.parametrize("overrides,task,expected", [
    ([], None, {}),
    (["data.eval_batch_size=4"], None, {}),
    (["data.validation_file=new.csv"], None, {"sample_sentiment": ["val"]}),
    (["data.validation_file=new.csv", "data.test_file=t.csv"], None, {"sample_sentiment": ["test", "val"]}),
    (["data.validation_file=new.csv", "data.max_eval_samples=5"], None, {}),
])
def test_named_eval_sets_single_task(overrides, task, expected):
    from tests.conftest import compose

    cfg = runfile.apply_overrides(OmegaConf.to_container(compose(), resolve=True), overrides, "eval", "")
    assert runfile.named_eval_sets(cfg, overrides, task) == expected


@pytest.mark.parametrize("overrides,expected", [
    (["data.extra_validation.mismatched.file=m.csv"], ["val_mismatched"]),
    (["data.hub_name=other"], ["test", "val", "val_mismatched"]),  # another dataset: every set
])
def test_named_eval_sets_extra_validation_and_hub(overrides, expected):
    from tests.conftest import compose

    cfg = runfile.apply_overrides(OmegaConf.to_container(compose("task=mnli"), resolve=True), overrides, "eval", "")
    assert runfile.named_eval_sets(cfg, overrides) == {"mnli": expected}


@pytest.mark.parametrize("overrides,task,expected", [
    (["tasks.a.data.validation_file=new.csv"], None, {"a": ["val"]}),
    (["tasks.a.data.test_file=t.csv", "tasks.b.data.validation_file=v.csv", "tasks.b.data.max_eval_samples=3"],
     None, {"a": ["test"]}),
    (["data.validation_file=new.csv"], "b", {"b": ["val"]}),  # task=b: its data.* keys
    (["data.validation_file=new.csv", "data.max_eval_samples=2"], "b", {}),
    # without task=, a data.* key is every task's, as in train
    (["tasks.a.data.validation_file=v.csv", "data.max_eval_samples=3"], None, {}),
    (["tasks.a.data.validation_file=v.csv", "data.eval_batch_size=3"], None, {"a": ["val"]}),
])
def test_named_eval_sets_multi_task(overrides, task, expected):
    from tests.conftest import compose

    saved = OmegaConf.to_container(compose("task=multitask", "multitask.tasks=[a:sample_sentiment,b:sample_ner]"),
                                   resolve=True)
    cfg = runfile.apply_overrides(saved, runfile.task_overrides(overrides, task, ["a", "b"]), "eval", "")
    assert runfile.named_eval_sets(cfg, overrides, task) == expected
    if "data.max_eval_samples=3" in overrides:
        assert cfg.tasks.a.data.max_eval_samples == cfg.tasks.b.data.max_eval_samples == 3


def test_a_data_file_for_every_task_of_a_multi_task_checkpoint_is_refused():
    with pytest.raises(UserError, match=r"data.validation_file=v.csv: this checkpoint has several tasks \(a, b\).*"
                                        r"Fix: pick the task, task=a data.validation_file=v.csv"):
        runfile.task_overrides(["data.validation_file=v.csv"], None, ["a", "b"])
