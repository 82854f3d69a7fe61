"""Check a composed config before any work: gather every problem, raise one error naming each key.

Only checks that need neither data nor model live here (plus `check_epoch_length`, which needs the
number of training batches); problems found while loading them (missing columns, unknown labels, a
Hub model offline) are raised where they are found, also as UserError. Keys that nothing reads
(typos, keys added with Hydra's `+`) are gpt2tasks.keys' to find; validate_config lists them too.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gpt2tasks import multitask
from gpt2tasks.errors import UserError
from gpt2tasks.keys import default_config, key_problems, own_key_problems, trainer_keywords
from gpt2tasks.literal import file_name_problem

# `train --help` imports this module: what imports torch (the kind registry, typed specs, lora,
# strategies, lightning) is imported inside the functions that need it.

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true")
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}
LOGGERS = ("csv", "tensorboard", "wandb", "none")
# Loggers whose package is an optional extra (pyproject.toml): the extra, and the modules that serve
# (Lightning's TensorBoardLogger writes with `tensorboard` or, without it, `tensorboardX`).
LOGGER_EXTRAS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def normalize_precision(value) -> str:
    text = str(value)
    return _PRECISION_ALIASES.get(text, text)


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def block(cls, node: Any, key: str):
    """A typed spec (ModelSpec, LoraSpec, DataSpec, ...) from its config block `key`: every key of
    the block must be a field (gpt2tasks.runspec: unknown keys are an error, never dropped)."""
    values = plain(node)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise UserError(f"{key}.{unknown[0]}: not a key of {key} (nothing reads it). Fix: remove it or "
                        f"correct its name ({key} has {', '.join(sorted(fields))}).")
    return cls(**values)



def validate_config(cfg: DictConfig, training: bool = False) -> None:
    """Raise one UserError listing every problem of the config: the run's keys once, then each
    task's own blocks (in a multi-task run named tasks.<name>.*). `training`: also the run
    folder's keys (output_dir, overwrite), which eval/predict do not use."""
    tasks = multitask.problems(cfg)  # multitask.* (none in a single-task run): sound before the tasks are named
    problems = key_problems(cfg) + (output_problems(cfg) + logger_problems(cfg) if training else []) + tasks
    for name, view in (multitask.task_views(cfg) if not tasks else {}).items():
        if view is cfg:  # a single-task run: its task is the config itself
            problems += task_problems(cfg)
        else:
            problems += own_key_problems(view, name)
            problems += [f"tasks.{name}: {p}" for p in task_problems(view)]
    problems += run_problems(cfg)
    if problems:
        if len(problems) == 1:
            raise UserError(problems[0])
        raise UserError(f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems))


class Problems(list):
    """The messages gathered so far; `need(ok, message)` adds the message when a check fails."""

    def need(self, ok: bool, message: str) -> None:
        if not ok:
            self.append(message)


