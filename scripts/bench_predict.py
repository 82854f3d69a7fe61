"""Large `predict` jobs: rows/s and peak memory at 10k, 100k and 1M rows, on 1 and 2 processes.

    python scripts/bench_predict.py                                   # 10k, 100k, 1M rows x 1, 2 processes
    python scripts/bench_predict.py --rows 10000 100000 --processes 1 2 --json bench_predict.json

A tiny sample_sentiment model is trained for a few steps (or --ckpt is used), then rows like the
bundled sample_sentiment reviews (its texts, cycled, each with a row number so no two are the
same) are generated into a temporary folder as CSV, and each (rows, processes) case runs
`python -m gpt2tasks predict` as a user runs it, in its own process (`trainer.accelerator=cpu`,
with `trainer.devices=2` for 2 processes: DDP over gloo). Measured:
- rows/s over the whole command (start-up, the reading pass, tokenizing, predicting, writing), and
  the rate predict's own progress line reports (from the start of predicting);
- CPU seconds (user + system, of the command and the ranks it waited for): on a shared machine
  rows per CPU second says more than wall time;
- peak RSS: of the process tree (all ranks together) and of the largest single process, sampled
  from /proc every 50 ms. Memory that stays flat from 10k to 1M rows is what streaming buys.
Checks every output has one line per row, in order. Writes a Markdown table (and --json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from itertools import cycle
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"predict: ([\d,]+)/([\d,]+) rows \(100%\), ([\d,]+) rows/s")


def gpt2tasks(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpt2tasks", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def train_tiny(folder: Path) -> Path:
    """A tiny sample_sentiment checkpoint (a few steps: its predictions are not the point)."""
    run = folder / "run"
    subprocess.run(gpt2tasks("train", "task=sample_sentiment", f"output_dir={run}", "logger=none",
                             "trainer.enable_progress_bar=false", "trainer.max_steps=8", "data.max_train_samples=256",
                             "data.max_eval_samples=32", "data.test_file=null", "trainer.accelerator=cpu"),
                   cwd=folder, env=environment(), check=True, capture_output=True)
    return run / "checkpoints" / "last.ckpt"


def write_rows(path: Path, n: int) -> Path:
    """n sample_sentiment-like rows (text only, as a user's new data would be), streamed to disk."""
    with (REPO / "data" / "sample_sentiment" / "train.csv").open(newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for i, text in zip(range(n), cycle(texts)):
            writer.writerow([f"{text} (#{i})"])
    return path


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the process and all its descendants, the largest single RSS), in bytes, from /proc."""
    total, largest, stack = 0, 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                rss = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        total, largest = total + rss, max(largest, rss)
    return total, largest


def run_case(ckpt: Path, source: Path, n: int, processes: int, args, folder: Path) -> dict:
    out = folder / f"p{n}x{processes}.jsonl"
    command = gpt2tasks("predict", f"ckpt={ckpt}", f"input={source}", f"output={out}", f"chunk_rows={args.chunk_rows}",
                        f"batch_size={args.batch_size}", "progress_every=60", "trainer.accelerator=cpu")
    if processes > 1:
        command.append(f"trainer.devices={processes}")
    log = folder / f"p{n}x{processes}.log"
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=folder, env=environment(), stdout=stderr, stderr=subprocess.STDOUT)
        peak_total = peak_one = 0
        while proc.poll() is None:
            total, one = tree_rss(proc.pid)
            peak_total, peak_one = max(peak_total, total), max(peak_one, one)
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    text = log.read_text()
    if proc.returncode:
        raise SystemExit(f"predict failed ({proc.returncode}) on {n} rows x {processes}:\n{text[-3000:]}")
    with out.open() as f:
        lines = sum(1 for i, line in enumerate(f) if json.loads(line)["index"] == i)
    assert lines == n, f"{lines} lines in order for {n} rows"
    reported = PROGRESS.search(text)
    out.unlink()  # 1M lines are ~100 MB
    return {"rows": n, "processes": processes, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
            "cpu_seconds": round(cpu_seconds, 1), "rows_per_cpu_s": round(n / cpu_seconds),
            "predict_rows_per_s": int(reported.group(3).replace(",", "")) if reported else None,
            "peak_rss_mb": round(peak_total / 2**20), "peak_rss_one_process_mb": round(peak_one / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ckpt", help="a checkpoint to use instead of training a tiny one")
    parser.add_argument("--json", help="also write the results there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        folder = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else train_tiny(folder)
        results = []
        for n in args.rows:
            source = write_rows(folder / f"rows{n}.csv", n)
            for processes in args.processes:
                results.append(run_case(ckpt, source, n, processes, args, folder))
                print(json.dumps(results[-1]), flush=True)
            source.unlink()
    print(f"\n`python scripts/bench_predict.py {' '.join(sys.argv[1:])}` (chunk_rows={args.chunk_rows}, "
          f"batch_size={args.batch_size})\n")
    print("| rows | processes | wall s | rows/s (whole command) | rows/s (predict's progress) | CPU s | rows per CPU s "
          "| peak RSS, all ranks | peak RSS, one process |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['processes']} | {r['seconds']} | {r['rows_per_s']:,} | "
              f"{r['predict_rows_per_s'] or '?':,} | {r['cpu_seconds']} | {r['rows_per_cpu_s']:,} | "
              f"{r['peak_rss_mb']:,} MB | {r['peak_rss_one_process_mb']:,} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
