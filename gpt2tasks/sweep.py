"""A `train -m` sweep: each job's record, and the summary of all of them, best first.

Jobs may run in this process (Hydra's basic launcher), side by side in other processes or on other
machines (`hydra/launcher=submitit_local|submitit_slurm`), or as the trials of a search
(`hparams_search=...`, the Optuna sweeper). So nothing is kept in memory: a Hydra callback
(conf/config.yaml, `hydra.callbacks.sweep_summary`) writes each job's record to the sweep folder,
`jobs/<num>.json` -- "RUNNING" when it starts, its result or error when it ends -- and the sweep's
end reads every record, each completed job's metrics.json and config.yaml (the task's monitor and
mode), prints the table and writes `summary.md` and `summary.json` in the sweep folder.

A job that fails does not end the sweep: `run_job` returns its error as a `JobFailed` record (to
Optuna a trial without a value: a failed trial) and the other jobs go on. A job whose process died
(killed, out of memory) never writes its end: its record stays "RUNNING" and the summary counts it
failed (gpt2tasks's submitit launchers add submitit's error to it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from gpt2tasks import compat
from gpt2tasks.outputs import write_atomic

log = logging.getLogger("gpt2tasks")

COMPLETED, FAILED, RUNNING = "COMPLETED", "FAILED", "RUNNING"
#: the error of a job whose record still says RUNNING when the sweep ends
DIED = "the job's process ended without a result (killed, out of memory, or its machine lost)"


class JobFailed:
    """What a failed sweep job returns to Hydra instead of raising (a raise ends the whole sweep):
    its error. It has no value: float() of it raises, so the Optuna sweeper, which reads
    float(return value), records the trial as failed. (Not nan: hydra-optuna-sweeper 1.3 then tells
    Optuna a failed trial with a value, which Optuna refuses, ending the search.)"""

    def __init__(self, error: str) -> None:
        self.error = error

    def __float__(self) -> float:
        raise RuntimeError(f"the job failed: {self.error}")

    def __repr__(self) -> str:
        return f"JobFailed({self.error!r})"


def run_job(job: Callable[[], float], cleanup_dir: Path) -> float | JobFailed:
    """Run one job of a sweep: its value (a float), or a JobFailed carrying its error. A user's mistake is
    reported as in a single run (one paragraph on stderr, its empty folder removed); any other
    exception with its traceback in the log, as it is a bug worth its trace."""
    from gpt2tasks.cli import report_user_error, user_problem
    from gpt2tasks.errors import UserError, redact

    try:
        value = job()
    except (UserError, OSError) as err:
        message = user_problem(err)
        if message is None:  # an OSError that is a bug, not a user's folder or disk
            log.exception("this job of the sweep failed; the others go on")
            return JobFailed(redact(f"{type(err).__name__}: {err}"))
        report_user_error(message, cleanup_dir)
        return JobFailed(redact(f"{type(err).__name__}: {message}"))
    except Exception as err:
        log.exception("this job of the sweep failed; the others go on")
        return JobFailed(redact(f"{type(err).__name__}: {err}"))
    if math.isnan(value):  # a search cannot rank it (Optuna refuses nan): a failed trial
        return JobFailed("the run ended without a value of task.monitor (no validation ran, or it was nan)")
    return value


class SweepSummary(Callback):
    def __init__(self, max_columns: int = 6) -> None:
        self.max_columns = max_columns  # metrics shown on stdout (the files have all of them)

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        # a sweep run again into the same folder: the records of the previous one's jobs are not this one's
        for path in (Path(str(config.hydra.sweep.dir)) / "jobs").glob("*.json"):
            path.unlink()

    # on_job_start / on_job_end run in the job's own process (a submitit job's, under submitit).
    def on_job_start(self, config, **kwargs: Any) -> None:
        if _in_sweep(config):  # where it runs: to find a job that hangs, and to tell jobs that overlapped
            write_record(config, status=RUNNING, host=socket.gethostname(), pid=os.getpid(), started=time.time())

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        if not _in_sweep(config):
            return
        value = compat.job_return_value(job_return)  # the exception when the task function raised
        if isinstance(value, JobFailed):
            write_record(config, status=FAILED, error=value.error, ended=time.time())
        elif isinstance(value, BaseException) or getattr(job_return.status, "name", "") == FAILED:
            write_record(config, status=FAILED, error=f"{type(value).__name__}: {value}", ended=time.time())
        else:
            write_record(config, status=COMPLETED, value=_number(value), ended=time.time())

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).absolute()
        jobs = read_records(folder)
        if not jobs:  # no job started (e.g. the sweep's own config failed)
            return
        rows = summarize(jobs)
        common = [o for o in rows[0]["overrides"] if all(o in r["overrides"] for r in rows)]
        note = f"every job: {' '.join(common)}" if common else ""
        headline = counts(rows)
        write_atomic(folder / "summary.json", json.dumps(rows, indent=2) + "\n")
        write_atomic(folder / "summary.md",
                     f"# Sweep {folder}\n\n{headline}\n\n{note}\n\n{markdown(rows, folder, common)}\n")
        print(f"\nSweep summary ({headline}; {note or 'no common overrides'}):\n"
              f"{markdown(rows, folder, common, self.max_columns)}\n"
              f"  table: {folder / 'summary.md'}  (every job's metrics and errors: summary.json)")


def _in_sweep(config) -> bool:
    from hydra.types import RunMode

    from gpt2tasks.distributed import is_rank_zero

    # torchrun/srun ranks > 0 run the same sweep: rank 0 alone keeps its records
    return config.hydra.get("mode") == RunMode.MULTIRUN and is_rank_zero()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def record_path(sweep_dir: str | Path, num: int) -> Path:
    return Path(sweep_dir).absolute() / "jobs" / f"{num}.json"


def write_record(config, **result: Any) -> None:
    """The record of the job `config` runs (its number, overrides and folder), with `result`
    (at its end: added to what its start recorded)."""
    num = int(config.hydra.job.num) if config.hydra.job.get("num") is not None else 0
    path = record_path(config.hydra.sweep.dir, num)
    started = _read(path, json.loads) if result["status"] != RUNNING else None
    record = {**(started or {}), "job": num, "overrides": list(config.hydra.overrides.task),
              "output_dir": str(Path(config.hydra.runtime.output_dir).absolute()), **result}
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def read_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's record, in job order; a record left RUNNING is a job that died."""
    jobs = []
    for path in (sweep_dir / "jobs").glob("*.json"):
        job = _read(path, json.loads)
        if job is None:
            continue
        if job["status"] == RUNNING:
            job = {**job, "status": FAILED, "error": DIED}
        jobs.append(job)
    return sorted(jobs, key=lambda j: j["job"])


