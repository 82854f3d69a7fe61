"""What the commands print: the headline metrics first, a bounded progress bar, one log format,
and Lightning's warnings handled where they come from (absent where they said nothing, shown
where they do)."""

import inspect
import json
import logging
import os
import shutil
import types
import warnings

import pytest
from lightning.pytorch import Callback

from gpt2tasks.tasks.base import EvalSpec, TaskModule
from gpt2tasks.train import train

SMALL = ("data.max_train_samples=64", "data.max_eval_samples=32", "trainer.max_epochs=1")
SRUN_HINT = "The `srun` command is available on your system but is not used"


def messages(recorded) -> list[str]:
    return [str(w.message) for w in recorded]


# ---- the headline: monitored metric, the kind's main metrics, task.metrics; details in the files ---
def headline(kind: type[TaskModule], metrics: dict[str, float], monitor: str, task_metrics: list[str],
             eval_sets: tuple[str, ...] = ("val",)) -> list[str]:
    module = types.SimpleNamespace(headline_metrics=kind.headline_metrics,
                                   evaluation=EvalSpec(metrics=task_metrics, eval_sets=list(eval_sets)))
    return list(TaskModule.headline(module, metrics, monitor))


def test_each_kind_leads_with_its_headline_metrics():
    from gpt2tasks.tasks.lm import LanguageModelingModule
    from gpt2tasks.tasks.qa import QAModule
    from gpt2tasks.tasks.seq_cls import SeqClsModule
    from gpt2tasks.tasks.token_cls import TokenClsModule

    ner = {f"{s}/{m}": 0.5 for s in ("test", "val") for m in (
        "LOC_f1", "LOC_number", "LOC_precision", "LOC_recall", "accuracy", "f1", "loss", "precision", "recall")}
    assert headline(TokenClsModule, ner, "val/f1", ["f1", "precision", "recall", "accuracy"]) == [
        "val/f1", "val/precision", "val/recall", "val/accuracy", "test/f1", "test/precision", "test/recall",
        "test/accuracy"]  # per-type metrics and losses: metrics.json only
    qa = {f"val/{m}": 1.0 for m in ("HasAns_f1", "exact_match", "f1", "loss", "NoAns_f1")}
    assert headline(QAModule, qa, "val/f1", ["exact_match", "f1"]) == ["val/f1", "val/exact_match"]
    lm = {"val/loss": 3.0, "val/perplexity": 20.1, "test/loss": 3.1, "test/perplexity": 22.2}
    assert headline(LanguageModelingModule, lm, "val/loss", ["perplexity"]) == [
        "val/loss", "val/perplexity", "test/loss", "test/perplexity"]  # a monitored loss first
    # classification: the monitored metric, then task.metrics; an extra validation set before test
    cls = {f"{s}/{m}": 0.9 for s in ("test", "val", "val_ood") for m in ("accuracy", "f1", "loss", "mcc")}
    assert headline(SeqClsModule, cls, "val/f1", ["accuracy", "f1", "mcc"], ("val", "val_ood")) == [
        "val/f1", "val/accuracy", "val/mcc", "val_ood/f1", "val_ood/accuracy", "val_ood/mcc",
        "test/f1", "test/accuracy", "test/mcc"]


def test_a_multitask_headline_is_the_monitor_then_each_split():
    from gpt2tasks.tasks.multitask import MultiTaskModule

    metrics = {k: 0.5 for k in ("a/test/accuracy", "a/test/loss", "a/val/accuracy", "a/val/loss", "b/test/f1",
                                "b/val/LOC_f1", "b/val/f1", "test/mean", "val/mean")}
    module = types.SimpleNamespace(main_metrics={"a": "accuracy", "b": "f1"}, several=True)
    assert list(MultiTaskModule.headline(module, metrics, "val/mean")) == [
        "val/mean", "a/val/accuracy", "b/val/f1", "test/mean", "a/test/accuracy", "b/test/f1"]


