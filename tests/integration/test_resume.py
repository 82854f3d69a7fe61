"""Resume at any step equals the uninterrupted run; last.ckpt is always the newest state; a failed
or killed run never loses the previous one; every leftover folder's message leads somewhere.

A real process is killed (SIGKILL, no cleanup of any kind) right after a mid-epoch checkpoint."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gpt2tasks import outputs
from gpt2tasks.errors import UserError
from gpt2tasks.train import train
from tests.conftest import REPO

# 96 rows / batch 8 = 12 batches an epoch; validation after batches 5, 10 and 12 of each epoch;
# last.ckpt also every 3 steps. Dropout stays on: the RNG states must be restored exactly.
RUN = ("trainer.max_epochs=2", "data.max_train_samples=96", "data.max_eval_samples=32", "data.batch_size=8",
       "trainer.val_check_interval=5", "checkpoint.every_n_train_steps=3", "trainer.log_every_n_steps=1")


def _step(ckpt) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


def _losses(run, version=None) -> dict[int, float]:
    """step -> logged train/loss, from the CSV log(s) of a run."""
    logged = {}
    for csv in sorted((run / "logs").glob(f"version_{'*' if version is None else version}/metrics.csv")):
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        loss, step = rows[0].index("train/loss"), rows[0].index("step")
        logged.update({int(r[step]): float(r[loss]) for r in rows[1:] if r[loss]})
    return logged


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from tests.conftest import compose

    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    metrics = train(compose(f"output_dir={out}", "logger=csv", "trainer.enable_progress_bar=false", *RUN))
    return out, metrics


def _train_killed_at(step: int, out, cache: str) -> subprocess.CompletedProcess:
    """`train` in a child process that SIGKILLs itself when step `step` starts (the checkpoints of
    the steps before it are on disk; nothing runs after the signal)."""
    script = textwrap.dedent(f"""
        import os, signal
        from lightning.pytorch.callbacks import Callback
        from tests.conftest import compose
        from gpt2tasks.train import train

        class KillAt(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == {step}:
                    os.kill(os.getpid(), signal.SIGKILL)

        train(compose("output_dir={out}", "logger=csv", "trainer.enable_progress_bar=false", *{RUN!r}),
              callbacks=[KillAt()])
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPT2TASKS_CACHE": cache}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("kill_at,saved_at", [
    (8, 6),    # last.ckpt from the step interval (after batch 6 of epoch 1), taken at a train batch's end
    (17, 17),  # last.ckpt from the validation after batch 5 of epoch 2
])
def test_killed_mid_epoch_resume_equals_the_uninterrupted_run(kill_at, saved_at, uninterrupted, cfg_factory, tmp_path):
    full_dir, full = uninterrupted
    out = tmp_path / "killed"
    killed = _train_killed_at(kill_at, out, os.environ["GPT2TASKS_CACHE"])
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (out / "metrics.json").exists()
    assert _step(out / "checkpoints" / "last.ckpt") == saved_at
    spare = tmp_path / "copy.ckpt"
    shutil.copy(out / "checkpoints" / "last.ckpt", spare)

    resumed = train(cfg_factory(*RUN, "logger=csv", "resume=true", output_dir=out))
    assert resumed == full  # exactly
    assert json.loads((out / "metrics.json").read_text()) == json.loads((full_dir / "metrics.json").read_text())
    # every step after the checkpoint trained on the same batch with the same dropout masks
    after = {s: v for s, v in _losses(out, version=1).items()}
    assert min(after) == saved_at and len(after) == 24 - saved_at
    assert after == {s: v for s, v in _losses(full_dir).items() if s >= saved_at}
    assert _step(out / "checkpoints" / "last.ckpt") == 24

    # ckpt_path=<any checkpoint file>: a new run folder continuing from it trains the same steps
    elsewhere = tmp_path / "elsewhere"
    train(cfg_factory(*RUN, "logger=csv", f"ckpt_path={spare}", output_dir=elsewhere))
    assert _losses(elsewhere) == after
    assert _step(elsewhere / "checkpoints" / "last.ckpt") == 24


