"""What a run leaves to look at: pictures, the learning rate and hyperparameters in the logs, early
stopping, and a fast_dev_run that writes nothing."""

import json

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from gpt2tasks.export import ExportOptions, export
from gpt2tasks import plots
from gpt2tasks.plots import class_report, confusion_counts, entity_report, smooth
from gpt2tasks.train import train
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ("trainer.max_epochs=2", "data.max_train_samples=128", "data.max_eval_samples=64", "data.batch_size=16")


def assert_png(path, min_side=200):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    assert min(height, width) >= min_side


# ---- the numbers behind the pictures, by hand ------------------------------------------------
def test_confusion_counts_and_class_report_by_hand():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 0, 1, 2, 2, 2, 0, 2]
    counts = confusion_counts(np.array(true), np.array(pred), 3)
    assert counts.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    report = class_report(counts, ["a", "b", "c"])
    # a: predicted 3 times, 2 right; 3 true. b: predicted 2, 1 right; 2 true. c: predicted 4, 3 right; 4 true.
    assert report["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert report["b"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert report["c"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
    # a class never predicted nor present: zeros, not NaN
    assert class_report(confusion_counts(np.array([0]), np.array([0]), 2), ["x", "y"])["y"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_entity_report_reads_the_per_type_metrics():
    metrics = {"val/f1": 0.5, "val/PER_precision": 1.0, "val/PER_recall": 0.5, "val/PER_f1": 2 / 3,
               "val/PER_number": 4.0, "test/LOC_number": 1.0}
    assert entity_report(metrics) == {"PER": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4}}


@pytest.mark.parametrize("rare, normalized", [(20, False), (19, True), (0, False)])
def test_the_confusion_picture_shows_shares_of_each_true_class_when_classes_are_imbalanced(rare, normalized):
    # class "a" has 100 examples; "c" has `rare` (none: it does not count as the smallest)
    true = np.array([0] * 100 + [1] * 50 + [2] * rare)
    pred = np.array([0] * 90 + [1] * 10 + [1] * 40 + [0] * 10 + [2] * (rare // 2) + [0] * (rare - rare // 2))
    picture = plots.confusion_picture(plots.confusion(true, pred, ["a", "b", "c"]))
    assert picture["counts"] == [[90, 10, 0], [10, 40, 0], [rare - rare // 2, 0, rare // 2]]
    assert ("normalized_rows" in picture) == normalized  # 100:20 is 5:1, not more
    if normalized:
        assert picture["support"] == [100, 50, 19]
        assert np.array(picture["normalized_rows"]) == pytest.approx(np.array([[0.9, 0.1, 0], [0.2, 0.8, 0],
                                                                               [10 / 19, 0, 9 / 19]]))
        assert picture["note"].startswith("rows normalised: the true classes have 19 to 100 examples")


def test_multitask_history_keeps_each_task_own_loss_and_the_unscaled_run_loss():
    from types import SimpleNamespace

    from gpt2tasks.callbacks import MetricHistory

    history = MetricHistory()
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e-3}])
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=2, optimizers=[optimizer])
    # Lightning hands the loss over divided by accumulate_grad_batches; the task's own loss as returned
    for step, task, own, weight in ((0, "a", 0.8, 1.0), (0, "b", 1.5, 2.0), (1, "a", 0.6, 1.0)):
        trainer.global_step = step
        history.on_train_batch_end(trainer, None, {"loss": torch.tensor(weight * own / 2), "task": task,
                                                   "task_loss": torch.tensor(own)}, {}, 0)
    assert history.train == [] and history.task_train == []  # read at the epoch's end, not every step
    history.on_train_epoch_end(trainer, None)
    assert [step for step, _, _ in history.train] == [0, 0, 1] and [lr for _, _, lr in history.train] == [1e-3] * 3
    assert [loss for _, loss, _ in history.train] == pytest.approx([0.8, 3.0, 0.6])  # weighted, whole
    assert [(step, task) for step, task, _ in history.task_train] == [(0, "a"), (0, "b"), (1, "a")]
    assert [loss for _, _, loss in history.task_train] == pytest.approx([0.8, 1.5, 0.6])  # each task's own
    restored = MetricHistory()
    restored.load_state_dict(history.state_dict())  # a resumed run's pictures cover the whole run
    assert restored.task_train == history.task_train


def test_smoothing_is_debiased():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0, 3.0], weight=0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])


