"""Check a composed config before any work: gather every problem, raise one error naming each key.

Only checks that need neither data nor model live here; problems found while loading them (missing
columns, unknown labels, a Hub model offline) are raised where they are found, also as UserError.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from gpt2tasks.errors import UserError

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true")
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}
LOGGERS = ("csv", "tensorboard", "wandb", "none")


def normalize_precision(value) -> str:
    text = str(value)
    return _PRECISION_ALIASES.get(text, text)


def validate_config(cfg: DictConfig) -> None:
    """Raise one UserError listing every problem of the config (for a multi-task run: the shared
    keys once, then each task's own blocks, named tasks.<name>.*)."""
    from gpt2tasks import multitask

    if multitask.is_multitask(cfg):
        problems = multitask.check(cfg, task_problems) + run_problems(cfg)
    else:
        problems = task_problems(cfg) + run_problems(cfg)
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
    """Problems of what one task says: task.* and data.*."""
    from gpt2tasks.tasks import KINDS  # late: importing tasks pulls in transformers

    problems = Problems()
    need = problems.need
    task, data = cfg.task, cfg.data
    need(task.kind in KINDS, f"task.kind={task.kind!r} is not a known head kind ({', '.join(KINDS)}, multitask).")
    if task.kind in KINDS:
        from gpt2tasks.build import eval_options

        problems += KINDS[task.kind].module.check_options(eval_options(cfg))
    need(task.mode in ("min", "max"), f"task.mode={task.mode!r} must be min or max.")
    monitor = str(task.monitor)
    need("/" in monitor, f"task.monitor={monitor!r} must look like '<eval set>/<metric>', e.g. val/accuracy.")
    if "/" in monitor:
        metric = monitor.split("/", 1)[1]
        need(metric == "loss" or metric in list(task.metrics),
             f"task.monitor={monitor!r}: {metric!r} is not computed (task.metrics={list(task.metrics)}). "
             "Fix: add it to task.metrics or monitor one of them, or val/loss with task.mode=min.")
    if task.kind == "seq_cls" and task.problem_type != "auto":
        from gpt2tasks.metrics import available_metrics

        unknown = [m for m in task.metrics if m not in available_metrics(task.problem_type)]
        need(not unknown, f"task.metrics: {unknown} are not metrics for {task.problem_type} "
                          f"(valid: {', '.join(available_metrics(task.problem_type))}).")

    if task.kind == "lm":  # the upper bound (the model's n_positions) is checked once the model config is known
        need(_is_int(data.block_size) and data.block_size >= 2,
             f"data.block_size={data.block_size!r} must be an integer >= 2 (tokens per row). Fix: e.g. data.block_size=128.")
    for key in ("batch_size", "max_length"):
        need(_is_int(data[key]) and data[key] >= 1, f"data.{key}={data[key]!r} must be a positive integer.")
    need(data.eval_batch_size is None or (_is_int(data.eval_batch_size) and data.eval_batch_size >= 1),
         f"data.eval_batch_size={data.eval_batch_size!r} must be a positive integer or null.")
    need(_is_int(data.num_workers) and data.num_workers >= 0, "data.num_workers must be >= 0.")
    need(data.validation_fraction is None or 0 < data.validation_fraction < 1,
         f"data.validation_fraction={data.validation_fraction!r} must be between 0 and 1.")
    for key in ("train_file", "validation_file", "test_file"):
        path = data[key]
        if path and not os.path.isfile(os.path.expanduser(str(path))):
            problems.append(f"data.{key}={path}: file not found (relative paths start at {os.getcwd()}). "
                            "Fix: check the path.")
    return problems


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

    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    need((max_steps is not None and max_steps > 0) or (max_epochs is not None and max_epochs > 0),
         "trainer.max_epochs and trainer.max_steps are both unset/non-positive: training would never stop "
         "or never start. Fix: trainer.max_epochs=3 or trainer.max_steps=1000.")
    if cfg.get("peft") is not None:
        from gpt2tasks.build import lora_spec
        from gpt2tasks.lora import check_spec

        problems += check_spec(lora_spec(cfg))
    need(cfg.logger.kind in LOGGERS, f"logger.kind={cfg.logger.kind!r} is not one of {LOGGERS}.")
    need(not (cfg.resume and cfg.overwrite), "resume=true and overwrite=true contradict each other. Fix: pick one.")
    return problems


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
