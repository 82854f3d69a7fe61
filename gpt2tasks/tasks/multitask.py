"""The LightningModule of every run: one or more task modules that share one GPT-2 backbone.

`self.model` is a ModuleDict of ordinary task modules (`TaskModule` subclasses), one per task
(a run of one task has one); their HF heads' `transformer` is the same `GPT2Model` object (see
build.build_heads), so the optimizer, gradient clipping and checkpoints see the backbone once
(parameters are de-duplicated by identity), and a checkpoint's weights are always named
model.<task>.model.<HF name>. A training batch carries its task's name (`batch["task"]`; a run of
one task may be fed batches without it); the step runs that task's module on it, scaled by the
task's loss weight. Evaluation runs every task's eval sets (the plan comes from the tasks' own
datamodules), each with its own module's exact metrics.

What differs between a run of one task and one that lists its tasks (`task=multitask`, even a
single one) is decided by `several` alone: such a run logs `<task>/<eval set>/<metric>` plus
`val/mean` (and `test/mean`, the weighted mean of each task's own monitored metric) and names QA
predictions per task; a run of one task reads exactly as that task's own module: `val/accuracy`,
its headline, its parameter line.

With one LoRA adapter set per task (`adapters="per_task"`), each step first routes the backbone
through its task's set.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from gpt2tasks import lora
from gpt2tasks.backbone import count_parameters
from gpt2tasks.datamodules.multitask import eval_plan
from gpt2tasks.errors import UserError
from gpt2tasks.multitask import module_key
from gpt2tasks.tasks.base import EvalSpec, OptimSpec, TaskModule


class MultiTaskModule(TaskModule):
    def __init__(self, tasks: dict[str, TaskModule], optim: OptimSpec, run_info: dict | None = None, *,
                 main_metrics: dict[str, str], loss_weights: dict[str, float] | None = None,
                 monitor_weights: dict[str, float] | None = None, per_task_adapters: bool = False,
                 report_mean: bool = True, several: bool | None = None):
        keys = [module_key(name) for name in tasks]
        if len(set(keys)) < len(keys):
            raise UserError(f"tasks {', '.join(tasks)}: two of them would share one name in the checkpoint's weights "
                            f"({', '.join(keys)}). Fix: rename one (multitask.tasks=[<name>:<preset>,...]).")
        super().__init__(nn.ModuleDict(dict(zip(keys, tasks.values()))), optim,
                         EvalSpec(metrics=[], eval_sets=["val"]), run_info)
        self.names = list(tasks)  # the tasks' own names (self.model's keys: multitask.module_key of each)
        # (default: whether there are several; a task=multitask run of one task names it too)
        self.several = len(tasks) > 1 if several is None else several
        self.main_metrics = main_metrics  # task -> its own monitored metric (e.g. "accuracy")
        self.loss_weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in tasks}
        self.monitor_weights = {name: float((monitor_weights or {}).get(name, 1.0)) for name in tasks}
        self.per_task_adapters = per_task_adapters
        # false when the tasks' metrics go opposite ways (no meaningful mean)
        self.report_mean = report_mean and self.several
        # The shared backbone, kept aside (a list: not registered again as a submodule): export
        # gives single heads backbones of their own, and adapters are switched on this one.
        self._backbone = [next(iter(tasks.values())).backbone]

    @property
    def tasks(self) -> dict[str, TaskModule]:
        return dict(zip(self.names, self.model.values()))

    def prefix(self, name: str) -> str:
        """What starts task `name`'s metric names: "<task>/" among several, "" alone."""
        return f"{name}/" if self.several else ""

    @property
    def shown(self) -> str | None:
        """The one eval metric on the progress bar: the mean of several tasks, else the task's monitor."""
        return "val/mean" if self.several else next(iter(self.tasks.values())).evaluation.monitor

    def task_of(self, batch: dict[str, Any]) -> str:
        """The task a batch is for: its "task" entry; a run of one task takes batches without it."""
        return batch["task"] if "task" in batch else self.names[0]

    @property
    def backbone(self) -> nn.Module:
        return self._backbone[0]

    @property
    def trainer(self) -> L.Trainer:
        return L.LightningModule.trainer.fget(self)

    @trainer.setter
    def trainer(self, trainer: L.Trainer | None) -> None:
        # Lightning attaches its Trainer to child LightningModules, but not through a ModuleDict:
        # each task module gets it here, so a kind's `after_validation` (LM samples) can read it.
        L.LightningModule.trainer.fset(self, trainer)
        for module in self.model.values():
            module.trainer = trainer

    def task_module(self, name: str) -> TaskModule:
        """Task `name`'s own module, ready to use alone (its adapter set active): what `eval`,
        `predict` and `export` run for one task."""
        self.activate(name)
        module = self.tasks[name]
        module.task_datamodule = None  # alone, it reads the datamodule of the Trainer that runs it
        return module

    def headline(self, metrics: dict[str, float], monitor: str) -> dict[str, float]:
        """One task: that task's headline. Several: the monitored metric, then per split (validation,
        then test) the mean and each task's own monitored metric (metrics.json has the rest)."""
        if not self.several:
            return next(iter(self.tasks.values())).headline(metrics, monitor)
        main = [k for k in metrics if k.endswith("/mean") or k.split("/")[-1] == self.main_metrics.get(k.split("/")[0])]
        split = lambda key: key.split("/")[-2].split("_")[0]  # noqa: E731  (val, val_<name> -> val; test)
        main.sort(key=lambda k: (k != monitor, split(k) == "test", not k.endswith("/mean")))  # stable: task order
        return {k: metrics[k] for k in main}

    def activate(self, name: str) -> None:
        if self.per_task_adapters:
            lora.activate(self.backbone, name)

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        name = self.task_of(batch)
        self.activate(name)
        task_loss, _ = self.tasks[name].step(batch)
        size = len(batch["idx"])  # examples (a packed batch has fewer rows)
        loss = self.loss_weights[name] * task_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        if not self.several:
            return {"loss": loss}
        self.log(f"{name}/train/loss", task_loss, batch_size=size)
        # The task and its own loss go to the run's MetricHistory (per-task curves), read on the
        # host with the other losses, not now.
        return {"loss": loss, "task": name, "task_loss": task_loss.detach()}

    # ---- evaluation ---------------------------------------------------------------------------
    def _plan(self, split: str) -> list[tuple[str, str]]:
        """(task, eval set) of each val / test dataloader, in dataloader order, from the tasks' own
        datamodules (datamodules/multitask.eval_plan, as the run's datamodule orders its loaders)."""
        return eval_plan({name: module.datamodule for name, module in self.tasks.items()}, split)

    def _step_on(self, split: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        name = self._plan(split)[dataloader_idx][0]
        self.activate(name)
        self._keep(self.tasks[name].step(batch)[1], batch, dataloader_idx)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step_on("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step_on("test", batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._finish_tasks("val")
        for module in self.tasks.values():
            module.after_validation()

    def on_test_epoch_end(self) -> None:
        self._finish_tasks("test")

    def _finish_tasks(self, split: str) -> None:
        main: dict[str, float] = {}
        for i, (name, eval_set) in enumerate(self._plan(split)):
            metrics = self.tasks[name].eval_metrics(self._outputs.get(i, []), eval_set)
            self.publish({f"{self.prefix(name)}{eval_set}/{k}": v for k, v in metrics.items()}, shown=self.shown)
            if eval_set == split and self.main_metrics[name] in metrics:
                main[name] = metrics[self.main_metrics[name]] / self.tasks[name].metric_scale
        if main and self.report_mean:
            weights = {name: self.monitor_weights[name] for name in main}
            score = sum(weights[n] * main[n] for n in main) / max(sum(weights.values()), 1e-12)
            self.publish({f"{split}/mean": score}, shown=self.shown)
        self._outputs = {}

    @property
    def latest_predictions(self) -> dict[str, dict[str, str]]:
        """QA tasks' predicted answers, per eval set (files <set>_predictions.json), named
        `<task>_<eval set>` among several tasks."""
        return {f"{name}_{eval_set}" if self.several else eval_set: by_id for name, module in self.tasks.items()
                for eval_set, by_id in getattr(module, "latest_predictions", {}).items()}

    def parameter_summary(self) -> str:
        if not self.several:
            return next(iter(self.tasks.values())).parameter_summary()
        trainable, total = count_parameters(self.model)
        _, backbone = count_parameters(self.backbone)
        heads = ", ".join(f"{name} {type(m.model).__name__} head {count_parameters(m.model)[1] - backbone:,}"
                          for name, m in self.tasks.items())
        return (f"{trainable:,} trainable / {total:,} parameters ({100 * trainable / max(total, 1):.2f}%): one "
                f"backbone of {backbone:,} shared by {len(self.tasks)} heads ({heads}); {lora.describe(self.model)}")
