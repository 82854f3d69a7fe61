"""SIGTERM / SIGINT end a command the way schedulers expect (gpt2tasks/signals.py).

`train`: the step in progress finishes, checkpoints/last.ckpt is written where the resume machinery
writes it, the message says how to continue, and the exit status is 143 / 130; resuming then ends
with the uninterrupted run's metrics.json, bit for bit. `predict`, `eval`, `export`: stop at once,
no output file and no staging folder left, 143 / 130.

The signal is a real one (os.kill of the process itself, at a chosen step, so that the step it
lands in is known), handled by the real command line: in this process through the `cli` fixture,
and in a child process where the exit status itself is checked.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gpt2tasks.train import train
from tests.conftest import REPO, compose

# 32 rows in batches of 8: 4 steps an epoch, validation after the epoch's 4th; last.ckpt every 3 steps too
SHORT = ("trainer.max_epochs=2", "data.max_train_samples=32", "data.max_eval_samples=16", "data.batch_size=8",
         "checkpoint.every_n_train_steps=3", "logger=none", "trainer.enable_progress_bar=false")
# test_resume.py's run: 12 batches an epoch, validation after batches 5, 10 and 12, last.ckpt every 3 steps
RUN = ("trainer.max_epochs=2", "data.max_train_samples=96", "data.max_eval_samples=32", "data.batch_size=8",
       "trainer.val_check_interval=5", "checkpoint.every_n_train_steps=3", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false")


def _step(ckpt) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


class SignalAt(Callback):
    """Sends `signum` to this process when the batch of optimizer step `step` starts."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _signal_train_at(monkeypatch, step: int, signum: int) -> None:
    import gpt2tasks.callbacks

    made = gpt2tasks.callbacks.run_callbacks
    monkeypatch.setattr(gpt2tasks.callbacks, "run_callbacks", lambda *a, **k: [*made(*a, **k), SignalAt(step, signum)])


@pytest.mark.parametrize("signum,status,at,saved", [
    (signal.SIGTERM, 143, 4, 5),  # lands in step 5's batch, which no validation follows: last.ckpt of step 5
    (signal.SIGINT, 130, 3, 4),   # lands in the epoch's last batch: its validation runs and writes last.ckpt (step 4)
])
def test_signal_during_train_writes_last_ckpt_and_says_how_to_resume(signum, status, at, saved, tmp_path, cli,
                                                                      monkeypatch):
    _signal_train_at(monkeypatch, at, signum)
    out = tmp_path / "run"
    done = cli("train", f"output_dir={out}", *SHORT)
    assert done.returncode == status, done.stderr[-3000:]
    assert _step(out / "checkpoints" / "last.ckpt") == saved
    assert not (out / "metrics.json").exists() and "Traceback" not in done.stderr
    assert f"stopped by {signal.Signals(signum).name}: {out / 'checkpoints' / 'last.ckpt'} holds step {saved}" in done.stderr
    assert f"python -m gpt2tasks train resume=true output_dir={out}" in done.stderr
    assert not list((out / "checkpoints").glob(".*"))  # no partial file beside the checkpoints
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the process's handlers are back


def test_signal_before_the_first_checkpoint_leaves_nothing(tmp_path, cli, monkeypatch):
    _signal_train_at(monkeypatch, 0, signal.SIGTERM)
    out = tmp_path / "run"
    done = cli("train", f"output_dir={out}", *SHORT, "checkpoint.save_last=false", "checkpoint.every_n_train_steps=null")
    assert done.returncode == 143, done.stderr[-3000:]
    assert "stopped by SIGTERM" in done.stderr and not (out / "checkpoints" / "last.ckpt").exists()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("signals") / "run"
    train(compose(f"output_dir={out}", "trainer.max_steps=2", *SHORT[1:]))
    return out / "checkpoints" / "best.ckpt"


class SignalAtBatch(Callback):
    def __init__(self, signum: int):
        self.signum = signum

    def on_predict_batch_start(self, *args):
        os.kill(os.getpid(), self.signum)

    on_validation_batch_start = on_predict_batch_start


