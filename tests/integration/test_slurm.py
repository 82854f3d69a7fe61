"""A real SLURM cluster: one node on this machine (scripts/slurm_local.sh: slurmctld + slurmd +
munged, 2 CPUs), and scripts/slurm.sbatch submitted to it with CPU values on sbatch's command line.

- 2 tasks (srun, gloo): one run folder, metrics equal to a 1-process `eval` of its best checkpoint;
- SIGUSR1 (SLURM's warning before the time limit): Lightning's requeue, the same job continues its
  run folder and ends with the uninterrupted run's metrics;
- scancel of a running job leaves a run folder that resume=true finishes with those metrics;
- a `-m` sweep through hydra/launcher=submitit_slurm: each job in its own folder.

`pytest -m slurm` (needs root and `apt-get install slurm-wlm munge`; .ci/run does both)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.integration.test_distributed import TWO_NODES, _eval, _free_port, _global_step

pytestmark = pytest.mark.slurm

# 1 node, 2 tasks of 1 CPU each, no GPU: the sbatch script's own #SBATCH lines stay those of a GPU cluster
CPU_JOB = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]
RUN = ["trainer.accelerator=cpu", *TWO_NODES]  # 32 steps of 2 ranks, last.ckpt after each


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The local cluster for the session; SLURM_CONF set for sbatch/squeue/scancel (and submitit)."""
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster's daemons run as root")
    port = _free_port()
    while port + 1 > 65535 or not _port_free(port + 1):
        port = _free_port()
    folder = tmp_path_factory.mktemp("slurm_local")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(folder), "SLURM_LOCAL_PORT": str(port)}
    script = str(REPO / "scripts" / "slurm_local.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    print(started.stdout.strip())  # "local SLURM cluster up in N s ..." (pytest -s shows it)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run(["bash", script, "stop"], env=env, timeout=60)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sbatch(cwd, *overrides: str) -> str:
    """scripts/slurm.sbatch submitted from `cwd` with CPU_JOB options; the job id."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["sbatch", "--parsable", *CPU_JOB, f"--output={cwd}/slurm-%j.out",
                           str(REPO / "scripts" / "slurm.sbatch"), *RUN, *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def _job(job_id: str) -> dict[str, str]:
    """scontrol's fields of a job (kept a while after it ends): JobState, Restarts, ExitCode, ..."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)


def _wait_until_ended(job_id: str, timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (job := _job(job_id)).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                                     "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING"):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], timeout=30)
            pytest.fail(f"job {job_id} still {job.get('JobState')} after {timeout} s")
        time.sleep(0.5)
    return job


def _wait_for_step(last, step: int, job_id: str, timeout: float = 300) -> None:
    """Until last.ckpt holds step `step` or later (loaded only when rewritten)."""
    deadline, seen, saved = time.monotonic() + timeout, None, 0
    while saved < step:
        assert time.monotonic() < deadline, f"job {job_id}: no checkpoint of step {step} in {timeout} s"
        assert _job(job_id).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _job(job_id)
        time.sleep(0.05)
        if last.exists() and last.stat().st_mtime_ns != seen:
            seen, saved = last.stat().st_mtime_ns, _global_step(last)


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sbatch")
    job_id = _sbatch(cwd)
    job = _wait_until_ended(job_id)
    return cwd, job_id, job


def test_sbatch_two_tasks_one_run_equals_one_process(uninterrupted):
    cwd, job_id, job = uninterrupted
    log = (cwd / f"slurm-{job_id}.out").read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", log[-3000:]
    assert [p.name for p in (cwd / "outputs" / "sample_sentiment").iterdir()] == [f"slurm_{job_id}"]
    run = cwd / "outputs" / "sample_sentiment" / f"slurm_{job_id}"
    assert log.count("Done.") == 1  # global rank 0 reports
    assert "effective batch: 16 = data.batch_size 8 x 2 device(s)" in log
    assert {p.name for p in run.iterdir()} == {".gpt2tasks-run", "config.yaml", "metrics.json", "checkpoints",
                                               "logs", "plots"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert _global_step(run / "checkpoints" / "last.ckpt") == 32
    assert _eval(run / "checkpoints" / "best.ckpt") == json.loads((run / "metrics.json").read_text())


def test_requeue_signal_saves_requeues_and_the_job_finishes_its_run(uninterrupted, tmp_path):
    full = uninterrupted[0] / "outputs" / "sample_sentiment" / f"slurm_{uninterrupted[1]}" / "metrics.json"
    job_id = _sbatch(tmp_path)
    run = tmp_path / "outputs" / "sample_sentiment" / f"slurm_{job_id}"
    _wait_for_step(run / "checkpoints" / "last.ckpt", 3, job_id)
    # what SLURM sends 90 s before the time limit (#SBATCH --signal=SIGUSR1@90), to every task
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
    # SLURM makes a requeued job eligible 2 minutes after the requeue (its BeginTime); not wait for that
    deadline = time.monotonic() + 300
    while (job := _job(job_id)).get("Restarts") != "1" or job.get("JobState") != "PENDING":
        assert time.monotonic() < deadline and job.get("JobState") in ("RUNNING", "COMPLETING", "PENDING"), job
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)
    job = _wait_until_ended(job_id)
    log = (tmp_path / f"slurm-{job_id}.out").read_text()  # both starts (--open-mode=append)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", log[-3000:]
    assert log.count("SLURM requeue signal: saving") == 1 and f"Requeued SLURM job: {job_id}" in log
    assert log.count("continuing from") == 1 and log.count("Done.") == 1
    # the same folder: Lightning's hpc checkpoint became last.ckpt; two log versions (before, after)
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert not list(run.glob("hpc_ckpt_*"))
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0", "version_1"]
    assert json.loads((run / "metrics.json").read_text()) == json.loads(full.read_text())


def test_scancel_leaves_a_run_that_resume_finishes(uninterrupted, tmp_path):
    full = uninterrupted[0] / "outputs" / "sample_sentiment" / f"slurm_{uninterrupted[1]}" / "metrics.json"
    job_id = _sbatch(tmp_path)
    run = tmp_path / "outputs" / "sample_sentiment" / f"slurm_{job_id}"
    _wait_for_step(run / "checkpoints" / "last.ckpt", 3, job_id)
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert _wait_until_ended(job_id)["JobState"] == "CANCELLED"
    assert not (run / "metrics.json").exists()
    assert 3 <= _global_step(run / "checkpoints" / "last.ckpt") < 32

    again = _sbatch(tmp_path, f"output_dir={run}", "resume=true")
    job = _wait_until_ended(again)
    assert job["JobState"] == "COMPLETED", (tmp_path / f"slurm-{again}.out").read_text()[-3000:]
    assert json.loads((run / "metrics.json").read_text()) == json.loads(full.read_text())


def test_submitit_slurm_sweep_runs_each_job_in_its_own_folder(slurm_cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "gpt2tasks", "train", "-m", "hydra/launcher=submitit_slurm", "seed=1,2",
         f"hydra.sweep.dir={sweep}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
         "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.max_train_samples=64",
         "data.batch_size=8", "data.max_eval_samples=37", "trainer.max_epochs=1", "logger=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert set(metrics) == {f"{s}/{m}" for s in ("val", "test") for m in ("accuracy", "f1", "loss")}
        assert f"seed: {int(job) + 1}" in (sweep / job / "config.yaml").read_text()
    assert json.loads((sweep / "0" / "metrics.json").read_text()) != json.loads((sweep / "1" / "metrics.json").read_text())
