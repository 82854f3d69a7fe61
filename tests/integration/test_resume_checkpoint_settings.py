"""checkpoint.save_top_k / checkpoint.save_last do what they say, at no hidden cost: no checkpoint
when none is asked for, one validation whatever is saved, one write of a state best.ckpt and
last.ckpt share, and a final line that says which weights metrics.json scores."""

import json
import os
import stat

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gpt2tasks import resume
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.train import train

ONE_EPOCH = ("trainer.max_epochs=1", "data.max_train_samples=64", "data.max_eval_samples=32")  # 2 steps


class CountStages(Callback):
    """Validations (in fit and after it) and test runs."""

    def __init__(self):
        self.validations = self.tests = 0

    def on_validation_start(self, trainer, pl_module):
        self.validations += 1

    def on_test_start(self, trainer, pl_module):
        self.tests += 1


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_no_checkpoints_means_none_written_one_validation_and_a_true_final_line(cfg_factory, tmp_path, capsys):
    out, counted = tmp_path / "none", CountStages()
    metrics = train(cfg_factory(*ONE_EPOCH, "checkpoint.save_top_k=0", "checkpoint.save_last=false", output_dir=out),
                    callbacks=[counted])
    assert not (out / "checkpoints").exists()
    # the validation after the last step scored the final weights: reused, not run again
    assert (counted.validations, counted.tests) == (1, 1)
    printed = capsys.readouterr().out
    assert "(from the final weights, step 2: validated at the end; checkpoint.save_top_k=0 keeps no best)" in printed
    assert "checkpoint: none saved (checkpoint.save_last=false; checkpoint.save_top_k=0)" in printed
    assert "re-evaluate" not in printed and "last.ckpt" not in printed
    # the same numbers as the default run's best checkpoint (the same final step), reloaded
    default = tmp_path / "default"
    assert train(cfg_factory(*ONE_EPOCH, output_dir=default)) == metrics
    assert evaluate_checkpoint(str(default / "checkpoints" / "best.ckpt")) == metrics


def test_save_top_k_0_keeps_last_ckpt_and_says_it_holds_the_scored_weights(cfg_factory, tmp_path, capsys):
    out, counted = tmp_path / "run", CountStages()
    metrics = train(cfg_factory(*ONE_EPOCH, "checkpoint.save_top_k=0", output_dir=out), callbacks=[counted])
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"]
    assert (counted.validations, counted.tests) == (1, 1)
    last = out / "checkpoints" / "last.ckpt"
    assert "(from last.ckpt: the final weights, step 2: validated at the end; " in capsys.readouterr().out
    assert evaluate_checkpoint(str(last)) == metrics


def test_best_and_last_of_the_same_step_are_one_file_readable_like_any_other(cfg_factory, tmp_path, umask_022):
    out = tmp_path / "run"
    train(cfg_factory(*ONE_EPOCH, output_dir=out))
    best, last = out / "checkpoints" / "best.ckpt", out / "checkpoints" / "last.ckpt"
    # one inode, two names: the bytes are on disk once
    assert best.stat().st_ino == last.stat().st_ino and best.stat().st_nlink == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # nothing partial
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and resume.finished_limits(ckpt) == {"finished": True, "max_steps": -1,
                                                                        "max_epochs": 1}
    # files of the run get a normal file's mode (0666 less the umask), not mkstemp's private 0600
    for path in (out / "config.yaml", out / "metrics.json", best, out / "plots" / "curves.png"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert json.loads((out / "metrics.json").read_text())
    # a later save of last.ckpt (a new file renamed onto the name) leaves best.ckpt as it was
    before = best.read_bytes()
    train(cfg_factory(*ONE_EPOCH[1:], "trainer.max_epochs=2", "resume=true", output_dir=out))
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
    if best.stat().st_ino == last.stat().st_ino:  # the new validation improved: best is the new state too
        assert best.stat().st_nlink == 2
    else:  # it did not: best.ckpt is the step 2 file, untouched
        assert best.read_bytes() == before and best.stat().st_nlink == 1


def test_early_stopping_after_a_best_of_the_same_step_still_marks_last_ckpt_finished(cfg_factory, tmp_path):
    # Epoch-end validation: EarlyStopping decides at the epoch's end, after the validation wrote
    # best.ckpt (val/loss improved, though by less than min_delta) unmarked; last.ckpt, written when
    # training ends, must say the run finished, so it is not that file.
    out = tmp_path / "run"
    train(cfg_factory(*ONE_EPOCH[1:], "trainer.max_epochs=5", "task.monitor=val/loss", "task.mode=min",
                      "optim.lr=1e-3", "early_stopping.patience=0", "early_stopping.min_delta=1.0", output_dir=out))
    best, last = out / "checkpoints" / "best.ckpt", out / "checkpoints" / "last.ckpt"
    saved = {name: torch.load(path, map_location="cpu", weights_only=True) for name, path in (("best", best), ("last", last))}
    assert saved["best"]["global_step"] == saved["last"]["global_step"] == 4  # stopped after epoch 2, its best
    assert resume.finished_limits(saved["last"]) and not resume.finished_limits(saved["best"])
    assert best.stat().st_ino != last.stat().st_ino
