"""One LightningModule over several task modules that share one GPT-2 backbone.

`self.model` is a ModuleDict of ordinary single-task modules (`TaskModule` subclasses), one per
task; their HF heads' `transformer` is the same `GPT2Model` object (see build.build_heads), so
the optimizer, gradient clipping and checkpoints see the backbone once (parameters are de-duplicated
by identity). A training batch carries its task's name (`batch["task"]`); the step runs that task's
module on it, scaled by the task's loss weight. Evaluation runs every task's eval sets, each with
its own module's exact metrics, logged as `<task>/<eval set>/<metric>`, plus `val/mean` (and
`test/mean`): the weighted mean of each task's own monitored metric.

With one LoRA adapter set per task (`adapters="per_task"`), each step first routes the backbone
through its task's set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gpt2tasks import lora
from gpt2tasks.backbone import count_parameters
from gpt2tasks.tasks.base import EvalSpec, OptimSpec, TaskModule


class MultiTaskModule(TaskModule):
    def __init__(self, tasks: dict[str, TaskModule], optim: OptimSpec, run_info: dict | None = None, *,
                 main_metrics: dict[str, str], loss_weights: dict[str, float] | None = None,
                 monitor_weights: dict[str, float] | None = None, per_task_adapters: bool = False,
                 report_mean: bool = True):
        super().__init__(nn.ModuleDict(tasks), optim, EvalSpec(metrics=[], eval_sets=["val"]), run_info)
        self.main_metrics = main_metrics  # task -> its own monitored metric (e.g. "accuracy")
        self.loss_weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in tasks}
        self.monitor_weights = {name: float((monitor_weights or {}).get(name, 1.0)) for name in tasks}
        self.per_task_adapters = per_task_adapters
        self.report_mean = report_mean  # false when the tasks' metrics go opposite ways (no meaningful mean)
        # The shared backbone, kept aside (a list: not registered again as a submodule): export
        # gives single heads backbones of their own, and adapters are switched on this one.
        self._backbone = [next(iter(tasks.values())).backbone]

    @property
    def tasks(self) -> dict[str, TaskModule]:
        return dict(self.model.items())

    @property
    def backbone(self) -> nn.Module:
        return self._backbone[0]

    def task_module(self, name: str) -> TaskModule:
        """Task `name`'s own module, ready to use alone (its adapter set active): what `eval`,
        `predict` and `export` run for `task=<name>`."""
        self.activate(name)
        module = self.tasks[name]
        module.task_datamodule = None  # alone, it reads the datamodule of the Trainer that runs it
        return module

    def headline(self, metrics: dict[str, float], monitor: str) -> dict[str, float]:
        """The monitored metric, then per split (validation, then test) the mean and each task's own
        monitored metric (metrics.json has the rest)."""
        main = [k for k in metrics if k.endswith("/mean") or k.split("/")[-1] == self.main_metrics.get(k.split("/")[0])]
        split = lambda key: key.split("/")[-2].split("_")[0]  # noqa: E731  (val, val_<name> -> val; test)
        main.sort(key=lambda k: (k != monitor, split(k) == "test", not k.endswith("/mean")))  # stable: task order
        return {k: metrics[k] for k in main}

    def activate(self, name: str) -> None:
        if self.per_task_adapters:
            lora.activate(self.backbone, name)

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        name = batch["task"]
        self.activate(name)
        task_loss, _ = self.tasks[name].step(batch)
        size = batch["input_ids"].shape[0]
        self.log(f"{name}/train/loss", task_loss, batch_size=size)
        loss = self.loss_weights[name] * task_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        # The task and its own loss go to the run's MetricHistory (per-task curves), read on the
        # host with the other losses, not now.
        return {"loss": loss, "task": name, "task_loss": task_loss.detach()}

    # ---- evaluation ---------------------------------------------------------------------------
    def _plan(self, split: str) -> list[tuple[str, str]]:
        datamodule = self.trainer.datamodule
        return datamodule.eval_plan if split == "val" else datamodule.test_plan

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

    def on_test_epoch_end(self) -> None:
        self._finish_tasks("test")

    def _finish_tasks(self, split: str) -> None:
        main: dict[str, float] = {}
        for i, (name, eval_set) in enumerate(self._plan(split)):
            metrics = self.tasks[name].eval_metrics(self._outputs.get(i, []), eval_set)
            self.publish({f"{name}/{eval_set}/{k}": v for k, v in metrics.items()})
            if eval_set == split and self.main_metrics[name] in metrics:
                main[name] = metrics[self.main_metrics[name]] / self.tasks[name].metric_scale
        if main and self.report_mean:
            weights = {name: self.monitor_weights[name] for name in main}
            score = sum(weights[n] * main[n] for n in main) / max(sum(weights.values()), 1e-12)
            self.publish({f"{split}/mean": score}, shown="val/mean")
        self._outputs = {}

    @property
    def latest_predictions(self) -> dict[str, dict[str, str]]:
        """QA tasks' predicted answers, per `<task>_<eval set>` (files <task>_<set>_predictions.json)."""
        return {f"{name}_{eval_set}": by_id for name, module in self.tasks.items()
                for eval_set, by_id in getattr(module, "latest_predictions", {}).items()}

    def parameter_summary(self) -> str:
        trainable, total = count_parameters(self.model)
        _, backbone = count_parameters(self.backbone)
        heads = ", ".join(f"{name} {type(m.model).__name__} head {count_parameters(m.model)[1] - backbone:,}"
                          for name, m in self.tasks.items())
        return (f"{trainable:,} trainable / {total:,} parameters ({100 * trainable / max(total, 1):.2f}%): one "
                f"backbone of {backbone:,} shared by {len(self.tasks)} heads ({heads}); {lora.describe(self.model)}")
