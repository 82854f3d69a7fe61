"""The run spec: a composed config parsed once into typed, frozen values.

`parse(cfg)` is the first thing gpt2tasks.build does with a (validated) config: the backbone, the
adapters, the optimizer, the seed and precision, how the tasks mix, and per task its kind, data
options, metrics and evaluation options. Everything build makes takes the spec, not the config, so
a value is read (and typed) in one place, and nothing below can change it: the specs are frozen
dataclasses (a derived value is a `dataclasses.replace` copy).

A key of a block that its spec does not declare is an error here, never dropped: gpt2tasks.keys
refuses unknown keys when the config is composed, and this is the same rule where the values are
used (a config built by hand and given to `train(cfg)`, a saved config edited by hand).

A run is N >= 1 tasks: `task=<preset>` is one task named `task.name`, `task=multitask` the listed
ones (gpt2tasks.multitask makes each task's single-task view of the config).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from omegaconf import DictConfig

from gpt2tasks import multitask
from gpt2tasks.backbone import ModelSpec
from gpt2tasks.config import block, normalize_precision, plain
from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.errors import UserError
from gpt2tasks.lora import LoraSpec
from gpt2tasks.tasks import KINDS
from gpt2tasks.tasks.base import OptimSpec

# task.* keys every kind reads; a kind's own (task.tag_scheme, ...) are its `eval_options`.
TASK_KEYS = ("name", "kind", "problem_type", "label_names", "metrics", "monitor", "mode")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the run: what its `task:` and `data:` blocks say."""

    name: str
    kind: str
    data: DataSpec
    metrics: tuple[str, ...]
    monitor: str  # "<eval set>/<metric>": the metric that picks the task's best checkpoint
    mode: str  # min | max
    problem_type: str
    label_names: tuple[str, ...] | None
    options: Mapping[str, Any]  # the kind's evaluation options, defaults filled in
    config: Mapping[str, Any]  # the task as a single-task run's config (resolved): saved in checkpoints

    @property
    def main_metric(self) -> str:
        """The monitored metric's name: 'val/accuracy' -> 'accuracy'."""
        return self.monitor.split("/", 1)[1]


@dataclass(frozen=True)
class MixSpec:
    """How the tasks of a run share training (multitask.*; one task: the defaults, unused)."""

    sampling: str = "proportional"
    temperature: float = 2.0
    loss_weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    monitor_weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    adapters: str = "shared"  # with peft=lora: one adapter set for every task, or one per task


@dataclass(frozen=True)
class RunSpec:
    seed: int
    precision: str  # Lightning's name (config.normalize_precision)
    model: ModelSpec
    peft: LoraSpec
    optim: OptimSpec
    tasks: Mapping[str, TaskSpec]  # in the run's order
    mixing: MixSpec
    multitask: bool  # task=multitask: metric names and folders carry the task's name
    monitor: str  # the run's checkpoint metric (task.monitor: a task's own, or val/mean)
    mode: str

    @property
    def per_task_adapters(self) -> bool:
        return self.peft.enabled and self.mixing.adapters == "per_task"


def parse(cfg: DictConfig) -> RunSpec:
    """The run spec of a composed (and validated: config.validate_config) config."""
    mix = multitask.mixing(cfg)
    return RunSpec(
        seed=int(cfg.seed),
        precision=normalize_precision(cfg.precision),
        model=block(ModelSpec, cfg.model, "model"),
        # Checkpoints written before LoRA existed have no peft block: full fine-tuning.
        peft=block(LoraSpec, cfg.peft, "peft") if cfg.get("peft") is not None else LoraSpec(),
        optim=block(OptimSpec, cfg.optim, "optim"),
        tasks=MappingProxyType({name: task_spec(view, f"tasks.{name}." if mix is not None else "")
                                for name, view in multitask.task_views(cfg).items()}),
        mixing=MixSpec() if mix is None else MixSpec(
            sampling=mix.sampling, temperature=float(mix.temperature), adapters=mix.adapters,
            loss_weights=MappingProxyType(dict(mix.loss_weights)),
            monitor_weights=MappingProxyType(dict(mix.monitor_weights))),
        multitask=mix is not None,
        monitor=str(cfg.task.monitor),
        mode=str(cfg.task.mode),
    )


def task_spec(view: DictConfig, where: str = "") -> TaskSpec:
    """One task from its single-task view of the config (multitask.task_view; a single-task run's
    config is its own view). `where`: how errors name the task's keys ("tasks.<name>." in a
    multi-task run)."""
    kind = KINDS[str(view.task.kind)]
    task = plain(view.task)
    unknown = [key for key in task if key not in TASK_KEYS and key not in kind.module.eval_options]
    if unknown:
        raise UserError(f"{where}task.{unknown[0]}: not a key of a {view.task.kind} task (it reads "
                        f"{', '.join([*TASK_KEYS, *kind.module.eval_options])}). Fix: remove it or correct its name.")
    return TaskSpec(
        name=str(task["name"]), kind=str(task["kind"]), data=block(DataSpec, view.data, f"{where}data"),
        metrics=tuple(task["metrics"]), monitor=str(task["monitor"]), mode=str(task["mode"]),
        problem_type=str(task.get("problem_type", "auto")),
        label_names=None if task.get("label_names") is None else tuple(task["label_names"]),
        options=MappingProxyType(kind.options(view.task)),
        config=MappingProxyType(plain(view)),
    )
