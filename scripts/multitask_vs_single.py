"""One backbone for two tasks vs one model per task: padding of the training batches, held-out
metrics over several seeds, parameter counts.

For every seed, trains task A alone, task B alone and A + B together (`task=multitask`), packed
(data.pack_examples, the default) and -- unless --no-unpacked -- unpacked (data.pack_examples=false:
what the multi-task mixer gave before it took each task's own training batches), with the same
model, optimizer settings, epochs and seed; prints each task's test metric (mean +- sd over the
seeds) in every setup. An epoch of the proportional multi-task run reads every batch of both tasks
once, as each single-task epoch does, so the setups see the same data. Before training, it counts
the padding of one multi-task epoch's training batches, packed and unpacked (positions the backbone
runs that hold no token).

    OMP_NUM_THREADS=1 python scripts/multitask_vs_single.py        # bundled sentiment + NER, tiny model
    python scripts/multitask_vs_single.py --seeds 42 --epochs 10 --no-unpacked
    python scripts/multitask_vs_single.py --tasks sst2 conll2003 --epochs 3 \
        --task-args sst2 data.train_file=.../train.tsv data.validation_file=... -- ...

Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_METRIC = {"seq_cls": "accuracy", "token_cls": "f1", "qa": "f1", "mc": "accuracy", "lm": "perplexity"}
UNPACKED = "data.pack_examples=false"


def run(args: list[str], out: Path) -> tuple[dict, float]:
    """metrics.json of `python -m gpt2tasks train <args>` (+ its parameter line) and its seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gpt2tasks", "train", f"output_dir={out}", "logger=none",
                           "trainer.enable_progress_bar=false", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    parameters = next(line for line in (done.stdout + done.stderr).splitlines() if "trainable /" in line)
    return {**json.loads((out / "metrics.json").read_text()), "parameters": parameters}, time.perf_counter() - start


def padding(overrides: list[str]) -> dict[str, float]:
    """Padding % of one epoch's training batches of the run `overrides` describe, per task and in
    all: the share of the positions the backbone runs (input_ids) that hold no token of an example."""
    sys.path.insert(0, str(REPO))
    from gpt2tasks import multitask
    from gpt2tasks.build import build_for_training
    from gpt2tasks.resources import register_resolvers

    register_resolvers()
    datamodule, _, _ = build_for_training(multitask.compose(overrides))
    real, positions = Counter(), Counter()
    for batch in datamodule.train_dataloader():
        name = batch.get("task", "")
        real[name] += int(batch["attention_mask"].sum())
        positions[name] += batch["input_ids"].numel()
    shares = {name: 100 * (1 - real[name] / positions[name]) for name in positions}
    return {**shares, "all": 100 * (1 - sum(real.values()) / sum(positions.values()))}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs=2, default=["sample_sentiment", "sample_ner"])
    parser.add_argument("--kinds", nargs=2, default=["seq_cls", "token_cls"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--unpacked", action=argparse.BooleanOptionalAction, default=True,
                        help="also train the multi-task run unpacked (data.pack_examples=false)")
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
    common = [*args.common, f"trainer.max_epochs={args.epochs}"]
    multi = ["task=multitask", f"multitask.tasks=[{','.join(args.tasks)}]", *common,
             *[f"tasks.{t}.{kv}" for t in args.tasks for kv in own[t]]]
    setups = {t: [f"task={t}", *common, *own[t]] for t in args.tasks}  # one model per task
    setups["multi-task packed"] = multi
    if args.unpacked:
        setups["multi-task unpacked"] = [*multi, UNPACKED]

    with tempfile.TemporaryDirectory() as tmp:
        pads = {"multi-task unpacked (the mixer before)": padding([*multi, UNPACKED, f"output_dir={tmp}/pad"]),
                "multi-task packed": padding([*multi, f"output_dir={tmp}/pad"])}
        results: dict[str, list[tuple[dict, float]]] = {name: [] for name in setups}
        for seed in args.seeds:
            for name, overrides in setups.items():
                results[name].append(run([*overrides, f"seed={seed}"], Path(tmp) / f"{name}-{seed}".replace(" ", "_")))
                print(f"seed {seed}, {name}: {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)

    print(f"\n{' + '.join(args.tasks)}, {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}, "
          f"{' '.join(args.common)}\n\nPadding of one epoch's training batches (% of the positions the backbone runs):\n"
          f"| batches | {' | '.join(args.tasks)} | all |\n|---|{'---|' * (len(args.tasks) + 1)}")
    for name, shares in pads.items():
        print(f"| {name} | {' | '.join(f'{shares[t]:.1f}%' for t in args.tasks)} | {shares['all']:.1f}% |")
    multi_setups = [name for name in setups if name not in args.tasks]
    print(f"\nHeld-out metric, mean +- sd over {len(args.seeds)} seeds:\n"
          f"| task | metric | one model per task | {' | '.join(multi_setups)} |\n|---|---|---|{'---|' * len(multi_setups)}")
    for task, kind in zip(args.tasks, args.kinds):
        metric = MAIN_METRIC[kind]
        split = "test" if f"test/{metric}" in results[task][0][0] else "val"
        alone = [m[f"{split}/{metric}"] for m, _ in results[task]]
        together = [mean_sd([m[f"{task}/{split}/{metric}"] for m, _ in results[name]]) for name in multi_setups]
        print(f"| {task} | {split}/{metric} | {mean_sd(alone)} | {' | '.join(together)} |")
    print("\nmean wall time per run: " + ", ".join(f"{name} {statistics.mean(s for _, s in runs):.0f} s"
                                                    for name, runs in results.items()))
    for name, runs in results.items():
        print(f"{name}: {runs[0][0]['parameters'].split('model: ', 1)[-1]}")


if __name__ == "__main__":
    main()