# ---- a NER run: the bar holds one eval metric; the final line its headline -------------------------
def test_ner_run_shows_its_headline_and_keeps_the_bar_to_one_eval_metric(cfg_factory, tmp_path, capsys):
    seen = {}

    class Bar(Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.setdefault("bar", set()).update(trainer.progress_bar_metrics)

    metrics = train(cfg_factory("task=sample_ner", *SMALL), callbacks=[Bar()])
    # the bar's metrics: the loss, the speed and task.monitor -- not NER's 20-odd per-type metrics
    assert seen["bar"] == {"train/loss", "samples/s", "tokens/s", "val/f1"}
    done = capsys.readouterr().out.split("\nDone. ")[1].splitlines()[0]
    names = ["f1", "precision", "recall", "accuracy"]
    assert done == "  ".join(f"{s}/{m}={metrics[f'{s}/{m}']:.4f}" for s in ("val", "test") for m in names)
    assert "val/LOC_f1" in json.loads((tmp_path / "run" / "metrics.json").read_text())  # the details: in the file


# ---- one log format ---------------------------------------------------------------------------------
def test_one_console_format_for_logs_and_warnings(capsys):
    from gpt2tasks.cli import done_lines, format_metrics, setup_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            setup_logging()
            logging.getLogger("gpt2tasks").info("an info line")
            logging.getLogger("lightning.pytorch").info("Lightning's line")
            logging.getLogger("gpt2tasks.export").warning("a problem")
            line = inspect.currentframe().f_lineno + 1
            warnings.warn("a genuine warning still shows", UserWarning)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capsys.readouterr()
    assert out == "an info line\nLightning's line\n"
    assert err == ("warning: a problem\n"
                   f"warning: a genuine warning still shows (UserWarning, {__file__}:{line})\n")
    assert format_metrics({"val/f1": 0.87654, "test/f1": 1}) == "val/f1=0.8765  test/f1=1.0000"
    assert done_lines("x=1.0000", [("run", "/r"), ("re-evaluate", "cmd"), ("skipped", None)]) == (
        "\nDone. x=1.0000\n  run:        /r\n  re-evaluate: cmd")


# ---- Lightning's warnings: fixed where they come from -------------------------------------------------
@pytest.fixture
def srun_installed(tmp_path, monkeypatch):
    """An `srun` on PATH that did not start this process (a SLURM login node, say)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    (folder / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert shutil.which("srun") == str(folder / "srun")


def test_one_node_without_srun_gets_no_srun_hint_and_several_nodes_still_do(srun_installed, cfg_factory, recwarn):
    from gpt2tasks.build import build_trainer

    train(cfg_factory(*SMALL))  # Trainer, fit, validate, test: each asked Lightning's SLURM detection before
    assert not [m for m in messages(recwarn) if SRUN_HINT in m]
    # several nodes not started by srun: the likely mistake the hint is for
    build_trainer(cfg_factory("trainer.num_nodes=2", "trainer.accelerator=cpu"))
    assert [m for m in messages(recwarn) if SRUN_HINT in m]


def test_under_srun_lightning_detects_slurm(monkeypatch):
    from gpt2tasks.distributed import cluster_environment

    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert cluster_environment(1) is None  # Lightning's SLURMEnvironment, its own detection
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # an salloc shell: not started by srun
    assert type(cluster_environment(1)).__name__ == "LightningEnvironment"


@pytest.fixture(scope="module")
def stopped_early_run(tmp_path_factory):
    """A two-epoch run with early stopping and a CSV logger, on 2 training batches an epoch."""
    from tests.conftest import compose

    out = tmp_path_factory.mktemp("console") / "run"
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        train(compose(f"output_dir={out}", "logger=csv", "trainer.enable_progress_bar=false",
                      "early_stopping.patience=1", "trainer.max_epochs=2", "data.max_train_samples=64",
                      "data.max_eval_samples=32"))
    return out, messages(recorded)


def test_log_every_n_steps_is_clamped_to_an_epoch_and_said_once(stopped_early_run, cfg_factory, caplog):
    out, recorded = stopped_early_run
    assert not [m for m in recorded if "smaller than the logging interval" in m]
    logged = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = logged[0].split(",")
    steps = [row.split(",")[header.index("step")] for row in logged[1:] if row.split(",")[header.index("train/loss")]]
    assert steps == ["1", "3"]  # every 2 steps (the epoch's 2 batches), not never (10 > 2)
    seen = {}

    class Interval(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["every"] = trainer.log_every_n_steps

    with caplog.at_level(logging.INFO, logger="gpt2tasks"):
        train(cfg_factory(*SMALL), callbacks=[Interval()])
    said = [r.getMessage() for r in caplog.records if "log_every_n_steps" in r.getMessage()]
    assert said == ["trainer.log_every_n_steps=10 is more than the 2 training batches of an epoch: logging every "
                    "2 steps."] and seen["every"] == 2


def test_resume_without_early_stopping_drops_its_state_without_lightnings_hint(stopped_early_run, tmp_path, caplog,
                                                                               recwarn):
    from tests.conftest import compose

    run = tmp_path / "run"
    shutil.copytree(stopped_early_run[0], run)
    with caplog.at_level(logging.INFO, logger="gpt2tasks"):
        train(compose(f"output_dir={run}", "resume=true", "logger=csv", "trainer.enable_progress_bar=false",
                      "early_stopping.patience=null", "trainer.max_epochs=3", "data.max_train_samples=64",
                      "data.max_eval_samples=32"))
    assert not [m for m in messages(recwarn) if "callbacks used to create the checkpoint" in m]
    said = [r.getMessage() for r in caplog.records if "not restored from the checkpoint" in r.getMessage()]
    assert said == ["not restored from the checkpoint: the state of EarlyStopping{'monitor': 'val/accuracy', "
                    "'mode': 'max'}, which this run does not use (e.g. early stopping with "
                    "early_stopping.patience=null)"]


def test_predict_passes_no_drop_last_warning_and_every_row(stopped_early_run, tmp_path, recwarn):
    from gpt2tasks.predict import predict
    from tests.conftest import REPO

    rows = (REPO / "data" / "sample_sentiment" / "test.csv").read_text().splitlines()[:41]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    written = predict(str(stopped_early_run[0] / "checkpoints" / "best.ckpt"), str(tmp_path / "in.csv"),
                      str(tmp_path / "out.jsonl"), batch_size=16)
    assert not [m for m in messages(recwarn) if "drop_last" in m]
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == 40 and [line["index"] for line in lines] == list(range(40))