# ---- a classification run: pictures, LR column, hyperparameters --------------------------------
def test_classification_run_writes_pictures_lr_and_hyperparameters(cfg_factory, tmp_path):
    out = tmp_path / "run"
    metrics = train(cfg_factory("logger=csv", *SMALL, "optim.lr=1e-3", "optim.warmup_ratio=0.25", output_dir=out))
    plots = out / "plots"
    assert {p.name for p in plots.iterdir()} == {"curves.png", "confusion_matrix.png", "class_report.png", "plots.json"}
    for png in plots.glob("*.png"):
        assert_png(png)
    data = json.loads((plots / "plots.json").read_text())
    counts = np.array(data["confusion_matrix"]["counts"])
    assert data["confusion_matrix"]["labels"] == ["negative", "positive"]
    # the best checkpoint's validation: 64 examples, and its diagonal is exactly val/accuracy
    assert counts.sum() == 64
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["val/accuracy"])
    assert data["class_report"]["positive"]["support"] == int(counts[1].sum())
    # every step's loss and LR; the validation loss and the monitored metric at each of the 2 validations
    curves = data["curves"]
    assert curves["step"] == list(range(1, 17))  # 128 / 16 x 2 epochs
    assert curves["monitor"] == "val/accuracy" and curves["monitor_step"] == [8, 16]
    assert curves["val_loss_step"] == [8, 16] and len(curves["val_loss"]) == 2
    assert max(curves["monitor_value"]) == pytest.approx(metrics["val/accuracy"])
    # the kept checkpoint, marked on the curves: best.ckpt's own step, and its validation's numbers
    best = curves["best"]
    saved = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert best == {"checkpoint": "best.ckpt", "step": saved["global_step"], "monitor": "val/accuracy",
                    "value": pytest.approx(metrics["val/accuracy"])}
    assert curves["monitor_value"][curves["monitor_step"].index(best["step"])] == pytest.approx(best["value"])
    assert curves["val_loss"][curves["val_loss_step"].index(best["step"])] == pytest.approx(metrics["val/loss"])
    # linear schedule, 4 warmup steps: after step s the lr is 1e-3 x s/4, then falls to 0 at step 16
    assert curves["lr"][:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and curves["lr"][-1] == 0.0

    log_dir = out / "logs" / "version_0"
    rows = [line.split(",") for line in (log_dir / "metrics.csv").read_text().splitlines()]
    assert "train/lr" in rows[0] and not any(c.startswith("lr-") for c in rows[0])
    lr_col, step_col = rows[0].index("train/lr"), rows[0].index("step")
    logged = {int(r[step_col]): float(r[lr_col]) for r in rows[1:] if r[lr_col]}
    assert logged  # every log_every_n_steps; the same values as the pictures' (lr after `step` updates)
    assert all(lr == pytest.approx(curves["lr"][curves["step"].index(step)]) for step, lr in logged.items())
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["optim"]["lr"] == 1e-3 and hparams["task"]["monitor"] == "val/accuracy"

    # the export's model card: named from model + task (not the folder), showing the same pictures
    exported = tmp_path / "some-folder"
    export(ExportOptions(ckpt=str(out / "checkpoints" / "best.ckpt"), out=str(exported)))
    card = (exported / "README.md").read_text()
    assert "\n# tiny-gpt2-sample\\_sentiment\n" in card and "some-folder" not in card  # literal markdown
    assert yaml.safe_load(card.split("---\n")[1])["model-index"][0]["name"] == "tiny-gpt2-sample_sentiment"
    for name in ("curves", "confusion_matrix", "class_report"):
        assert f"![{name}](plots/{name}.png)" in card
        assert (exported / "plots" / f"{name}.png").read_bytes() == (plots / f"{name}.png").read_bytes()


def test_tensorboard_gets_lr_scalars_hyperparameters_and_pictures(cfg_factory, tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'gpt2tasks[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(cfg_factory("logger=tensorboard", *SMALL, output_dir=out))
    log_dir = out / "tensorboard" / "version_0"
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["seed"] == 42 and hparams["data"]["batch_size"] == 16
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    assert "train/lr" in events.Tags()["scalars"]
    assert set(events.Tags()["images"]) == {"plots/curves", "plots/confusion_matrix", "plots/class_report"}


def test_ner_and_lm_runs_draw_their_kind_pictures(cfg_factory, tmp_path):
    ner = tmp_path / "ner"
    metrics = train(cfg_factory("task=sample_ner", "trainer.max_epochs=1", "data.max_train_samples=64",
                                "data.max_eval_samples=32", "data.batch_size=16", output_dir=ner))
    data = json.loads((ner / "plots" / "plots.json").read_text())
    assert {"curves", "confusion_matrix", "entity_report"} <= set(data)
    counts = np.array(data["confusion_matrix"]["counts"])
    # word tags: the diagonal share is the metrics' word accuracy
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["val/accuracy"])
    # O is most of the words: the picture shows each true tag's row as shares (1 where it has words)
    support = counts.sum(1)
    assert support.max() > plots.IMBALANCED * support[support > 0].min()
    assert data["confusion_matrix"]["support"] == support.tolist()
    rows = np.array(data["confusion_matrix"]["normalized_rows"])
    assert rows.sum(1) == pytest.approx(np.where(support > 0, 1.0, 0.0))
    assert rows[support > 0] == pytest.approx(counts[support > 0] / support[support > 0, None])
    assert "rows normalised" in data["confusion_matrix"]["note"]
    assert data["entity_report"]["PER"]["support"] == int(metrics["val/PER_number"])
    for png in ("entity_report.png", "confusion_matrix.png"):
        assert_png(ner / "plots" / png)

    lm = tmp_path / "lm"
    metrics = train(cfg_factory("task=sample_lm", "trainer.max_epochs=1", "data.max_train_samples=64",
                                "data.max_eval_samples=16", "task.sample_prompts=[]", output_dir=lm))
    data = json.loads((lm / "plots" / "plots.json").read_text())
    assert set(data) == {"curves", "perplexity"}
    assert data["perplexity"]["val_perplexity"][-1] == pytest.approx(metrics["val/perplexity"])
    assert_png(lm / "plots" / "perplexity.png")


# ---- early stopping, fast_dev_run --------------------------------------------------------------
class Epochs(Callback):
    def on_fit_end(self, trainer, pl_module):
        self.epochs, self.stopped = trainer.current_epoch, trainer.should_stop


def test_early_stopping_stops_when_the_monitor_does_not_improve(cfg_factory, tmp_path):
    # lr=1e-12: val/accuracy never changes, so with patience 1 the second validation ends the run.
    seen = Epochs()
    train(cfg_factory("early_stopping.patience=1", "optim.lr=1e-12", "trainer.max_epochs=10", "data.max_train_samples=32",
                      "data.max_eval_samples=16", "data.batch_size=16"), callbacks=[seen])
    assert seen.stopped and seen.epochs == 2


def test_early_stopping_patience_must_be_a_count(cfg_factory):
    from gpt2tasks.errors import UserError

    with pytest.raises(UserError, match=r"early_stopping.patience='3x'.*Fix"):
        train(cfg_factory("early_stopping.patience=3x"))


def test_fast_dev_run_writes_nothing_and_says_so(tmp_path, cli, monkeypatch):
    out = tmp_path / "debug"
    monkeypatch.chdir(tmp_path)
    result = cli("train", f"output_dir={out}", "+trainer.fast_dev_run=true", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr
    assert "fast_dev_run: a debug run of 1 batch(es) per stage; nothing was written" in result.stdout
    assert "val/accuracy=" in result.stdout
    assert not out.exists()  # no config.yaml, checkpoints, metrics.json, logs or plots


# ---- what a run prints ----------------------------------------------------------------------------
def test_without_a_terminal_progress_is_plain_lines_at_log_every_n_steps(cfg_factory, tmp_path, capsys):
    from gpt2tasks.callbacks import MetricHistory

    histories = []

    class Keep(Callback):
        def on_fit_end(self, trainer, pl_module):
            histories.extend(c for c in trainer.callbacks if isinstance(c, MetricHistory))

    # captured stdout is not a terminal (as under nohup, SLURM or CI); 128 rows / 32 = 4 steps an epoch
    train(cfg_factory("trainer.enable_progress_bar=true", "trainer.log_every_n_steps=3", "trainer.max_epochs=2",
                      "data.max_train_samples=128", "data.max_eval_samples=32", "optim.lr=1e-3"),
          callbacks=[Keep()])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("step ", "validation at "))]
    (history,) = histories
    loss = {step: value for step, value, _ in history.train}
    lr = {step: rate for step, _, rate in history.train}
    accuracy = {step: metrics["val/accuracy"] for step, metrics in history.evals}
    assert sorted(accuracy) == [4, 8]
    best = max(accuracy.values())
    best_step = min(step for step, value in accuracy.items() if value == best)
    assert [line.split("  ETA ")[0] for line in lines] == [
        f"step 3/8  epoch 0.75/2  train/loss {loss[3]:.4f}  lr {lr[3]:.2e}  samples/s " + lines[0].split("samples/s ")[1].split()[0],
        f"validation at step 4 (epoch 1): val/accuracy {accuracy[4]:.4f} (best {accuracy[4]:.4f} at step 4)",
        f"step 6/8  epoch 1.50/2  train/loss {loss[6]:.4f}  lr {lr[6]:.2e}  samples/s " + lines[2].split("samples/s ")[1].split()[0],
        f"step 8/8  epoch 2.00/2  train/loss {loss[8]:.4f}  lr {lr[8]:.2e}  samples/s " + lines[3].split("samples/s ")[1].split()[0],
        f"validation at step 8 (epoch 2): val/accuracy {accuracy[8]:.4f} (best {best:.4f} at step {best_step})",
    ]  # every 3 steps and the last
    for line in (lines[0], lines[2], lines[3]):
        assert float(line.split("samples/s ")[1].split()[0]) > 0 and "  ETA 0:" in line
    assert lines[3].endswith("  ETA 0:00:00")
    assert "━" not in capsys.readouterr().out


