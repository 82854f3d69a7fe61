"""The summary of a `train -m` sweep: one table of every job's overrides and final metrics, best first.

A Hydra callback (conf/config.yaml, `hydra.callbacks.sweep_summary`): each job's end records its
overrides and folder; the sweep's end reads each job's metrics.json and config.yaml (the task's
monitor and mode), prints the table and writes `summary.md` and `summary.json` in the sweep folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from gpt2tasks.outputs import write_atomic

log = logging.getLogger("gpt2tasks")


class SweepSummary(Callback):
    def __init__(self, max_columns: int = 6) -> None:
        self.max_columns = max_columns  # metrics shown on stdout (the files have all of them)
        self.jobs: list[dict[str, Any]] = []

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        self.jobs.append({"job": int(config.hydra.job.num) if config.hydra.job.get("num") is not None else 0,
                          "overrides": list(job_return.overrides or []),
                          "output_dir": str(config.hydra.runtime.output_dir),
                          "status": getattr(job_return.status, "name", str(job_return.status))})

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if not self.jobs:  # jobs ran in other processes (e.g. a joblib launcher): nothing recorded here
            return
        rows = summarize(self.jobs)
        folder = sweep_folder(self.jobs)
        common = [o for o in rows[0]["overrides"] if all(o in r["overrides"] for r in rows)]
        note = f"every job: {' '.join(common)}" if common else ""
        write_atomic(folder / "summary.json", json.dumps(rows, indent=2) + "\n")
        write_atomic(folder / "summary.md", f"# Sweep {folder}\n\n{note}\n\n{markdown(rows, folder, common)}\n")
        print(f"\nSweep summary ({len(rows)} jobs, best first by {rows[0]['monitor']}; {note or 'no common overrides'}):\n"
              f"{markdown(rows, folder, common, self.max_columns)}\n"
              f"  table: {folder / 'summary.md'}  (every job's metrics: summary.json)")


def summarize(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per job: job, overrides, status, output_dir, monitor, mode, metrics; sorted best
    first by the task's monitor (its mode), jobs without that metric last."""
    rows = []
    for job in jobs:
        folder = Path(job["output_dir"])
        metrics = _read(folder / "metrics.json", json.loads) or {}
        config = _read(folder / "config.yaml", yaml.safe_load) or {}
        task = config.get("task", {})
        status = job["status"] if metrics else ("no metrics.json" if job["status"] == "COMPLETED" else job["status"])
        rows.append({**job, "status": "COMPLETED" if metrics else status, "monitor": task.get("monitor"),
                     "mode": task.get("mode", "max"), "metrics": metrics})

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row["metrics"].get(row["monitor"])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 1, 0.0
        return 0, -value if row["mode"] == "max" else value

    return sorted(rows, key=key)


def markdown(rows: list[dict[str, Any]], folder: Path, common: list[str] = (), max_columns: int | None = None) -> str:
    """The table: rank, job, its own overrides (not those in `common`), the monitored metric, then
    the other metrics (val, then test), the job's folder (relative to the sweep folder)."""
    monitor = rows[0]["monitor"]
    names = sorted({k for r in rows for k in r["metrics"]} - {monitor}, key=lambda k: (not k.startswith("val"), k))
    names = [monitor, *names][:max_columns] if max_columns else [monitor, *names]
    header = ["#", "job", "overrides", *(cell(n) for n in names), "folder"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, start=1):
        values = [f"{row['metrics'][n]:.4f}" if n in row["metrics"] else "" for n in names]
        if row["status"] != "COMPLETED":
            values = [row["status"].lower(), *values[1:]]
        own = [o for o in row["overrides"] if o not in common]
        cells = [str(rank), str(row["job"]), cell(" ".join(own)) or "(none)", *values,
                 cell(os.path.relpath(row["output_dir"], folder))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(text: str) -> str:
    """Text as one table cell: on one line, its `|` not a column break (entity types in metric
    names and overrides are the user's text)."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def sweep_folder(jobs: list[dict[str, Any]]) -> Path:
    """The sweep's folder: the parent of its jobs' folders (hydra.sweep.dir)."""
    dirs = [os.path.abspath(j["output_dir"]) for j in jobs]
    common = os.path.commonpath(dirs)
    return Path(common if len(set(dirs)) > 1 else os.path.dirname(dirs[0]))


def _read(path: Path, parse) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
