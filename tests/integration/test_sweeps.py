"""`train -m` sweeps on the real engines: hydra-submitit-launcher runs the jobs side by side, each in
its own folder, and a job with a bad value or a killed process is recorded as failed while the
others finish; hydra-optuna-sweeper searches over trials that `train` scores (its monitored metric),
failed trials included, and under DDP every rank runs the trial's parameters. Needs the `cluster`
extra (pip install -e '.[cluster]'; .ci/run installs it)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO

SMALL = ["logger=none", "data.max_eval_samples=32", "trainer.enable_progress_bar=false"]


def _start(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "gpt2tasks", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    return out, err


def _wait_for(path, until, timeout=300):
    """The JSON at `path` once `until(it)` holds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            data = json.loads(path.read_text())
            if until(data):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{path}: not there in {timeout} s")


@pytest.mark.slow
def test_submitit_local_runs_jobs_side_by_side_and_records_a_bad_value_and_a_killed_job(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0: 64 rows (completes); job 1: a bad value (UserError); job 2: 2000 rows x 3 epochs, killed
    proc = _start("-m", "hydra/launcher=submitit_local", "data.max_train_samples=64,0,2000", "trainer.max_epochs=3",
                  f"hydra.sweep.dir={sweep}", *SMALL, cwd=tmp_path)
    doomed = _wait_for(sweep / "jobs" / "2.json", lambda r: r["status"] == "RUNNING")
    time.sleep(3)
    os.kill(doomed["pid"], signal.SIGKILL)
    out, err = _finish(proc)

    records = {n: json.loads((sweep / "jobs" / f"{n}.json").read_text()) for n in range(3)}
    pids = {r["pid"] for r in records.values()}
    assert len(pids) == 3 and proc.pid not in pids  # each job in its own process ...
    assert records[2]["started"] < records[0]["ended"]  # ... side by side
    rows = json.loads((sweep / "summary.json").read_text())
    assert [(r["job"], r["status"]) for r in rows] == [(0, "COMPLETED"), (1, "FAILED"), (2, "FAILED")]
    assert rows[0]["metrics"] == json.loads((sweep / "0" / "metrics.json").read_text())
    assert records[0]["value"] == rows[0]["metrics"]["val/accuracy"]  # what train returned to Hydra
    assert rows[1]["error"].startswith("UserError: data.max_train_samples=0 must be a positive integer")
    assert "submitit job" in rows[2]["error"] and rows[2]["output_dir"] == str(sweep / "2")
    assert not (sweep / "1").exists()  # the bad value's job wrote nothing
    assert (f"Sweep summary (3 jobs: 1 completed, 2 failed; best: job 0 "
            f"(val/accuracy={rows[0]['metrics']['val/accuracy']:.4f})") in out
    assert "Traceback" not in err  # the sweep itself ended normally


def _optuna(sweep, *args, cwd):
    return _start("-m", "hparams_search=sample_optuna", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1", *SMALL, *args,
                  cwd=cwd)


@pytest.mark.slow
def test_optuna_search_of_three_trials_lists_them_best_first_with_a_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    # one searched value is bad (0 rows): its trials fail (nan), the search goes on
    out, err = _finish(_optuna(sweep, "data.max_train_samples=choice(64,0)", cwd=tmp_path))
    assert "Directions: ['maximize']" in err + out  # from task.mode=max
    rows = json.loads((sweep / "summary.json").read_text())
    assert len(rows) == 3
    failed = [r for r in rows if r["status"] == "FAILED"]
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    assert failed and completed and rows[:len(completed)] == completed  # completed first, best first
    assert all("data.max_train_samples=0" in r["overrides"] for r in failed)
    assert all(r["error"].startswith("UserError: data.max_train_samples=0") for r in failed)
    accuracies = [r["metrics"]["val/accuracy"] for r in completed]
    assert accuracies == sorted(accuracies, reverse=True)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == accuracies[0]  # Optuna's best is train's return value of the best trial
    assert {f"{k}={v}" for k, v in best["best_params"].items()} <= set(completed[0]["overrides"])
    for row in completed:
        record = json.loads((sweep / "jobs" / f"{row['job']}.json").read_text())
        assert record["value"] == row["metrics"]["val/accuracy"]
    assert f"Sweep summary (3 jobs: {len(completed)} completed, {len(failed)} failed; best: job {rows[0]['job']}" in out


@pytest.mark.slow
def test_a_trial_under_ddp_runs_its_parameters_on_every_rank(tmp_path):
    # Lightning re-launches the command line for rank 1 inside fit: it must run the trial rank 0's
    # sweeper sampled (handed over in GPT2TASKS_RANK_CONFIG), not a search of its own. If rank 1 ran
    # other values (lr, weight decay), its gradients would differ: the trial's metrics equal those of
    # a plain 2-process run with the trial's values only when both ranks ran them.
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.max_train_samples=64",
           "data.batch_size=8", "data.max_eval_samples=37", "data.eval_batch_size=8"]
    sweep = tmp_path / "sweep"
    _finish(_optuna(sweep, "hydra.sweeper.n_trials=1", *ddp, cwd=tmp_path))
    record = json.loads((sweep / "jobs" / "0.json").read_text())
    sampled = [o for o in record["overrides"] if o.startswith(("optim.lr=", "optim.weight_decay="))]
    assert len(sampled) == 2 and record["status"] == "COMPLETED"
    assert not (tmp_path / "outputs").exists()  # rank 1 made no folder (no sweep) of its own

    _finish(_start("trainer.max_epochs=1", *SMALL, *ddp, *sampled, f"output_dir={tmp_path / 'plain'}", cwd=tmp_path))
    trial = json.loads((sweep / "0" / "metrics.json").read_text())
    assert trial == json.loads((tmp_path / "plain" / "metrics.json").read_text())
