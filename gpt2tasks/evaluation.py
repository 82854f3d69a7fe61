"""`python -m gpt2tasks eval ckpt=<path> [key=value ...]`: re-evaluate a checkpoint.

The checkpoint carries its run's config, tokenizer, HF config and label space, so evaluation needs
no download and no training data, and reproduces the training run's validation metrics exactly.
Overrides change data keys (e.g. data.validation_file=other.csv) on top of the saved config; an
eval file named there is scored whole (runfile.named_eval_sets), and the rows scored per set are said.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# torch, lightning and gpt2tasks.build are imported where used: `eval --help` answers without them.
from gpt2tasks import runfile
from gpt2tasks.cli import Command, Option, done_lines, format_metrics, run_command
from gpt2tasks.outputs import check_output_file, prediction_path, write_metrics, write_predictions

EVAL = Command(
    "eval",
    (Option("ckpt", metavar="<path.ckpt>", help="a checkpoint of a `train` run (checkpoints/best.ckpt or last.ckpt)"),
     Option("output", metavar="<metrics.json>",
            help="also write the metrics there (and, for QA, predictions.json beside them)"),
     Option("overwrite", "bool", False, "replace an existing output="),
     Option("task", metavar="<name>", help="one task of a multi-task checkpoint (default: every task)"),
     Option(runfile.TRUST_KEY, "bool", False, "load a checkpoint holding more than plain data (see below)")),
    about="""Re-evaluates a gpt2tasks checkpoint on its validation (and test) data and prints the task's headline
