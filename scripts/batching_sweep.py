"""Accuracy over seeds of the three training batchings: random order, packed, length-grouped.

    python scripts/batching_sweep.py                          # every dataset, 5 seeds, 2 runs at a time
    python scripts/batching_sweep.py --datasets sample --seeds 0 1 2 --jobs 1
    python scripts/batching_sweep.py --table-only             # re-print the table from the results file
    python scripts/batching_sweep.py --datasets sample --batchings packed --seeds 42 --threads 2 \
        --override optim.lr=2e-3 --tag lr2e-3                 # another recipe, another thread count

Each run is `python -m gpt2tasks train` as a user runs it (fresh process), with one of
  random:  data.pack_examples=false data.group_by_length=false  (shuffled, dynamically padded)
  packed:  data.pack_examples=true data.group_by_length=false    (datamodules/packing.py)
  grouped: data.pack_examples=false data.group_by_length=true    (length-sorted inside shuffled mega-batches)
and everything else the dataset's recipe below. Datasets (all random-init `tiny`, all offline):
  sample: task=sample_sentiment as the README's default run (15 epochs, 2,000 rows), test accuracy
  sst2:   the first 4,000 rows of ../shared/datasets/sst2/train.tsv, lr 1e-3, 3 epochs, accuracy on
          all 872 dev sentences (the issue's held-out recipe; real GPT-2 tokenizer)
  ner:    task=sample_ner (8 epochs), test entity F1
Results are appended to a JSON-lines file (a run already there is not run again), then a table of
mean, sample standard deviation, min and max per (dataset, batching) is printed.

`--override KEY=VALUE ...` adds overrides to every run (a recipe to try); `--tag` names them in the
results (runs are told apart by dataset, batching, seed, tag and thread count). Each run is given
OMP_NUM_THREADS=1 unless `--threads N`: a tiny model gains nothing from a second intra-op thread,
and on a shared machine the spinning threads cost several times the CPU (measured: one epoch of
the sample, 60 s of CPU with 2 threads under load, 11 s with 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2TASKS_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

BATCHINGS = {  # each names both keys, so that none depends on the defaults
    "random": ["data.pack_examples=false", "data.group_by_length=false"],
    "packed": ["data.pack_examples=true", "data.group_by_length=false"],
    "grouped": ["data.pack_examples=false", "data.group_by_length=true"],
}
DATASETS = {
    "sample": (["task=sample_sentiment"], "test/accuracy"),
    "sst2": (["task=sst2", f"model.tokenizer_name_or_path={SHARED / 'gpt2_tokenizer'}",
              f"data.train_file={SHARED / 'sst2/train.tsv'}", f"data.validation_file={SHARED / 'sst2/dev.tsv'}",
              "data.max_train_samples=4000", "optim.lr=1e-3", "trainer.max_epochs=3"], "val/accuracy"),
    "ner": (["task=sample_ner"], "test/f1"),
}
VAL_METRIC = {"sample": "val/accuracy", "sst2": "val/accuracy", "ner": "val/f1"}


def run(dataset: str, batching: str, seed: int, workdir: Path, extra: list[str], tag: str, threads: int) -> dict:
    overrides, metric = DATASETS[dataset]
    out = workdir / f"{dataset}-{batching}-{seed}-{tag}-{threads}"
    cmd = [sys.executable, "-m", "gpt2tasks", "train", *overrides, *BATCHINGS[batching], *extra, f"seed={seed}",
           f"output_dir={out}", "overwrite=true", "logger=none", "trainer.enable_progress_bar=false",
           "checkpoint.save_last=false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"dataset": dataset, "batching": batching, "seed": seed, "tag": tag, "threads": threads, "metric": metric,
            "score": metrics[metric], "seconds": round(seconds, 1),
            "val": {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}}


def key(r: dict) -> tuple:
    return r["dataset"], r["batching"], r.get("tag", "default"), r.get("threads", 1)


def table(results: list[dict]) -> str:
    """One line per (dataset, batching, tag, threads): the score over its seeds, and per seed
    `seed: score (val)` with val the monitored validation metric of the same checkpoint."""
    lines = ["| dataset | metric | batching | recipe | threads | seeds | mean | std | min | max | per seed: score (val) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for group in sorted({key(r) for r in results}, key=lambda k: (list(DATASETS).index(k[0]),
                                                                  list(BATCHINGS).index(k[1]), k[2], k[3])):
        rows = sorted((r for r in results if key(r) == group), key=lambda r: r["seed"])
        scores = [r["score"] for r in rows]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        val = VAL_METRIC[group[0]]
        lines.append(f"| {group[0]} | {rows[0]['metric']} | {group[1]} | {group[2]} | {group[3]} | {len(rows)} "
                     f"| {statistics.mean(scores):.3f} | {std:.3f} | {min(scores):.3f} | {max(scores):.3f} | "
                     + " / ".join(f"{r['seed']}: {r['score']:.3f} ({r['val'].get(val, float('nan')):.3f})" for r in rows)
                     + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--batchings", nargs="+", default=list(BATCHINGS), choices=list(BATCHINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--override", nargs="*", default=[], help="extra overrides for every run (a recipe)")
    parser.add_argument("--tag", default="default", help="the name of --override's recipe in the results")
    parser.add_argument("--results", default=str(REPO / "outputs" / "batching_sweep.jsonl"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()

    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.table_only:
        have = {(*key(r), r["seed"]) for r in done}
        # seed-major: a sweep cut short still has every dataset and batching at the seeds it reached
        todo = [(d, b, s) for s in args.seeds for d in args.datasets for b in args.batchings
                if (d, b, args.tag, args.threads, s) not in have]
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run, *job, Path(tmp), args.override, args.tag, args.threads) for job in todo]
            for future in as_completed(futures):
                result = future.result()
                done.append(result)
                with path.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(f"{result['dataset']:6} {result['batching']:7} {args.tag} x{args.threads} seed {result['seed']}: "
                      f"{result['metric']}={result['score']:.4f} ({result['seconds']} s)", flush=True)
    print(table(done))


if __name__ == "__main__":
    main()