def task_problems(cfg: DictConfig) -> list[str]:
    """Problems of what one task says: task.* and data.* (the kind's own checks: its registry entry)."""
    from gpt2tasks.tasks import KINDS

    problems = Problems()
    need = problems.need
    task, data = cfg.task, cfg.data
    need(task.kind in KINDS, f"task.kind={task.kind!r} is not a known head kind ({', '.join(KINDS)}, multitask).")
    need(task.mode in ("min", "max"), f"task.mode={task.mode!r} must be min or max.")
    need(OmegaConf.is_list(task.metrics), f"task.metrics={task.metrics!r} must be a list. Fix: e.g. task.metrics=[accuracy].")
    need(task.label_names is None or OmegaConf.is_list(task.label_names),
         f"task.label_names={task.label_names!r} must be a list of class names or null. Fix: e.g. "
         "task.label_names=[negative,positive].")
    monitor = str(task.monitor)
    need("/" in monitor, f"task.monitor={monitor!r} must look like '<eval set>/<metric>', e.g. val/accuracy.")
    if "/" in monitor:
        metric = monitor.split("/", 1)[1]
        need(metric == "loss" or metric in list(task.metrics),
             f"task.monitor={monitor!r}: {metric!r} is not computed (task.metrics={list(task.metrics)}). "
             "Fix: add it to task.metrics or monitor one of them, or val/loss with task.mode=min.")
    if task.kind in KINDS:
        problems += KINDS[task.kind].problems(task, data)
    for key in ("batch_size", "max_length"):
        need(_is_int(data[key]) and data[key] >= 1, f"data.{key}={data[key]!r} must be a positive integer.")
    need(data.eval_batch_size is None or (_is_int(data.eval_batch_size) and data.eval_batch_size >= 1),
         f"data.eval_batch_size={data.eval_batch_size!r} must be a positive integer or null.")
    need(_is_int(data.num_workers) and data.num_workers >= 0, "data.num_workers must be >= 0.")
    strategy = data.get("sample_strategy", "first")  # a config saved before the key existed: its default
    need(strategy in ("first", "random"),
         f"data.sample_strategy={strategy!r} must be first (the first max_*_samples rows) or random (that many "
         "rows drawn with data.sample_seed).")
    need(data.validation_fraction is None or (_is_number(data.validation_fraction) and 0 < data.validation_fraction < 1),
         f"data.validation_fraction={data.validation_fraction!r} must be between 0 and 1.")
    from gpt2tasks.datamodules.base import DataSpec

    checked = ("batch_size", "max_length", "eval_batch_size", "num_workers", "validation_fraction", "block_size",
               "sample_strategy")
    typed = typed_problems(cfg, "data", DataSpec)
    problems += [p for p in typed if p.split("=")[0].removeprefix("data.") not in checked]  # those: above
    if not typed:  # ranges of the values that have the right type
        for key in ("max_train_samples", "max_eval_samples", "pad_to_multiple_of"):
            need(data[key] is None or data[key] >= 1, f"data.{key}={data[key]!r} must be a positive integer or null "
                                                      f"(null: {'no padding multiple' if key.startswith('pad') else 'every row'}).")
        need(0 <= data.max_bad_answer_fraction <= 1,
             f"data.max_bad_answer_fraction={data.max_bad_answer_fraction} must be a fraction in [0, 1].")
    extra = data.get("extra_validation")
    for name in extra if OmegaConf.is_dict(extra) else ():  # val_<name>_predictions.json, logged as val_<name>/...
        problem = file_name_problem(name)
        need(problem is None, f"data.extra_validation.{name}: the name {name!r} {problem}, and it becomes part of "
                              "file names. Fix: name the eval set with letters, digits, '-' or '_'.")
    for key in ("train_file", "validation_file", "test_file"):
        path = data[key]
        if path and not os.path.isfile(os.path.expanduser(str(path))):
            problems.append(f"data.{key}={path}: file not found (relative paths start at {os.getcwd()}). "
                            "Fix: check the path.")
    return problems


def model_problems(cfg: DictConfig) -> list[str]:
    """model.* values of the types ModelSpec declares; model.arch sizes GPT2Config can build."""
    from gpt2tasks.backbone import ModelSpec

    problems = Problems()
    problems += typed_problems(cfg, "model", ModelSpec)
    arch = OmegaConf.to_container(cfg.model.arch, resolve=True) if OmegaConf.is_dict(cfg.model.get("arch")) else {}
    sizes = {k: v for k, v in arch.items() if k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
             and v is not None}
    bad = {k: v for k, v in sizes.items() if not (_is_int(v) and v >= 1)}
    problems.need(not bad, f"model.arch: {bad} must be positive integers. Fix: e.g. model.arch.n_layer=2.")
    if not bad and "n_embd" in sizes and "n_head" in sizes:
        problems.need(sizes["n_embd"] % sizes["n_head"] == 0,
                      f"model.arch.n_embd={sizes['n_embd']} must be a multiple of model.arch.n_head={sizes['n_head']} "
                      f"(each head gets n_embd / n_head dimensions). Fix: e.g. "
                      f"model.arch.n_head={_divisor(sizes['n_embd'], sizes['n_head'])}.")
    return problems


