"""Load a trained model for inference, from a gpt2tasks `.ckpt` or an exported Hugging Face folder.

Both give the same objects, (config, datamodule, module), built as `eval` builds them, so inputs
are read and tokenized exactly as in training:
- a `.ckpt` from `train` carries the run's config, tokenizer files, HF config and label space
  (`runfile.load_checkpoint` + `build.restore`, LoRA adapters rebuilt, lean checkpoints completed);
- an exported folder holds the standard HF files (config.json, model.safetensors, tokenizer files)
  plus `gpt2tasks.json` (`runfile.read_export_info`). Its weights are already merged (no LoRA), so
  the HF head loads as is.
No data of the training run is needed: its data files are dropped from the config, and only the
caller's input is read, a chunk at a time (`datamodule.predict_chunks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from transformers import AutoTokenizer, GPT2Config

from gpt2tasks import runfile, runspec
from gpt2tasks.backbone import build_model, setup_pad_token
from gpt2tasks.build import build_datamodule, build_module, restore
from gpt2tasks.datamodules.base import TaskDataModule
from gpt2tasks.datamodules.labels import LabelSpace
from gpt2tasks.errors import UserError
from gpt2tasks.tasks import KINDS
from gpt2tasks.tasks.base import TaskModule

FIX = ("Fix: pass ckpt= a checkpoint written by `gpt2tasks train` (outputs/<task>/<time>/checkpoints/best.ckpt) "
       "or a folder written by `gpt2tasks export`.")


def load_for_inference(path: str, overrides: Sequence[str] = (), command: str = "predict",
                       usage: str = "", task: str | None = None, trust_checkpoint: bool = False
                       ) -> tuple[DictConfig, TaskDataModule, TaskModule]:
    """(config, datamodule without data, module with the trained weights) from `ckpt=path`.
    `overrides` (key=value) apply to the run's saved config; `command`/`usage` name the caller in errors.
    `task` picks the head of a multi-task checkpoint (required there); `trust_checkpoint` allows a
    .ckpt that holds more than plain data (see runfile.load_checkpoint)."""
    location = Path(path).expanduser()
    if not location.exists():
        raise UserError(f"ckpt={path}: no such file or folder. {FIX}")
    if location.is_dir():
        if task is not None:
            raise UserError(f"task={task}: an exported folder holds one task already (export writes one folder per "
                            "task of a multi-task run). Fix: leave task= out, or pass the multi-task .ckpt.")
        return _from_export(location, path, overrides, command, usage)
    checkpoint = runfile.load_checkpoint(path, trust_checkpoint)
    info = checkpoint["gpt2tasks"]
    task = runfile.select_task(info, task, command, required=True)
    cfg = runfile.run_config(info["config"], overrides, command, usage, task, eval_sets=False)
    # One task's view, datamodule and module (a run of one task: that one): what predict feeds rows.
    return restore(checkpoint, cfg, task or next(iter(info["tasks"])), load_eval_sets=False)


def _from_export(folder: Path, path: str, overrides: Sequence[str], command: str, usage: str
                 ) -> tuple[DictConfig, TaskDataModule, TaskModule]:
    info = runfile.read_export_info(folder, path)
    cfg = runfile.run_config(info["config"], overrides, command, usage, eval_sets=False)
    cfg.task.kind = info["kind"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
        config = GPT2Config.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise UserError(f"ckpt={path}: the folder's tokenizer or config.json cannot be loaded ({reason}). "
                        "Fix: export the run again.") from None
    setup_pad_token(tokenizer)  # right padding; pad = eos if the export had none
    run = runspec.parse(cfg)
    (task_spec,) = run.tasks.values()
    datamodule = build_datamodule(run, task_spec, tokenizer, config, label_space=LabelSpace(**info["label_space"]))
    spec = dataclasses.replace(run.model, name_or_path=str(folder), gradient_checkpointing=False)
    # Exports are merged: the plain HF head, no LoRA wrapping, whatever the run's peft config says.
    model = build_model(KINDS[info["kind"]].head, spec, config, tokenizer, from_checkpoint=True)
    run_info = {key: info[key] for key in ("kind", "config", "label_space", "new_token_ids") if key in info}
    return cfg, datamodule, build_module(run, task_spec, model, datamodule, run_info, check_monitor=False)
