"""A `train -m` sweep's pieces, without training: what a job returns to Hydra (the monitored metric,
or a failure record instead of raising), the job records and the summary they make (failed jobs
counted and listed last), the search direction from task.mode, and the error for a missing plugin."""

import json
import math
import pickle

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from gpt2tasks import plugins, sweep
from gpt2tasks.errors import UserError
from gpt2tasks.resources import optimization_direction
from gpt2tasks.train import monitored_value


def test_train_returns_its_monitored_metric_or_nan_without_validation():
    cfg = OmegaConf.create({"task": {"monitor": "val/accuracy"}})
    assert monitored_value({"val/accuracy": 0.75, "val/loss": 0.5, "test/accuracy": 0.6}, cfg) == 0.75
    assert math.isnan(monitored_value({"train/loss": 0.5}, cfg))


def test_a_failed_job_returns_nan_with_its_error_and_leaves_no_folder(tmp_path, capsys):
    folder = tmp_path / "3"
    folder.mkdir()  # Hydra made it; the job failed before writing anything

    def bad_value():
        raise UserError("data.batch_size=0 must be a positive integer.")

    failed = sweep.run_job(bad_value, folder)
    assert isinstance(failed, sweep.JobFailed)
    assert failed.error == "UserError: data.batch_size=0 must be a positive integer."
    with pytest.raises(RuntimeError, match="the job failed: UserError: data.batch_size=0"):
        float(failed)  # no value: the Optuna sweeper records the trial as failed
    assert capsys.readouterr().err == "gpt2tasks: error: data.batch_size=0 must be a positive integer.\n"
    assert not folder.exists()
    # a bug: the job fails with its exception's name (its traceback is logged), the sweep goes on
    crashed = sweep.run_job(lambda: 1 / 0, tmp_path)
    assert crashed.error == "ZeroDivisionError: division by zero"
    assert sweep.run_job(lambda: 0.5, tmp_path) == 0.5
    assert sweep.run_job(lambda: math.nan, tmp_path).error.startswith("the run ended without a value of task.monitor")
    # a submitit job sends it back pickled
    back = pickle.loads(pickle.dumps(failed))
    assert type(back) is sweep.JobFailed and back.error == failed.error


def _job_config(sweep_dir, num, *overrides):
    return OmegaConf.create({"hydra": {
        "mode": RunMode.MULTIRUN, "job": {"num": num}, "overrides": {"task": list(overrides)},
        "runtime": {"output_dir": str(sweep_dir / str(num))}, "sweep": {"dir": str(sweep_dir)}}})