def output_problems(cfg: DictConfig) -> list[str]:
    """output_dir: not empty, and never a folder whose removal takes the user's other files with
    it (overwrite=true empties output_dir)."""
    problems = Problems()
    out = str(cfg.output_dir or "").strip()
    problems.need(bool(out), "output_dir is empty. Fix: output_dir=<folder for this run>, or leave it out "
                             "(outputs/<task>/<time>).")
    if cfg.overwrite is True and out:
        from gpt2tasks.outputs import protected_reason  # the one policy of what is never replaced

        reason = protected_reason(Path(out))
        problems.need(reason is None, f"output_dir={cfg.output_dir} is {reason}: overwrite=true would delete everything "
                                      "in it. Fix: output_dir=<a folder of its own>.")
    return problems


def logger_problems(cfg: DictConfig) -> list[str]:
    """A logger whose optional package is not installed: refused before any work, with the extra
    that installs it (Lightning would fail when fit starts, naming only the module)."""
    import importlib.util

    kind = cfg.logger.kind
    modules = LOGGER_EXTRAS.get(kind, ())
    if not modules or any(importlib.util.find_spec(m) is not None for m in modules):
        return []
    others = "|".join(k for k in LOGGERS if k != kind)
    return [f"logger={kind} needs the `{modules[0]}` package, which is not installed. Fix: pip install "
            f"'gpt2tasks[{kind}]' (or pip install {modules[0]}), or choose another logger: logger={others}."]