def test_a_terminal_gets_the_progress_bar_and_other_output_the_lines(monkeypatch):
    import sys

    from gpt2tasks.build import progress_bar
    from gpt2tasks.callbacks import ProgressLines, RichBar

    kwargs = {"accelerator": "cpu", "log_every_n_steps": 5}
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    lines = progress_bar(kwargs, "val/f1", "max")
    assert isinstance(lines, ProgressLines) and (lines.every_n_steps, lines.monitor, lines.mode) == (5, "val/f1", "max")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar(kwargs, "val/f1", "max"), RichBar)
    assert progress_bar({**kwargs, "enable_progress_bar": False}, "val/f1", "max") is None


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_start_up_output_says_what_helps_and_hides_the_rest(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", f"output_dir={out}", "peft=lora", "logger=csv", "trainer.max_steps=2",
                     "data.max_train_samples=32", "data.max_eval_samples=16", "data.batch_size=16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    # captured output is not a terminal: plain progress lines (a terminal gets the bar)
    assert "step 2/2  epoch " in text and "validation at step 2 (epoch 1): val/accuracy " in text
    for hidden in ("is_gradient_checkpointing", "Total FLOPs", "v_num", "INFO: ", "TPU available",
                   "Restoring states", "litlogger"):
        assert hidden not in text, hidden
    assert text.count("GPU available") == 1  # Lightning's lines once, not twice
    assert "tokenizer: " in text and "data/tokenizer (946 tokens)" in text
    assert "examples: train 32, val 16, test 16" in text
    eval_result = run_cli("eval", f"ckpt={out / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)
    assert eval_result.returncode == 0 and "is_gradient_checkpointing" not in eval_result.stderr


def test_qa_split_sizes_count_examples_and_windows(cfg_factory, tiny_tokenizer):
    from gpt2tasks.build import build_for_training

    datamodule, _, _ = build_for_training(cfg_factory("task=sample_qa", "data.max_train_samples=64",
                                                      "data.max_eval_samples=32"))
    line = datamodule.describe()
    windows = {k: len(v) for k, v in datamodule.tasks["sample_qa"].datasets.items()}
    assert line == (f"question_answering; examples: train 64, val 32, test 32; as windows: train {windows['train']}, "
                    f"val {windows['val']}, test {windows['test']}")
    assert windows["train"] > 64  # long contexts: more windows than questions


def test_wandb_offline_gets_the_pictures(cfg_factory, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="optional extra: pip install 'gpt2tasks[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    train(cfg_factory("logger=wandb", "trainer.max_epochs=1", "data.max_train_samples=32", "data.max_eval_samples=16",
                      output_dir=out))
    images = {p.name.split("_")[0] for p in out.glob("wandb/offline-run-*/files/media/images/plots/*.png")}
    assert images == {"curves", "confusion", "class"}