def test_short_run_validates_at_its_end_and_says_which_checkpoint(cfg_factory, tmp_path, capsys):
    out = tmp_path / "run"
    # 7 steps, less than one epoch (12 batches), no validation before the end of the epoch
    metrics = train(cfg_factory(*RUN[1:4], "trainer.max_steps=7", output_dir=out))
    assert _step(out / "checkpoints" / "best.ckpt") == 7 and _step(out / "checkpoints" / "last.ckpt") == 7
    assert set(metrics) >= {"val/accuracy", "test/accuracy"}
    assert "(from best.ckpt: best val/accuracy, step 7 of 7)" in capsys.readouterr().out

    # resume=true on the finished run: refused, with what to do
    with pytest.raises(UserError, match="finished run.*raise trainer.max_epochs or trainer.max_steps.*overwrite=true"):
        train(cfg_factory(*RUN[1:4], "trainer.max_steps=7", "resume=true", output_dir=out))
    # a raised limit continues it
    train(cfg_factory(*RUN[1:4], "trainer.max_steps=9", "resume=true", output_dir=out))
    assert _step(out / "checkpoints" / "last.ckpt") == 9

    # ckpt_path= a checkpoint of the very run overwrite=true replaces (it is read from where that run
    # was set aside); checkpoint.every_n_minutes (here: every step) also writes last.ckpt
    seen = {}

    class Seen(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if (out / "checkpoints" / "last.ckpt").exists():
                seen[trainer.global_step] = _step(out / "checkpoints" / "last.ckpt")

    train(cfg_factory(*RUN[1:4], "trainer.max_steps=11", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
                      "overwrite=true", "checkpoint.every_n_minutes=1e-9", output_dir=out), callbacks=[Seen()])
    assert seen == {10: 10} and _step(out / "checkpoints" / "last.ckpt") == 11
    assert _step(out / "checkpoints" / "best.ckpt") == 11 and not outputs.previous_dir(out).exists()


def test_last_ckpt_is_written_at_every_validation_not_only_on_improvement(cfg_factory, tmp_path):
    out = tmp_path / "run"
    seen = {}  # step -> the step last.ckpt holds when that step starts

    class Seen(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if (out / "checkpoints" / "last.ckpt").exists():
                seen[trainer.global_step] = _step(out / "checkpoints" / "last.ckpt")

    # lr ~0: the monitored metric never improves after the first validation
    train(cfg_factory(*RUN[:5], "checkpoint.every_n_train_steps=4", "optim.lr=1e-12", output_dir=out), callbacks=[Seen()])
    saves = [4, 5, 8, 10, 12, 16, 17, 20, 22]  # every 4 steps, and each validation (after batches 5, 10, 12)
    assert seen == {g: max(s for s in saves if s <= g) for g in range(4, 24)}
    assert _step(out / "checkpoints" / "best.ckpt") == 5 and _step(out / "checkpoints" / "last.ckpt") == 24


class FailAtTrainStart(Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("simulated failure at fit start")


def test_failed_overwrite_keeps_the_previous_run(cfg_factory, tmp_path):
    out = tmp_path / "run"
    train(cfg_factory(*RUN[1:4], "trainer.max_steps=3", output_dir=out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(cfg_factory(*RUN[1:4], "trainer.max_steps=3", "overwrite=true", "seed=7", output_dir=out),
              callbacks=[FailAtTrainStart()])
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not outputs.previous_dir(out).exists()
    # a fresh run that fails before its first checkpoint leaves nothing behind
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(cfg_factory(*RUN[1:4], output_dir=tmp_path / "fresh"), callbacks=[FailAtTrainStart()])
    assert not (tmp_path / "fresh").exists()
    # a successful overwrite replaces it, and drops the kept copy once it has a checkpoint
    train(cfg_factory(*RUN[1:4], "trainer.max_steps=3", "overwrite=true", "seed=7", output_dir=out))
    assert "seed: 7" in (out / "config.yaml").read_text() and not outputs.previous_dir(out).exists()


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_failed_overwrite_from_the_cli_keeps_the_previous_run(tmp_path):
    """The issue's case: a setting that fails when fit starts (val_check_interval above the epoch)."""
    from tests.conftest import run_cli

    out = tmp_path / "run"
    common = ["trainer.max_steps=2", "data.max_train_samples=32", "data.max_eval_samples=16", "logger=none",
              "trainer.enable_progress_bar=false", f"output_dir={out}"]
    assert run_cli("train", *common).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    failed = run_cli("train", *common, "overwrite=true", "trainer.val_check_interval=1000")
    assert failed.returncode != 0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_leftover_of_a_run_killed_before_its_first_checkpoint_leads_to_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 42\n")  # all a run killed before its first checkpoint leaves
    with pytest.raises(UserError) as plain:
        outputs.check_output_dir(out, overwrite=False, resume=False)
    assert "overwrite=true" in str(plain.value) and "resume=true" not in str(plain.value)
    with pytest.raises(UserError, match="nothing to resume.*overwrite=true instead of resume=true"):
        outputs.check_output_dir(out, overwrite=False, resume=True)
    assert outputs.check_output_dir(out, overwrite=True, resume=False) is None
    # overwrite=true killed before its first checkpoint: the replaced run waits in <name>.previous
    kept = outputs.set_aside(out)
    assert kept == outputs.previous_dir(out) and (kept / "config.yaml").exists() and not any(out.iterdir())
    with pytest.raises(UserError, match=r"run\.previous holds the run that overwrite=true replaced.*rename"):
        outputs.check_output_dir(out, overwrite=True, resume=False)
    outputs.put_back(out, kept)
    assert (out / "config.yaml").read_text() == "seed: 42\n" and not kept.exists()


def test_ckpt_path_errors(cfg_factory, tmp_path):
    with pytest.raises(UserError, match="ckpt_path=.*missing.ckpt does not exist"):
        train(cfg_factory(*RUN[1:4], f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read as a training checkpoint"):
        train(cfg_factory(*RUN[1:4], f"ckpt_path={junk}"))
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(UserError, match="not a gpt2tasks training checkpoint"):
        train(cfg_factory(*RUN[1:4], f"ckpt_path={weights}"))
    run = tmp_path / "run"
    train(cfg_factory(*RUN[1:4], "trainer.max_steps=2", output_dir=run))
    # what the checkpoint was trained with, as the overrides to add (not tensor counts)
    with pytest.raises(UserError, match=r"this checkpoint was trained with peft=none \(this run: peft=lora\), .*"
                                        r"Fix: add peft=none \("):
        train(cfg_factory(*RUN[1:4], "peft=lora", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                          output_dir=tmp_path / "lora"))
    assert not (tmp_path / "lora").exists()
    with pytest.raises(UserError, match=r"trained with task=sample_sentiment \(a seq_cls task\), model=tiny \(2 layers, "
                                        r"width 128, vocabulary 946\) \(this run: task=sample_ner \(a token_cls task\), "
                                        r"model.arch.n_layer=3 model.arch.n_head=4 model.arch.n_embd=128 \(3 layers, .*"
                                        r"Fix: add task=sample_sentiment model=tiny \("):
        train(cfg_factory("task=sample_ner", *RUN[1:4], "model.arch.n_layer=3",
                          f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", output_dir=tmp_path / "ner"))
    lora = tmp_path / "lora_run"
    train(cfg_factory(*RUN[1:4], "trainer.max_steps=1", "peft=lora", output_dir=lora))
    with pytest.raises(UserError, match=r"this checkpoint was trained with peft=lora \(this run: peft=none\), .*"
                                        r"Fix: add peft=lora \("):
        train(cfg_factory(*RUN[1:4], f"ckpt_path={lora / 'checkpoints' / 'last.ckpt'}", output_dir=tmp_path / "full"))
    with pytest.raises(UserError, match=r"trained with peft.r=8 \(this run: peft.r=4\).*Fix: add peft.r=8 \("):
        train(cfg_factory(*RUN[1:4], "peft=lora", "peft.r=4", f"ckpt_path={lora / 'checkpoints' / 'last.ckpt'}",
                          output_dir=tmp_path / "r4"))