metrics (a `Done.` line, as train ends), then every metric as JSON. key=value overrides apply to the
run's saved config, e.g. data.validation_file=<file> data.test_file=<file> data.eval_batch_size=64
precision=bf16-mixed trainer.accelerator=cpu.
It runs on one device, whatever the run trained on (metrics do not depend on the device count).
Only the eval sets are read (the training file need not exist here). The run's own eval files keep
its data.max_eval_samples (so its metrics are reproduced); a file given here is scored whole unless
data.max_eval_samples=N is given too. A line above the JSON says how many rows each set scored
(and how many its file holds where a limit cut it); output= holds them as <set>/rows (and
<set>/rows_in_file). The checkpoint is loaded as
plain data (tensors, numbers, strings): a file holding other Python objects is refused, since
loading them can run code; trust_checkpoint=true loads such a file if you trust where it comes from.
A multi-task checkpoint is evaluated on every task (<task>/val/<metric>, val/mean), or with
task=<name> on that task alone, its data.* / task.* overrides applying to that task.""",
    example="ckpt=outputs/<task>/<time>/checkpoints/best.ckpt", required=("ckpt",), overrides=True)
USAGE = EVAL.usage()


def inference_trainer(cfg, single_device: bool = True, **extra: Any) -> L.Trainer:
    """The Trainer of eval and predict: no logger, no checkpoints (+ `extra` keywords); settings it
    refuses (e.g. trainer.accelerator=gpu without a GPU) are a UserError naming the keys, as in train."""
    from gpt2tasks.build import trainer_with_progress

    # a terminal gets the bars of validation and test; a log file (no terminal) no redrawn bar
    return trainer_with_progress(cfg, {**inference_trainer_kwargs(cfg, single_device), "logger": False,
                                       "enable_checkpointing": False, **extra})


def inference_trainer_kwargs(cfg, single_device: bool = True) -> dict[str, Any]:
    """The run's Trainer settings (precision, accelerator, ...) without the training-only ones; on one
    device unless `single_device` is false (predict with trainer.devices=N): exact evaluation gives
    the same numbers on any number of devices."""
    from gpt2tasks.build import trainer_kwargs

    kwargs = trainer_kwargs(cfg, single_device=single_device)
    for key in ("max_epochs", "max_steps", "accumulate_grad_batches", "val_check_interval",
                "check_val_every_n_epoch", "num_sanity_val_steps", "limit_train_batches", "log_every_n_steps"):
        kwargs.pop(key, None)
    return kwargs


def evaluate_checkpoint(ckpt: str, overrides: list[str] = (), output: str | None = None,
                        task: str | None = None, trust_checkpoint: bool = False,
                        overwrite: bool = False) -> dict[str, float]:
    """`task`: one head of a multi-task checkpoint (evaluated as that task alone); default: all.
    `trust_checkpoint`: load a checkpoint that holds more than plain data (see runfile.load_checkpoint).
    `overwrite`: replace an existing `output` file."""
    return evaluate(ckpt, overrides, output, task, trust_checkpoint, overwrite)[0]


def evaluate(ckpt: str, overrides: list[str] = (), output: str | None = None, task: str | None = None,
             trust_checkpoint: bool = False, overwrite: bool = False
             ) -> tuple[dict[str, float], dict[str, tuple[int, int, str | None]]]:
    """evaluate_checkpoint's metrics, and per eval set the rows it scored (`scored_rows`).

    An eval file given in `overrides` is scored whole unless they also set data.max_eval_samples;
    the run's own files keep the run's limit (runfile.named_eval_sets). `output` gets the metrics
    and, per set, `<set>/rows` (and `<set>/rows_in_file` where a limit cut the set)."""
    return _evaluated(ckpt, overrides, output, task, trust_checkpoint, overwrite)[:2]


def _evaluated(ckpt: str, overrides: list[str], output: str | None, task: str | None, trust_checkpoint: bool,
               overwrite: bool) -> tuple[dict[str, float], dict[str, tuple[int, int, str | None]], dict[str, float]]:
    """evaluate's (metrics, rows), and the headline of the metrics (TaskModule.headline: what `eval`
    prints first)."""
    from gpt2tasks.build import restore

    if output:
        check_output_file(Path(output), "output", overwrite, shown=output)  # before any work
    checkpoint = runfile.load_checkpoint(ckpt, trust_checkpoint)
    info = checkpoint["gpt2tasks"]
    task = runfile.select_task(info, task, "eval", required=False)
    cfg = runfile.run_config(info["config"], overrides, "eval", USAGE, task)
    whole = runfile.named_eval_sets(cfg, overrides, task)
    cfg, datamodule, module = restore(checkpoint, cfg, task, whole_eval_sets=whole)
    metrics = score(cfg, module, datamodule)
    rows = scored_rows(datamodule)
    if output:
        predictions = getattr(module, "latest_predictions", {})
        for eval_set in predictions:  # QA: predictions.json beside output= too
            check_output_file(prediction_path(Path(output).expanduser().absolute().parent, eval_set), "output",
                              overwrite)
        write_metrics(Path(output), {**metrics, **row_counts(rows)})
        write_predictions(Path(output).parent, predictions)
    return metrics, rows, module.headline(metrics, str(cfg.task.monitor))


def score(cfg, module, datamodule) -> dict[str, float]:
    """The metrics of `module`'s weights on the eval sets `datamodule` loaded (validation, then
    test when there is one), on one device."""
    trainer = inference_trainer(cfg)
    module.latest_metrics = {}
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
    return dict(sorted(module.latest_metrics.items()))


def scored_rows(datamodule) -> dict[str, tuple[int, int, str | None]]:
    """Per eval set, named as its metrics are (val, val_<name>, test; <task>/val in a multi-task
    run): (rows scored, rows its file holds, the key that cut it or None)."""
    from gpt2tasks.datamodules.multitask import MultiTaskDataModule

    if not isinstance(datamodule, MultiTaskDataModule):  # one task's own datamodule: a run of that task
        datamodule = MultiTaskDataModule({"": datamodule}, named_tasks=False)
    return datamodule.eval_rows()


def row_counts(rows: dict[str, tuple[int, int, str | None]]) -> dict[str, int]:
    """scored_rows as flat keys for a metrics file: <set>/rows, and <set>/rows_in_file where cut."""
    counts = {}
    for eval_set, (scored, in_file, limit) in rows.items():
        counts[f"{eval_set}/rows"] = scored
        if limit:
            counts[f"{eval_set}/rows_in_file"] = in_file
    return counts


def describe_rows(rows: dict[str, tuple[int, int, str | None]]) -> str:
    """'scored val: 32 of 50,000 rows (data.max_eval_samples=32); test: 500 rows'."""
    return "scored " + "; ".join(
        f"{eval_set}: {scored:,} of {in_file:,} rows ({limit})" if limit else f"{eval_set}: {scored:,} rows"
        for eval_set, (scored, in_file, limit) in rows.items())


def main(argv: list[str]) -> None:
    def job(options: dict[str, Any], overrides: list[str]) -> None:
        metrics, rows, headline = _evaluated(options["ckpt"], overrides, options["output"], options["task"],
                                             options[runfile.TRUST_KEY], options["overwrite"])
        output = options["output"] and Path(options["output"]).expanduser().absolute()
        print(done_lines(format_metrics(headline), [("checkpoint", Path(options["ckpt"]).expanduser().absolute()),
                                                    ("output", output)]))
        print(describe_rows(rows))  # then every metric, as JSON (metrics.json's keys)
        print(json.dumps(metrics, indent=2))

    run_command(argv, EVAL, job)