def summarize(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per job: job, overrides, status, error, output_dir, monitor, mode, metrics; sorted
    best first by the task's monitor (its mode), failed jobs and jobs without that metric last."""
    rows = []
    for job in jobs:
        folder = Path(job["output_dir"])
        metrics = (_read(folder / "metrics.json", json.loads) or {}) if job["status"] == COMPLETED else {}
        config = _read(folder / "config.yaml", yaml.safe_load) or {}
        task = config.get("task", {})
        status, error = job["status"], job.get("error")
        if status == COMPLETED and not metrics:
            status, error = FAILED, f"no metrics.json in {folder}"
        rows.append({"job": job["job"], "overrides": job["overrides"], "status": status, "error": error,
                     "output_dir": str(folder), "monitor": task.get("monitor"), "mode": task.get("mode", "max"),
                     "metrics": metrics})

    def key(row: dict[str, Any]) -> tuple[int, float, int]:
        value = row["metrics"].get(row["monitor"])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 1, 0.0, row["job"]
        return 0, -value if row["mode"] == "max" else value, row["job"]

    return sorted(rows, key=key)


def counts(rows: list[dict[str, Any]]) -> str:
    """'3 jobs: 2 completed, 1 failed; best: job 1 (val/accuracy=0.9000)'."""
    failed = sum(r["status"] != COMPLETED for r in rows)
    text = f"{len(rows)} jobs: {len(rows) - failed} completed, {failed} failed"
    best = rows[0]
    if best["status"] == COMPLETED and best["monitor"] in best["metrics"]:
        text += f"; best: job {best['job']} ({best['monitor']}={best['metrics'][best['monitor']]:.4f})"
    return text


def markdown(rows: list[dict[str, Any]], folder: Path, common: list[str] = (), max_columns: int | None = None) -> str:
    """The table: rank, job, its own overrides (not those in `common`), the monitored metric, then
    the other metrics (val, then test), the job's folder (relative to the sweep folder). A failed
    job shows `failed: <its error>` in the first metric's column."""
    monitor = next((r["monitor"] for r in rows if r["monitor"]), "metric")
    names = sorted({k for r in rows for k in r["metrics"]} - {monitor}, key=lambda k: (not k.startswith("val"), k))
    names = [monitor, *names][:max_columns] if max_columns else [monitor, *names]
    header = ["#", "job", "overrides", *(cell(n) for n in names), "folder"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, start=1):
        values = [f"{row['metrics'][n]:.4f}" if n in row["metrics"] else "" for n in names]
        if row["status"] != COMPLETED:
            error = " ".join(str(row["error"]).split()).replace("|", "/")
            values = [f"failed: {error[:100]}{'...' if len(error) > 100 else ''}", *values[1:]]
        own = [o for o in row["overrides"] if o not in common]
        cells = [str(rank), str(row["job"]), cell(" ".join(own)) or "(none)", *values,
                 cell(os.path.relpath(row["output_dir"], folder))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(text: str) -> str:
    """Text as one table cell: on one line, its `|` not a column break (entity types in metric
    names and overrides are the user's text)."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _read(path: Path, parse) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
