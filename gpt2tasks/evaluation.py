"""`python -m gpt2tasks eval ckpt=<path> [key=value ...]`: re-evaluate a checkpoint.

The checkpoint carries its run's config, tokenizer, HF config and label space, so evaluation needs
no download and no training data, and reproduces the training run's validation metrics exactly.
Overrides change data keys (e.g. data.validation_file=other.csv) on top of the saved config.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# torch, lightning and gpt2tasks.build are imported where used: `eval --help` answers without them.
from gpt2tasks import multitask
from gpt2tasks.config import validate_config
from gpt2tasks.errors import UserError
from gpt2tasks.outputs import check_writable, write_metrics, write_predictions

log = logging.getLogger(__name__)

USAGE = """usage: python -m gpt2tasks eval ckpt=<path.ckpt> [output=<metrics.json>] [task=<name>] [trust_checkpoint=false]
                            [key=value ...]

Re-evaluates a gpt2tasks checkpoint on its validation (and test) data and prints the metrics as
JSON; with output=, also writes them there (and, for QA, predictions.json beside them). key=value overrides apply to the run's saved config, e.g. data.validation_file=<file>
data.test_file=<file> data.eval_batch_size=64 precision=bf16-mixed trainer.accelerator=cpu.
It runs on one device, whatever the run trained on (metrics do not depend on the device count).
Only the eval sets are read (the training file need not exist here). The checkpoint is loaded as
plain data (tensors, numbers, strings): a file holding other Python objects is refused, since
loading them can run code; trust_checkpoint=true loads such a file if you trust where it comes from.
A multi-task checkpoint is evaluated on every task (<task>/val/<metric>, val/mean), or with
task=<name> on that task alone, its data.* / task.* overrides applying to that task."""


# The opt-in key of eval / predict / export / combine for a checkpoint that needs a full unpickler.
TRUST_KEY = "trust_checkpoint"


def load_checkpoint(path: str, trust: bool = False) -> dict[str, Any]:
    """A gpt2tasks checkpoint, loaded as plain data: torch's weights-only unpickler builds nothing but
    tensors and plain Python values, so a file cannot run code. Everything gpt2tasks stores in a
    checkpoint is such data. A file holding other objects is refused, unless `trust` (the user's
    trust_checkpoint=true) allows the full unpickler."""
    import torch

    if not str(path).strip():
        raise UserError("ckpt= is empty. Fix: pass a checkpoint written by `gpt2tasks train`, e.g. "
                        "ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.")
    ckpt_path = Path(path).expanduser()
    if ckpt_path.is_dir() and (ckpt_path / "latest").is_file():  # DeepSpeed writes a folder
        return _consolidate_deepspeed(ckpt_path, path, trust)
    if ckpt_path.is_dir():
        raise UserError(f"ckpt={path} is a folder, not a checkpoint file. Fix: pass the .ckpt file inside it, "
                        "e.g. ckpt=<run>/checkpoints/best.ckpt.")
    if not ckpt_path.is_file():
        raise UserError(f"ckpt={path}: no such file. Fix: pass a checkpoint written by `gpt2tasks train`, "
                        "e.g. ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise _unreadable(path, exc) from None
        if not trust:
            raise UserError(_untrusted_message(path, exc)) from None
        log.warning("ckpt=%s: loading with the full unpickler (%s=true): it can run code stored in the file.",
                    path, TRUST_KEY)
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as full_exc:  # noqa: BLE001 -- whatever the file holds, it is not a checkpoint
            raise _unreadable(path, full_exc) from None
    except PermissionError:
        raise UserError(f"ckpt={path}: permission denied. Fix: make the file readable (chmod u+r).") from None
    except Exception as exc:  # noqa: BLE001 -- truncated zip, empty file, text, ...: all unreadable
        raise _unreadable(path, exc) from None
    _check_run_info(path, ckpt)
    return ckpt


# What every gpt2tasks checkpoint's run information holds (see build.build_for_training).
RUN_INFO_KEYS = ("kind", "config", "tokenizer_files")


def _check_run_info(path: str, ckpt: Any) -> None:
    """A checkpoint of some other program, or one whose run information was edited, is refused
    here rather than failing half-way through building the model."""
    if not isinstance(ckpt, dict) or "gpt2tasks" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"ckpt={path}: this checkpoint was not written by gpt2tasks (no run information). "
                        "Fix: pass checkpoints/best.ckpt or last.ckpt from a `gpt2tasks train` run.")
    info = ckpt["gpt2tasks"]
    missing = [key for key in RUN_INFO_KEYS if not isinstance(info, dict) or key not in info]
    if not missing:
        missing = [k for k in (("tasks",) if info["kind"] == multitask.MULTITASK else ("hf_config", "label_space"))
                   if k not in info]
    if missing or not isinstance(ckpt["state_dict"], dict):
        raise UserError(f"ckpt={path}: its run information is incomplete (no {', '.join(missing) or 'state_dict'}), "
                        "so the model cannot be rebuilt. Fix: pass an unmodified checkpoints/best.ckpt or "
                        "last.ckpt of a `gpt2tasks train` run.")


def _unreadable(path: str, exc: Exception) -> UserError:
    return UserError(f"ckpt={path}: not a readable PyTorch checkpoint ({type(exc).__name__}; the file may be "
                     "truncated or not a checkpoint). Fix: pass a .ckpt file written by `gpt2tasks train` "
                     "(checkpoints/best.ckpt or last.ckpt), copied completely.")


def _untrusted_message(path: str, exc: Exception) -> str:
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
    what = f" (it names {found.group(1)})" if found else ""
    return (f"ckpt={path}: the file holds Python objects besides tensors and plain data{what}, which gpt2tasks "
            "checkpoints never do. Loading such objects can run code stored in the file, so it was not loaded. "
            f"Fix: use a checkpoint written by `gpt2tasks train`; if you trust where this file comes from (you "
            f"or someone you trust wrote it), add {TRUST_KEY}=true to load it with the full unpickler.")


def _consolidate_deepspeed(folder: Path, path: str, trust: bool) -> dict[str, Any]:
    """A DeepSpeed checkpoint is a folder of per-rank shards: Lightning's converter joins them into
    one fp32 state dict (keeping our run information), which needs the deepspeed package. The
    converter reads the shards with the full unpickler, so only a trusted folder is converted."""
    from gpt2tasks.strategies import require_deepspeed

    require_deepspeed(f"ckpt={path} (a DeepSpeed checkpoint folder)")
    if not trust:
        raise UserError(f"ckpt={path} is a DeepSpeed checkpoint folder: joining its shards loads them with the full "
                        "unpickler (DeepSpeed's format), which can run code stored in them. Fix: if you trust it "
                        f"(your own run), add {TRUST_KEY}=true.")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        convert_zero_checkpoint_to_fp32_state_dict(str(folder), str(Path(tmp) / "consolidated.ckpt"))
        return load_checkpoint(str(Path(tmp) / "consolidated.ckpt"), trust)


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


def inference_trainer(cfg) -> L.Trainer:
    """The Trainer of eval and predict: no logger, no checkpoints; settings it refuses (e.g.
    trainer.accelerator=gpu without a GPU) are a UserError naming the keys, as in train."""
    from gpt2tasks.build import trainer_from_kwargs

    return trainer_from_kwargs({**inference_trainer_kwargs(cfg), "logger": False, "enable_checkpointing": False})


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
                        task: str | None = None, trust_checkpoint: bool = False) -> dict[str, float]:
    """`task`: one head of a multi-task checkpoint (evaluated as that task alone); default: all.
    `trust_checkpoint`: load a checkpoint that holds more than plain data (see load_checkpoint)."""
    import lightning as L

    from gpt2tasks.build import restore

    if output:
        check_writable(Path(output), "output")  # before any work
    checkpoint = load_checkpoint(ckpt, trust_checkpoint)
    info = checkpoint["gpt2tasks"]
    task = multitask.select_task(info, task, "eval", required=False)
    cfg = apply_overrides(info["config"], multitask.scope_overrides(list(overrides), task))
    _drop_training_files(cfg)
    validate_config(cfg)
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


def _drop_training_files(cfg) -> None:
    """Evaluation reads the eval sets only: the training file (of every task) need not exist here."""
    for section in [cfg, *(cfg.tasks[name] for name in cfg.get("tasks") or {})]:
        section.data.train_file = None


def main(argv: list[str]) -> None:
    from gpt2tasks.cli import parse_bool, run_command

    own = ("ckpt=", "output=", "task=", f"{TRUST_KEY}=")
    options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(own)}
    overrides = [a for a in argv if not a.startswith(own)]

    def job() -> None:
        if "ckpt" not in options:
            raise UserError(f"eval needs ckpt=<path>. Fix: e.g. ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.\n{USAGE}")
        trust = parse_bool(TRUST_KEY, options.get(TRUST_KEY, "false"))
        metrics = evaluate_checkpoint(options["ckpt"], overrides, options.get("output"), options.get("task"), trust)
        print(json.dumps(metrics, indent=2))

    run_command(argv, USAGE, job)