def _finish(sweep_dir, num, value, mode="max", **metrics):
    """A job that wrote its run (config.yaml, metrics.json) as train does, then ended with `value`."""
    run = sweep_dir / str(num)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"task:\n  monitor: val/acc\n  mode: {mode}\n")
    (run / "metrics.json").write_text(json.dumps(metrics))
    return JobReturn(status=JobStatus.COMPLETED, _return_value=value)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_summary_counts_failed_jobs_lists_them_last_and_names_the_best(tmp_path, capsys, mode):
    summary, folder = sweep.SweepSummary(), tmp_path / "sweep"
    sweep_config = OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)}}})
    stale = sweep.record_path(folder, 7)  # a previous sweep into the same folder had more jobs
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"job": 7, "status": "COMPLETED"}))
    summary.on_multirun_start(config=sweep_config)
    assert not stale.exists()
    jobs = {0: ("optim.lr=0.1", 0.6), 1: ("optim.lr=0.2", sweep.JobFailed("UserError: bad | value")),
            2: ("optim.lr=0.3", 0.8), 3: ("optim.lr=0.4", None), 4: ("optim.lr=0.5", RuntimeError("boom"))}
    for num, (override, value) in jobs.items():
        config = _job_config(folder, num, override, "seed=1")
        summary.on_job_start(config=config)
        assert json.loads(sweep.record_path(folder, num).read_text())["status"] == "RUNNING"
        if value is None:
            continue  # its process was killed: the record stays RUNNING
        if isinstance(value, float):
            ended = _finish(folder, num, value, mode, **{"val/acc": value, "test/acc": value / 2})
        elif isinstance(value, BaseException):  # Hydra's run_job caught an exception of the task
            ended = JobReturn(status=JobStatus.FAILED, _return_value=value)
        else:
            ended = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
        summary.on_job_end(config=config, job_return=ended)

    summary.on_multirun_end(config=sweep_config)
    rows = json.loads((folder / "summary.json").read_text())
    best, second = (2, 0) if mode == "max" else (0, 2)
    assert [r["job"] for r in rows] == [best, second, 1, 3, 4]  # failed last, in job order
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED", "FAILED", "FAILED"]
    assert rows[0]["metrics"] == {"val/acc": jobs[best][1], "test/acc": jobs[best][1] / 2}
    assert rows[2]["error"] == "UserError: bad | value" and rows[4]["error"] == "RuntimeError: boom"
    assert rows[3]["error"] == sweep.DIED and rows[3]["metrics"] == {}
    assert json.loads(sweep.record_path(folder, 0).read_text())["value"] == 0.6
    headline = f"5 jobs: 2 completed, 3 failed; best: job {best} (val/acc={jobs[best][1]:.4f})"
    out = capsys.readouterr().out
    assert f"Sweep summary ({headline}; every job: seed=1)" in out
    table = (folder / "summary.md").read_text()
    assert headline in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| # | job | overrides | val/acc | test/acc | folder |"
    assert lines[1] == f"| 1 | {best} | {jobs[best][0]} | {jobs[best][1]:.4f} | {jobs[best][1] / 2:.4f} | {best} |"
    assert lines[3] == "| 3 | 1 | optim.lr=0.2 | failed: UserError: bad / value |  | 1 |"
    assert lines[4].startswith(f"| 4 | 3 | optim.lr=0.4 | failed: {sweep.DIED[:60]}")


def test_a_single_run_writes_no_sweep_records(tmp_path):
    config = _job_config(tmp_path, 0)
    config.hydra.mode = RunMode.RUN
    sweep.SweepSummary().on_job_start(config=config)
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("search", ["sample_optuna", "sst2_optuna"])
@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_a_search_takes_its_direction_from_task_mode(search, mode, direction):
    # the search file's own sweeper block, resolved beside a task (without the plugin: Hydra composes
    # the file only with hydra-optuna-sweeper installed; tests/integration/test_sweeps.py runs it)
    from gpt2tasks.resources import CONF_DIR

    block = OmegaConf.load(CONF_DIR / "hparams_search" / f"{search}.yaml")
    assert OmegaConf.to_container(block.defaults) == [{"override /hydra/sweeper": "optuna"}]
    cfg = OmegaConf.merge(block, {"task": {"mode": mode}, "seed": 7})
    assert cfg.hydra.sweeper.direction == direction and cfg.hydra.sweeper.sampler.seed == 7
    assert cfg.hydra.sweeper.max_failure_rate == 1.0  # failed trials are recorded, the search goes on
    with pytest.raises(UserError, match="task.mode='best' must be max or min"):
        optimization_direction("best")


@pytest.mark.parametrize(("arg", "package"), [("hydra/launcher=submitit_local", "hydra-submitit-launcher"),
                                              ("hydra/launcher=submitit_slurm", "hydra-submitit-launcher"),
                                              ("hparams_search=sst2_optuna", "hydra-optuna-sweeper")])
def test_a_missing_plugin_is_refused_with_its_pip_install(cli, monkeypatch, tmp_path, arg, package):
    monkeypatch.setattr(plugins, "installed", lambda module: False)
    done = cli("train", "-m", arg, "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (f"gpt2tasks: error: {arg} needs the Hydra plugin {package}, which is not installed. "
                           f"Fix: pip install {package} (or, in a checkout of gpt2tasks, pip install -e '.[cluster]').\n")
    assert not (tmp_path / "sweep").exists()
