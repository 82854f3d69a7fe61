"""`python -m gpt2tasks eval ckpt=<path> [key=value ...]`: re-evaluate a checkpoint.

The checkpoint carries its run's config, tokenizer, HF config and label space, so evaluation needs
no download and no training data, and reproduces the training run's validation metrics exactly.
Overrides change data keys (e.g. data.validation_file=other.csv) on top of the saved config.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# torch, lightning and gpt2tasks.build are imported where used: `eval --help` answers without them.
from gpt2tasks import multitask
from gpt2tasks.config import validate_config
from gpt2tasks.errors import UserError
from gpt2tasks.outputs import write_metrics, write_predictions

USAGE = """usage: python -m gpt2tasks eval ckpt=<path.ckpt> [output=<metrics.json>] [task=<name>] [key=value ...]

Re-evaluates a gpt2tasks checkpoint on its validation (and test) data and prints the metrics as
JSON; with output=, also writes them there (and, for QA, predictions.json beside them). key=value overrides apply to the run's saved config, e.g. data.validation_file=<file>
data.test_file=<file> data.eval_batch_size=64 precision=bf16-mixed trainer.accelerator=cpu.
It runs on one device, whatever the run trained on (metrics do not depend on the device count).
A multi-task checkpoint is evaluated on every task (<task>/val/<metric>, val/mean), or with
task=<name> on that task alone, its data.* / task.* overrides applying to that task."""


def load_checkpoint(path: str) -> dict[str, Any]:
    import torch

    ckpt_path = Path(path).expanduser()
    if ckpt_path.is_dir() and (ckpt_path / "latest").is_file():  # DeepSpeed writes a folder
        return _consolidate_deepspeed(ckpt_path, path)
    if not ckpt_path.is_file():
        raise UserError(f"ckpt={path}: no such file. Fix: pass a checkpoint written by `gpt2tasks train`, "
                        "e.g. ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.")
    try:
        # Our checkpoints hold the run's config and tokenizer files (plain Python objects).
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as exc:
        raise UserError(f"ckpt={path}: not a readable PyTorch checkpoint ({type(exc).__name__}). Fix: pass "
                        "a .ckpt file written by `gpt2tasks train` (checkpoints/best.ckpt or last.ckpt).") from None
    if not isinstance(ckpt, dict) or "gpt2tasks" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"ckpt={path}: this checkpoint was not written by gpt2tasks (no run information). "
                        "Fix: pass checkpoints/best.ckpt or last.ckpt from a `gpt2tasks train` run.")
    return ckpt


def _consolidate_deepspeed(folder: Path, path: str) -> dict[str, Any]:
    """A DeepSpeed checkpoint is a folder of per-rank shards: Lightning's converter joins them into
    one fp32 state dict (keeping our run information), which needs the deepspeed package."""
    from gpt2tasks.strategies import require_deepspeed

    require_deepspeed(f"ckpt={path} (a DeepSpeed checkpoint folder)")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        convert_zero_checkpoint_to_fp32_state_dict(str(folder), str(Path(tmp) / "consolidated.ckpt"))
        return load_checkpoint(str(Path(tmp) / "consolidated.ckpt"))


def apply_overrides(config: dict, overrides: list[str], command: str = "eval", usage: str = USAGE):
    cfg = OmegaConf.create(config)
    OmegaConf.set_struct(cfg, True)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{command}: {item!r} is not key=value. Fix: e.g. data.max_length=256.\n{usage}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            key = item.split("=", 1)[0]
            raise UserError(f"{command}: cannot override {key!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                            "Fix: use a key of the run's config.yaml, e.g. data.max_length=256.") from None
    return cfg


def inference_trainer_kwargs(cfg) -> dict[str, Any]:
    """The run's Trainer settings (precision, accelerator, ...) without the training-only ones, on one
    device: exact evaluation gives the same numbers on any number, and predict writes one file."""
    from gpt2tasks.build import trainer_kwargs

    kwargs = trainer_kwargs(cfg, single_device=True)
    for key in ("max_epochs", "max_steps", "accumulate_grad_batches", "val_check_interval",
                "check_val_every_n_epoch", "num_sanity_val_steps", "limit_train_batches", "log_every_n_steps"):
        kwargs.pop(key, None)
    return kwargs


def evaluate_checkpoint(ckpt: str, overrides: list[str] = (), output: str | None = None,
                        task: str | None = None) -> dict[str, float]:
    """`task`: one head of a multi-task checkpoint (evaluated as that task alone); default: all."""
    import lightning as L

    from gpt2tasks.build import restore

    checkpoint = load_checkpoint(ckpt)
    info = checkpoint["gpt2tasks"]
    task = multitask.select_task(info, task, "eval", required=False)
    cfg = apply_overrides(info["config"], multitask.scope_overrides(list(overrides), task))
    validate_config(cfg)
    cfg, datamodule, module = restore(checkpoint, cfg, task)
    trainer = L.Trainer(**inference_trainer_kwargs(cfg), logger=False, enable_checkpointing=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = dict(sorted(module.latest_metrics.items()))
    if output:
        write_metrics(Path(output), metrics)
        write_predictions(Path(output).parent, getattr(module, "latest_predictions", {}))
    return metrics


def main(argv: list[str]) -> None:
    from gpt2tasks.cli import run_command

    own = ("ckpt=", "output=", "task=")
    options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(own)}
    overrides = [a for a in argv if not a.startswith(own)]

    def job() -> None:
        if "ckpt" not in options:
            raise UserError(f"eval needs ckpt=<path>. Fix: e.g. ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.\n{USAGE}")
        metrics = evaluate_checkpoint(options["ckpt"], overrides, options.get("output"), options.get("task"))
        print(json.dumps(metrics, indent=2))

    run_command(argv, USAGE, job)