def _signal_inference(monkeypatch, signum: int) -> None:
    import gpt2tasks.evaluation

    made = gpt2tasks.evaluation.inference_trainer

    def with_signal(cfg, *args, **kwargs):
        trainer = made(cfg, *args, **kwargs)
        trainer.callbacks.append(SignalAtBatch(signum))
        return trainer

    monkeypatch.setattr(gpt2tasks.evaluation, "inference_trainer", with_signal)


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_predict_eval_export_stop_at_once_and_leave_no_output(signum, status, ckpt, tmp_path, cli, monkeypatch):
    from gpt2tasks import runfile

    _signal_inference(monkeypatch, signum)
    name = signal.Signals(signum).name
    source = REPO / "data" / "sample_sentiment" / "validation.csv"
    for args, output in [(("predict", f"input={source}"), tmp_path / "predictions.jsonl"),
                         (("eval",), tmp_path / "metrics.json")]:
        done = cli(*args, f"ckpt={ckpt}", f"output={output}")
        assert done.returncode == status, done.stderr[-3000:]
        assert f"stopped by {name}" in done.stderr and "Traceback" not in done.stderr
        assert not output.exists()

    written = runfile.write_export_info

    def signal_while_writing(*args, **kwargs):
        written(*args, **kwargs)
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(runfile, "write_export_info", signal_while_writing)
    done = cli("export", f"ckpt={ckpt}", f"out={tmp_path / 'exported'}")
    assert done.returncode == status, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no export, no staging folder


def _child(args: tuple[str, ...], at: int, cache: str) -> subprocess.CompletedProcess:
    """`python -m gpt2tasks <args>` in a child process that sends itself SIGTERM when step `at` starts."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from lightning.pytorch.callbacks import Callback
        import gpt2tasks.callbacks

        class SignalAt(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == {at}:
                    os.kill(os.getpid(), signal.SIGTERM)

        made = gpt2tasks.callbacks.run_callbacks
        gpt2tasks.callbacks.run_callbacks = lambda *a, **k: [*made(*a, **k), SignalAt()]
        from gpt2tasks.__main__ import main
        main({list(args)!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPT2TASKS_CACHE": cache}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # a fresh interpreter's imports; the in-process tests above are the fast variant
def test_sigterm_exit_status_of_a_real_process(tmp_path):
    out = tmp_path / "run"
    done = _child(("train", f"output_dir={out}", *SHORT), 4, os.environ["GPT2TASKS_CACHE"])
    assert done.returncode == 143, done.stderr[-3000:]
    assert _step(out / "checkpoints" / "last.ckpt") == 5
    assert f"resume=true output_dir={out}" in done.stderr


@pytest.mark.slow  # three training runs in child processes
@pytest.mark.parametrize("at,saved", [
    (7, 8),  # step 8's batch: no validation follows, last.ckpt written at the batch's end
    (9, 10),  # step 10's batch: its validation runs, LastCheckpoint writes after it
])
def test_sigtermed_and_resumed_run_ends_with_the_uninterrupted_metrics(at, saved, tmp_path):
    cache = os.environ["GPT2TASKS_CACHE"]
    full = tmp_path / "full"
    train(compose(f"output_dir={full}", "logger=csv", *RUN))
    out = tmp_path / "run"
    stopped = _child(("train", f"output_dir={out}", "logger=csv", *RUN), at, cache)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert _step(out / "checkpoints" / "last.ckpt") == saved and not (out / "metrics.json").exists()
    # the bare command the message prints: the run's own settings come from its config.yaml
    resumed = subprocess.run([sys.executable, "-m", "gpt2tasks", "train", "resume=true", f"output_dir={out}"],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text()) == json.loads((full / "metrics.json").read_text())
    assert _step(out / "checkpoints" / "last.ckpt") == 24


SIGNAL_ONE_RANK = '''
import os, signal
from lightning.pytorch.callbacks import Callback
import gpt2tasks.callbacks

class SignalAt(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1 and trainer.global_rank == int(os.environ["SIGNAL_RANK"]):
            os.kill(os.getpid(), signal.SIGTERM)

made = gpt2tasks.callbacks.run_callbacks
gpt2tasks.callbacks.run_callbacks = lambda *a, **k: [*made(*a, **k), SignalAt()]
'''


@pytest.mark.slow  # two processes (DDP on CPU, gloo)
@pytest.mark.parametrize("rank", [0, 1])
def test_ddp_ranks_stop_at_the_same_step_whichever_rank_is_signalled(rank, tmp_path):
    # Lightning re-launches `python -m gpt2tasks ...` for rank 1: both ranks load the hook from a
    # sitecustomize module; only `rank` sends itself the signal
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SIGNAL_ONE_RANK)
    out = tmp_path / "run"
    env = {**os.environ, "SIGNAL_RANK": str(rank), "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "gpt2tasks", "train", f"output_dir={out}", "trainer=ddp",
                           "trainer.accelerator=cpu", "trainer.devices=2", *SHORT[:4], "logger=none",
                           "trainer.enable_progress_bar=false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 143, done.stderr[-3000:]
    # 32 rows, batch 8 per rank: 2 steps an epoch; the signal lands in step 2's batch, the epoch's last,
    # whose validation writes last.ckpt; both ranks stopped there (a rank left behind would hang in DDP)
    assert _step(out / "checkpoints" / "last.ckpt") == 2
    assert done.stderr.count("stopped by SIGTERM") == 2 and f"resume=true output_dir={out}" in done.stderr