def run_problems(cfg: DictConfig) -> list[str]:
    """Problems of what the whole run shares: precision, optim.*, trainer.*, peft.*, logger."""
    from gpt2tasks.tasks.base import SCHEDULERS

    problems = Problems()
    need = problems.need
    optim, trainer = cfg.optim, cfg.trainer
    precision = normalize_precision(cfg.precision)
    need(precision in PRECISIONS, f"precision={cfg.precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "16-mixed":
        import torch

        need(torch.cuda.is_available() and trainer.accelerator in ("auto", "gpu", "cuda"),
             "precision=16-mixed needs a CUDA GPU (fp16 autocast on CPU is not supported). "
             "Fix: precision=bf16-mixed on CPU, or run on a GPU.")
    need(_is_number(optim.lr) and optim.lr > 0, f"optim.lr={optim.lr!r} must be a positive number.")
    need(_is_number(optim.weight_decay) and optim.weight_decay >= 0, "optim.weight_decay must be >= 0.")
    need(_is_number(optim.warmup_ratio) and 0 <= optim.warmup_ratio < 1,
         f"optim.warmup_ratio={optim.warmup_ratio!r} must be in [0, 1).")
    need(optim.scheduler in SCHEDULERS, f"optim.scheduler={optim.scheduler!r} is not one of {SCHEDULERS}.")
    need(optim.max_grad_norm is None or (_is_number(optim.max_grad_norm) and optim.max_grad_norm > 0),
         "optim.max_grad_norm must be positive or null (no clipping).")
    from gpt2tasks.tasks.base import OptimSpec

    typed = typed_problems(cfg, "optim", OptimSpec)
    problems += [p for p in typed if p.split("=")[0] in ("optim.betas", "optim.eps", "optim.fused")]  # others: above
    if not typed:
        need(all(0 <= b < 1 for b in optim.betas), f"optim.betas={list(optim.betas)} must both be in [0, 1). "
                                                   "Fix: e.g. optim.betas=[0.9,0.999].")
        need(optim.eps > 0, f"optim.eps={optim.eps} must be positive. Fix: e.g. optim.eps=1e-8.")
    problems += model_problems(cfg)
    need(_is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED,
         f"seed={cfg.seed!r} must be an integer from 0 to {MAX_SEED} (2**32 - 1). Fix: e.g. seed=42.")
    for key in ("overwrite", "resume"):
        need(isinstance(cfg[key], bool), f"{key}={cfg[key]!r} must be true or false.")
    checkpoint = cfg.get("checkpoint") or {}
    if "save_top_k" in checkpoint:
        need(_is_int(checkpoint.save_top_k) and checkpoint.save_top_k >= -1,
             f"checkpoint.save_top_k={checkpoint.save_top_k!r} must be an integer >= -1 (-1: keep all, 0: none).")
    for key, value in checkpoint.items():
        if isinstance(default_config()["checkpoint"].get(key), bool):
            need(isinstance(value, bool), f"checkpoint.{key}={value!r} must be true or false.")
    peak = (cfg.get("throughput") or {}).get("peak_tflops")
    need(peak is None or (_is_number(peak) and peak > 0),
         f"throughput.peak_tflops={peak!r} must be a positive number of TFLOP/s or null.")

    problems += trainer_problems(trainer)
    if cfg.get("peft") is not None:
        from gpt2tasks.lora import LoraSpec, check_spec

        try:
            problems += check_spec(block(LoraSpec, cfg.peft, "peft"))
        except UserError as exc:  # a key LoraSpec does not have (keys.key_problems names it too)
            problems.append(str(exc))
    need(cfg.logger.kind in LOGGERS, f"logger.kind={cfg.logger.kind!r} is not one of {LOGGERS}.")
    need(not (cfg.resume and cfg.overwrite), "resume=true and overwrite=true contradict each other. Fix: pick one.")
    return problems


#: the largest seed numpy's RandomState and Lightning's seed_everything accept (uint32; 0 is the smallest)
MAX_SEED = 2**32 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- trainer.* values ---------------------------------------------------------------------------------
# Trainer keywords gpt2tasks sets itself, so a trainer.* value would be ignored: what to use instead.
OWNED_TRAINER_KEYS = {
    "precision": "precision=<32-true|bf16-mixed|bf16-true|16-mixed> (a top-level key)",
    "logger": "logger=csv|tensorboard|wandb|none",
    "default_root_dir": "output_dir=<folder>",
    "enable_checkpointing": "checkpoint.save_top_k / checkpoint.save_last",
    "use_distributed_sampler": "nothing: gpt2tasks shards its length-grouped batches by rank itself",
    "callbacks": "nothing: callbacks are Python objects (pass them to gpt2tasks.train.train(cfg, callbacks))",
    "plugins": "nothing: plugins are Python objects",
}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value (None, bool, int, float, str, list, dict) is of type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(hint).__name__ == "UnionType"):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:  # a config holds a list: tuple[float, float] is a list of two numbers
        return isinstance(value, list) and len(value) == len(args) and all(map(_fits, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if isinstance(hint, type) and hint is not Any:
        return isinstance(value, hint)  # an object type (Accelerator, timedelta): never a config value
    return True  # a hint this check does not model: Lightning decides


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(hint).__name__ == "UnionType"):
        parts = [_describe(a) for a in args]
        return " or ".join(dict.fromkeys(p for p in parts if p))  # object types say nothing: left out
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict:
        return "a mapping"
    return ""


def typed_problems(cfg: DictConfig, section: str, spec_class: type) -> list[str]:
    """Values of `section.*` whose type is not the one the typed spec that reads them declares
    (DataSpec, OptimSpec, ...): 'maybe' for a bool, 'abc' for a number, a string for a list."""
    hints = typing.get_type_hints(spec_class)
    values = OmegaConf.to_container(cfg[section], resolve=True)
    return [f"{section}.{key}={value!r} must be {_describe(hints[key])}. Fix: e.g. {section}.{key}="
            f"{_example_value(getattr(spec_class(), key))}."
            for key, value in values.items() if key in hints and not _fits(value, hints[key])]


def _example_value(default: Any) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if default is None:
        return "null"
    if isinstance(default, (list, tuple)):
        return "[" + ",".join(map(str, default)) + "]"
    return str(default)


def trainer_problems(trainer: DictConfig) -> list[str]:
    """trainer.* values: of the type lightning.Trainer takes and in its range, checked here so that
    a bad value stops the run before anything is written (Lightning itself would fail mid-setup, or
    divide by zero, e.g. accumulate_grad_batches=0)."""
    from gpt2tasks.strategies import OPTION_KEYS

    problems = Problems()
    need = problems.need
    values = OmegaConf.to_container(trainer, resolve=True)
    hints = trainer_keywords()
    typed = {}  # the values of the right type: the range checks below look only at these
    for key, value in values.items():
        if key in OWNED_TRAINER_KEYS:
            problems.append(f"trainer.{key} is set by gpt2tasks, so trainer.{key}={value!r} would be ignored. "
                            f"Fix: remove it; use {OWNED_TRAINER_KEYS[key]}.")
        elif key in hints and key not in OPTION_KEYS:
            if _fits(value, hints[key]):
                typed[key] = value
            else:
                problems.append(f"trainer.{key}={value!r} must be {_describe(hints[key])} (lightning.Trainer's "
                                f"{key} argument). Fix: e.g. trainer.{key}={_example(key, hints[key])}.")

    def positive(key: str, allow_none: bool = False, at_least: int = 1, note: str = "") -> None:
        if key not in typed or (allow_none and typed[key] is None):
            return
        need(typed[key] is not None and typed[key] >= at_least,
             f"trainer.{key}={typed[key]!r} must be an integer >= {at_least}{' or null' if allow_none else ''}"
             f"{note}. Fix: e.g. trainer.{key}={max(at_least, 1)}.")

    positive("accumulate_grad_batches", note=" (batches per optimizer step)")
    positive("num_nodes")
    positive("log_every_n_steps", allow_none=True)
    positive("check_val_every_n_epoch", allow_none=True,
             note=" (null: validate every trainer.val_check_interval batches, counted across epochs)")
    positive("num_sanity_val_steps", allow_none=True, at_least=-1, note=" (-1: the whole validation set)")
    positive("min_epochs", allow_none=True, at_least=0)
    positive("min_steps", allow_none=True, at_least=0)
    positive("reload_dataloaders_every_n_epochs", at_least=0)
    max_epochs, max_steps = typed.get("max_epochs", trainer.get("max_epochs")), typed.get("max_steps", -1)
    if "max_epochs" in typed and max_epochs is not None:
        need(max_epochs >= -1, f"trainer.max_epochs={max_epochs} must be a positive integer (-1: no limit, with "
                               "trainer.max_steps). Fix: e.g. trainer.max_epochs=3.")
    if "max_steps" in typed:
        need(max_steps == -1 or max_steps >= 1, f"trainer.max_steps={max_steps} must be a positive integer or -1 "
                                                "(no limit: trainer.max_epochs decides). Fix: e.g. trainer.max_steps=1000.")
    if "max_epochs" not in values or "max_epochs" in typed:
        need((_is_int(max_steps) and max_steps > 0) or (_is_int(max_epochs) and max_epochs > 0),
             "trainer.max_epochs and trainer.max_steps are both unset/non-positive: training would never stop "
             "or never start. Fix: trainer.max_epochs=3 or trainer.max_steps=1000.")
    devices = typed.get("devices")
    if devices is not None:
        ok = (devices == -1 or devices >= 1) if _is_int(devices) else (
            all(_is_int(d) and d >= 0 for d in devices) and len(devices) > 0 if isinstance(devices, list)
            else devices == "auto" or devices.strip() == "-1" or _device_list(devices))
        need(ok, f"trainer.devices={devices!r} is not a number of devices. Fix: trainer.devices=1 (or N >= 1, -1 / "
                 "auto for every device, or device indices such as [0,1] or \"0,1\").")
    for key in ("gradient_clip_val", "overfit_batches"):
        if typed.get(key) is not None:
            need(typed[key] >= 0, f"trainer.{key}={typed[key]} must be >= 0. Fix: e.g. trainer.{key}=0.")
    if typed.get("gradient_clip_algorithm") is not None:
        need(typed["gradient_clip_algorithm"] in ("norm", "value"),
             f"trainer.gradient_clip_algorithm={typed['gradient_clip_algorithm']!r} must be norm or value.")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
        limit = typed.get(key)
        if limit is None:
            continue
        # 0 batches: nothing trained, or no validation (so no best checkpoint and no metrics)
        ok = (limit >= 1) if _is_int(limit) else 0 < limit <= 1
        need(ok, f"trainer.{key}={limit!r} must be a number of batches >= 1 or a fraction of them in (0, 1]. "
                 f"Fix: e.g. trainer.{key}=0.25 or trainer.{key}=100, or remove it (null: all batches).")
    interval = typed.get("val_check_interval")
    if _is_number(interval):
        ok = (interval >= 1) if _is_int(interval) else 0 < interval <= 1
        need(ok, f"trainer.val_check_interval={interval!r} must be a number of training batches >= 1 or a fraction "
                 "of an epoch in (0, 1]. Fix: e.g. trainer.val_check_interval=0.5 (twice an epoch) or 100.")
    max_time = typed.get("max_time")
    if isinstance(max_time, str):
        parts = max_time.split(":")
        need(len(parts) == 4 and all(p.strip().isdigit() for p in parts),
             f"trainer.max_time={max_time!r} must be DD:HH:MM:SS. Fix: e.g. trainer.max_time=00:12:00:00 (12 hours).")
    fast = typed.get("fast_dev_run")
    if _is_int(fast):
        need(fast >= 0, f"trainer.fast_dev_run={fast} must be true/false or a number of batches >= 0.")
    return problems


def _divisor(n: int, near: int) -> int:
    """The divisor of n closest to `near` (a head count that fits)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))


def _device_list(text: str) -> bool:
    """ "0,1" or "0," (Lightning's device indices) or "2" (a count)."""
    items = [t.strip() for t in text.split(",")]
    return any(items) and all(t.isdigit() for t in items if t) and (len(items) > 1 or int(items[0]) >= 1)


def _example(key: str, hint: Any) -> str:
    defaults = {"max_epochs": 3, "max_steps": 1000, "devices": 1, "accumulate_grad_batches": 4,
                "val_check_interval": 0.5, "gradient_clip_val": 1.0, "deterministic": "true"}
    if key in defaults:
        return str(defaults[key])
    if _fits(True, hint) and not _fits(1, hint):
        return "true"
    return "1" if _fits(1, hint) else "<value>"


def check_epoch_length(cfg: DictConfig, trainer, datamodule) -> None:
    """trainer.val_check_interval given in batches must fit in one epoch's training batches (as
    Lightning counts them on this rank, after trainer.limit_train_batches); Lightning would refuse
    it only once fit has started. Needs the datamodule set up and the Trainer built."""
    interval = trainer.val_check_interval
    if not _is_int(interval) or trainer.check_val_every_n_epoch is None:
        return
    batches = epoch_batches(trainer, datamodule)
    if interval > batches:
        per = f" on each of {trainer.world_size} devices" if trainer.world_size > 1 else ""
        raise UserError(f"trainer.val_check_interval={interval} is more than the {batches} training batches of an "
                        f"epoch{per} (data.batch_size={cfg.data.batch_size}), so Lightning would refuse it once "
                        f"training started. Fix: trainer.val_check_interval={batches} or less, a fraction of an "
                        "epoch (e.g. 0.5), or trainer.check_val_every_n_epoch=null to count batches across epochs.")


def epoch_batches(trainer, datamodule) -> int:
    """The training batches of an epoch on this rank, as Lightning counts them (after
    trainer.limit_train_batches). Needs the datamodule set up and the Trainer built."""
    import logging

    datamodule.trainer = trainer  # the batches this rank gets (Lightning sets it again in fit)
    datamodules = logging.getLogger("gpt2tasks.datamodules")
    level = datamodules.level
    datamodules.setLevel(logging.WARNING)  # counted here; how they are made is said when fit makes them
    try:
        batches = len(datamodule.train_dataloader())
    finally:
        datamodules.setLevel(level)
    limit = trainer.limit_train_batches
    return min(batches, limit) if _is_int(limit) else int(batches * limit)


def fit_log_interval(trainer, datamodule) -> None:
    """trainer.log_every_n_steps longer than an epoch: Lightning would log no training step within
    an epoch (and warn that the number of training batches is smaller than the logging interval), and
    the progress lines would wait as long. It is clamped to the epoch's length, said once."""
    if trainer.fast_dev_run or not trainer.log_every_n_steps:
        return
    batches = epoch_batches(trainer, datamodule)
    if 0 < batches < trainer.log_every_n_steps:
        import logging

        logging.getLogger("gpt2tasks").info(
            "trainer.log_every_n_steps=%d is more than the %d training batches of an epoch: logging every %d steps.",
            trainer.log_every_n_steps, batches, batches)
        trainer.log_every_n_steps = batches
