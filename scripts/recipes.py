"""Run one `train` command over several seeds and print each score with their mean and spread:
how the offline recipes' numbers in docs/recipes.md and the README were measured.

    python scripts/recipes.py --seeds 0 1 2 3 4 -- task=sst2 model=tiny data.train_file=path/to/train.tsv ...

Everything after `--` is the `python -m gpt2tasks train` command's overrides, as the docs give
them (with your own paths). Each seed runs alone, one after the other, in its own process on one
CPU thread (OMP_NUM_THREADS=1: the wall times are comparable, and other jobs on the machine slow a
run less); its output_dir is a temporary folder, removed afterwards unless --keep. Printed: per
seed the metrics of metrics.json (the best checkpoint's, as the run reports them), the wall time
and the CPU time of the run's process (on a busy machine the CPU time is what the run costs one
idle core; the wall time also counts waiting for one); then per metric mean +- sample standard
deviation [min, max] over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """User + system CPU time of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(overrides: list[str], seed: int, output_dir: Path) -> tuple[dict[str, float], float, float]:
    """(metrics.json of one seeded run, its wall time, its CPU time; in seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "gpt2tasks", "train", *overrides, f"seed={seed}", f"output_dir={output_dir}",
               "trainer.enable_progress_bar=false"]
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if done.returncode != 0:
        sys.exit(f"seed {seed} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads((output_dir / "metrics.json").read_text()), wall, cpu


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {spread:.4f} [{min(values):.4f}, {max(values):.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--keep", type=Path, default=None, help="keep each seed's run in KEEP/seed_<n>")
    parser.add_argument("overrides", nargs="+", help="the train command's overrides (after --)")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="recipes-"))
    results: list[tuple[dict[str, float], float, float]] = []
    print("train", " ".join(args.overrides), flush=True)
    print("load average at the start:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    for seed in args.seeds:
        metrics, wall, cpu = run(args.overrides, seed, root / f"seed_{seed}")
        results.append((metrics, wall, cpu))
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if not k.endswith("loss"))
        print(f"seed {seed}: {shown}  (wall {wall:.0f} s, CPU {cpu:.0f} s)", flush=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print(f"over seeds {' '.join(map(str, args.seeds))}:")
    for key in results[0][0]:
        print(f"  {key}: {summary([m[key] for m, _, _ in results])}")
    print(f"  wall time (s, one thread): {summary([wall for _, wall, _ in results])}")
    print(f"  CPU time (s): {summary([cpu for _, _, cpu in results])}")
    print("load average at the end:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
