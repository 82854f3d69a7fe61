"""One backbone for two tasks vs one model per task: held-out metrics and parameter counts.

Trains task A alone, task B alone and A + B together (`task=multitask`) with the same model,
optimizer settings, epochs and seed, and prints each task's test metric in both setups. An epoch
of the proportional multi-task run reads every batch of both tasks once, as each single-task
epoch does, so the two see the same data.

    python scripts/multitask_vs_single.py                       # bundled sentiment + NER, tiny model
    python scripts/multitask_vs_single.py --tasks sst2 conll2003 --epochs 3 \
        --task-args sst2 data.train_file=.../train.tsv data.validation_file=... -- ...

Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_METRIC = {"seq_cls": "accuracy", "token_cls": "f1", "qa": "f1", "mc": "accuracy", "lm": "perplexity"}


def run(args: list[str], out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gpt2tasks", "train", f"output_dir={out}", "logger=none",
                           "trainer.enable_progress_bar=false", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    parameters = next(line for line in (done.stdout + done.stderr).splitlines() if "trainable /" in line)
    return {**json.loads((out / "metrics.json").read_text()), "parameters": parameters}, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs=2, default=["sample_sentiment", "sample_ner"])
    parser.add_argument("--kinds", nargs=2, default=["seq_cls", "token_cls"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--common", nargs="*", default=["optim.lr=1e-3", "optim.warmup_ratio=0.1",
                                                        "optim.weight_decay=0.01", "data.batch_size=32"],
                        help="overrides for every run (model=..., optim.*, data.* shared by both tasks)")
    parser.add_argument("--task-args", nargs="*", default=[],
                        help="per-task data overrides: <task> key=value ... (repeat for the other task)")
    args = parser.parse_args()
    own: dict[str, list[str]] = {t: [] for t in args.tasks}
    current = None
    for item in args.task_args:
        if item in own:
            current = item
        elif current is not None:
            own[current].append(item)
    common = [*args.common, f"trainer.max_epochs={args.epochs}", f"seed={args.seed}"]

    with tempfile.TemporaryDirectory() as tmp:
        single = {t: run([f"task={t}", *common, *own[t]], Path(tmp) / t) for t in args.tasks}
        multi, multi_s = run(["task=multitask", f"multitask.tasks=[{','.join(args.tasks)}]", *common,
                              *[f"tasks.{t}.{kv}" for t in args.tasks for kv in own[t]]], Path(tmp) / "multi")

    print(f"\n{' + '.join(args.tasks)}, {args.epochs} epochs, seed {args.seed}, {' '.join(args.common)}\n"
          "| task | metric (test) | single-task | multi-task | difference (points) |\n|---|---|---|---|---|")
    for task, kind in zip(args.tasks, args.kinds):
        metric = MAIN_METRIC[kind]
        split = "test" if f"test/{metric}" in single[task][0] else "val"
        alone, together = single[task][0][f"{split}/{metric}"], multi[f"{task}/{split}/{metric}"]
        print(f"| {task} | {split}/{metric} | {alone:.4f} | {together:.4f} | {100 * (together - alone):+.2f} |")
    print("\nwall time: " + ", ".join(f"{t} {s:.0f} s" for t, (_, s) in single.items()) + f", multi-task {multi_s:.0f} s")
    for task, (metrics, _) in single.items():
        print(f"{task} alone: {metrics['parameters'].split('model: ', 1)[-1]}")
    print(f"multi-task: {multi['parameters'].split('model: ', 1)[-1]}")


if __name__ == "__main__":
    main()
