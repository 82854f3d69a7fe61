"""`python -m gpt2tasks eval ckpt=<path> [key=value ...]`: re-evaluate a checkpoint.

The checkpoint carries its run's config, tokenizer, HF config and label space, so evaluation needs
no download and no training data, and reproduces the training run's validation metrics exactly.
Overrides change data keys (e.g. data.validation_file=other.csv) on top of the saved config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# torch, lightning and gpt2tasks.build are imported where used: `eval --help` answers without them.
from gpt2tasks import runfile
from gpt2tasks.cli import Command, Option, run_command
from gpt2tasks.outputs import check_writable, write_metrics, write_predictions

EVAL = Command(
    "eval",
    (Option("ckpt", metavar="<path.ckpt>", help="a checkpoint of a `train` run (checkpoints/best.ckpt or last.ckpt)"),
     Option("output", metavar="<metrics.json>",
            help="also write the metrics there (and, for QA, predictions.json beside them)"),
     Option("task", metavar="<name>", help="one task of a multi-task checkpoint (default: every task)"),
     Option(runfile.TRUST_KEY, "bool", False, "load a checkpoint holding more than plain data (see below)")),
    about="""Re-evaluates a gpt2tasks checkpoint on its validation (and test) data and prints the metrics as
JSON. key=value overrides apply to the run's saved config, e.g. data.validation_file=<file>
data.test_file=<file> data.eval_batch_size=64 precision=bf16-mixed trainer.accelerator=cpu.
It runs on one device, whatever the run trained on (metrics do not depend on the device count).
Only the eval sets are read (the training file need not exist here). The checkpoint is loaded as
plain data (tensors, numbers, strings): a file holding other Python objects is refused, since
loading them can run code; trust_checkpoint=true loads such a file if you trust where it comes from.
A multi-task checkpoint is evaluated on every task (<task>/val/<metric>, val/mean), or with
task=<name> on that task alone, its data.* / task.* overrides applying to that task.""",
    example="ckpt=outputs/<task>/<time>/checkpoints/best.ckpt", required=("ckpt",), overrides=True)
USAGE = EVAL.usage()


def inference_trainer(cfg, single_device: bool = True, **extra: Any) -> L.Trainer:
    """The Trainer of eval and predict: no logger, no checkpoints (+ `extra` keywords); settings it
    refuses (e.g. trainer.accelerator=gpu without a GPU) are a UserError naming the keys, as in train."""
    from gpt2tasks.build import trainer_from_kwargs

    return trainer_from_kwargs({**inference_trainer_kwargs(cfg, single_device), "logger": False,
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
                        task: str | None = None, trust_checkpoint: bool = False) -> dict[str, float]:
    """`task`: one head of a multi-task checkpoint (evaluated as that task alone); default: all.
    `trust_checkpoint`: load a checkpoint that holds more than plain data (see runfile.load_checkpoint)."""
    import lightning as L

    from gpt2tasks.build import restore

    if output:
        check_writable(Path(output), "output")  # before any work
    checkpoint = runfile.load_checkpoint(ckpt, trust_checkpoint)
    info = checkpoint["gpt2tasks"]
    task = runfile.select_task(info, task, "eval", required=False)
    cfg = runfile.run_config(info["config"], overrides, "eval", USAGE, task)
    cfg, datamodule, module = restore(checkpoint, cfg, task)
    trainer = inference_trainer(cfg)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = dict(sorted(module.latest_metrics.items()))
    if output:
        write_metrics(Path(output), metrics)
        write_predictions(Path(output).parent, getattr(module, "latest_predictions", {}))
    return metrics


def main(argv: list[str]) -> None:
    def job(options: dict[str, Any], overrides: list[str]) -> None:
        metrics = evaluate_checkpoint(options["ckpt"], overrides, options["output"], options["task"],
                                      options[runfile.TRUST_KEY])
        print(json.dumps(metrics, indent=2))

    run_command(argv, EVAL, job)
