"""Run-level Lightning callbacks chosen by the config: early stopping, the learning rate in the
logs, and the metric history the run's pictures are drawn from (whatever the logger, even none).
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (EarlyStopping, LearningRateMonitor, ProgressBar, RichProgressBar,
                                         TQDMProgressBar)

from gpt2tasks import compat
from gpt2tasks.errors import UserError


def run_callbacks(cfg, has_logger: bool) -> list[L.Callback]:
    """MetricHistory always; EarlyStopping when `early_stopping.patience` is set; the learning rate
    monitor when there is a logger to write to (Lightning refuses it without one)."""
    callbacks: list[L.Callback] = [MetricHistory()]
    stopping = cfg.get("early_stopping") or {}
    patience = stopping.get("patience")
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise UserError(f"early_stopping.patience={patience!r} must be a whole number of validations "
                            "(0 or more) or null (off). Fix: e.g. early_stopping.patience=3.")
        callbacks.append(EarlyStopping(monitor=str(cfg.task.monitor), mode=str(cfg.task.mode), patience=patience,
                                       min_delta=float(stopping.get("min_delta") or 0.0), check_finite=True,
                                       verbose=True))
    if has_logger:
        callbacks.append(LearningRateLogger(logging_interval="step"))
    return callbacks  # the progress bar is build.build_trainer's (it depends on the device)


class _WithoutVersion:
    """A progress bar without Lightning's `v_num` (the logger's version number: not a metric)."""

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class RichBar(_WithoutVersion, RichProgressBar):
    pass


class TQDMBar(_WithoutVersion, TQDMProgressBar):
    pass


def progress_bar(refresh_rate: int | None = None) -> L.Callback:
    """The bar Lightning would pick (rich when installed), without `v_num`; with `refresh_rate`, a
    tqdm bar redrawn every that many steps (the Rich bar reads the logged values every step)."""
    if refresh_rate is not None:
        return TQDMBar(refresh_rate=refresh_rate)
    return RichBar() if compat.rich_available() else TQDMBar()


class ProgressLines(ProgressBar):
    """Training progress as plain lines, for a stdout that is not a terminal (nohup, SLURM, CI
    logs), where a bar that redraws itself shows nothing until the run ends: a line every
    `every_n_steps` optimizer steps (`trainer.log_every_n_steps`, as HF Trainer's `logging_steps`)
    and at the last step, and one after each validation, with the monitored metric and the best
    so far.

        step 20/63  epoch 0.32/1  train/loss 0.6931  lr 3.41e-05  samples/s 1117.3  ETA 0:00:07
        validation at step 63 (epoch 1): val/accuracy 0.5200 (best 0.5200 at step 63)
    """

    def __init__(self, every_n_steps: int, monitor: str, mode: str):
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self.monitor, self.mode = monitor, mode
        self._enabled = True
        self._printed_step: int | None = None
        self._start: tuple[float, int] = (time.monotonic(), 0)  # when and at which step this fit started

    def disable(self) -> None:  # Lightning: on every rank but 0
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.monotonic(), trainer.global_step)  # a resumed run: ETA from its own pace
        if trainer.log_every_n_steps:  # clamped to an epoch's length by train (config.fit_log_interval)
            self.every_n_steps = min(self.every_n_steps, trainer.log_every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        # once per optimizer step (the micro-batches of an accumulated step end at the same step);
        # the last step too, so the log ends with the final loss
        if not self._enabled or step == self._printed_step or (step % self.every_n_steps and step < total):
            return
        self._printed_step = step
        shown = f"{step}/{total}" if math.isfinite(total) else str(step)
        batches = trainer.num_training_batches
        epoch = trainer.current_epoch + ((batch_idx + 1) / batches if math.isfinite(batches) and batches else 0)
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs is not None and trainer.max_epochs >= 0 else ""
        parts = [f"step {shown}", f"epoch {epoch:.2f}{epochs}"]
        metrics = self.get_metrics(trainer, pl_module)
        if "train/loss" in metrics:
            parts.append(f"train/loss {float(metrics['train/loss']):.4f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.2e}")
        if "samples/s" in metrics:
            parts.append(f"samples/s {float(metrics['samples/s']):.1f}")
        started, first = self._start
        if math.isfinite(total) and step > first:
            left = (time.monotonic() - started) / (step - first) * max(0, total - step)
            parts.append(f"ETA {datetime.timedelta(seconds=round(left))}")
        print("  ".join(parts), flush=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        line = f"validation at step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
        if value is not None:
            best_value, best_step = self._best(trainer, float(value))
            line += f": {self.monitor} {float(value):.4f} (best {best_value:.4f} at step {best_step})"
        print(line, flush=True)

    def _best(self, trainer, value: float) -> tuple[float, int]:
        """The best monitored value so far and its step, from the run's MetricHistory (which has
        this validation already, and a resumed run's earlier ones)."""
        history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
        seen = [(m[self.monitor], s) for s, m in (history.evals if history else []) if self.monitor in m]
        seen = seen or [(value, trainer.global_step)]
        return (max if self.mode == "max" else min)(seen, key=lambda pair: pair[0])


class LearningRateLogger(LearningRateMonitor):
    """Lightning's LearningRateMonitor, logged as one `train/lr` column: our AdamW has two parameter
    groups (with and without weight decay) that always share one learning rate, which Lightning
    would log twice as `lr-AdamW/pg1` and `lr-AdamW/pg2`."""

    def _extract_stats(self, trainer, interval: str) -> dict[str, float]:  # Lightning's private hook (compat.py)
        stats = compat.lr_monitor_stats(self, trainer, interval)
        rates = {value for name, value in stats.items() if not name.endswith(("-momentum", "-weight_decay"))}
        return {"train/lr": rates.pop()} if len(rates) == 1 else stats


class MetricHistory(L.Callback):
    """Every training step's loss and learning rate, and every validation's metrics, in memory (and
    in checkpoints, so a resumed run's pictures cover the whole run).

    `train`: [(step, loss, lr)]; `evals`: [(step, {"val/accuracy": ..., ...})]; in a multi-task
    run also `task_train`: [(step, task, its own loss)], one row per batch (a batch is one task's:
    the training step returns its task and unweighted loss beside the run's loss). Losses are kept
    as tensors until a validation or the epoch ends, then read in one transfer: reading one every
    step would make the GPU wait for the host."""

    def __init__(self) -> None:
        self.train: list[tuple[int, float, float]] = []
        self.evals: list[tuple[int, dict[str, float]]] = []
        self.task_train: list[tuple[int, str, float]] = []
        self._pending: list[tuple[int, Any, float, str | None, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        out = outputs if isinstance(outputs, Mapping) else {"loss": outputs}
        if out.get("loss") is None:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        # Lightning hands over the loss divided by accumulate_grad_batches (what backward needs):
        # the loss of the batch is that times accumulate_grad_batches.
        loss = out["loss"].detach() * trainer.accumulate_grad_batches
        task_loss = out.get("task_loss")
        self._pending.append((trainer.global_step, loss, float(lr), out.get("task"),
                              None if task_loss is None else task_loss.detach()))

    def _flush(self) -> None:
        if not self._pending:
            return
        losses = torch.stack([loss.float().reshape(()) for _, loss, _, _, _ in self._pending]).tolist()
        tasks = [(step, task, loss) for step, _, _, task, loss in self._pending if loss is not None]
        task_losses = torch.stack([loss.float().reshape(()) for _, _, loss in tasks]).tolist() if tasks else []
        self.train.extend((step, value, lr) for (step, _, lr, _, _), value in zip(self._pending, losses))
        self.task_train.extend((step, task, value) for (step, task, _), value in zip(tasks, task_losses))
        self._pending = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._flush()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._flush()
        # Eval metrics: "val/x", "val_<name>/x", "<task>/val/x" (multi-task), "val/mean".
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if "/" in name and name.split("/")[-2].startswith("val")}
        if metrics:
            self.evals.append((trainer.global_step, metrics))

    def on_fit_end(self, trainer, pl_module) -> None:
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"train": [list(row) for row in self.train], "evals": [[s, dict(m)] for s, m in self.evals],
                "task_train": [list(row) for row in self.task_train]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callback states from every checkpoint it loads, also for the final
        # evaluation of the best checkpoint: only a resume (nothing recorded yet) takes the history.
        if self.train or self.evals or self.task_train or self._pending:
            return
        self.train = [tuple(row) for row in state_dict.get("train", [])]
        self.evals = [(int(s), dict(m)) for s, m in state_dict.get("evals", [])]
        self.task_train = [(int(s), str(t), float(v)) for s, t, v in state_dict.get("task_train", [])]


def report_run(trainer: L.Trainer, cfg, module, metrics: dict[str, float], output_dir) -> list:
    """At the end of a run (rank 0): the pictures into `<output_dir>/plots/` and, when a logger is
    on, into it too, with the resolved config logged as hyperparameters beside the final metrics.
    Returns the PNG paths written."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from gpt2tasks import plots

    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    pictures: list[Path] = []
    if history is not None:
        best = kept_checkpoint(trainer)
        # each task's pictures, from its own module's evaluation (plots/<task>/ when the run names its tasks)
        tasks = {name: plots.TaskPlots(task.pictures, str(task.evaluation.monitor), task.latest_diagnostics)
                 for name, task in module.tasks.items()}
        if module.several:
            data = plots.multitask_picture_data(tasks, str(cfg.task.monitor), history, metrics, best)
        else:
            (task,) = tasks.values()
            data = plots.picture_data(task.pictures, str(cfg.task.monitor), history, metrics, task.diagnostics, best)
        folder = Path(output_dir) / plots.PLOTS_DIR
        figures = plots.write_pictures(folder, data, plots.run_name(cfg))
        pictures = [folder / f"{name}.png" for name in figures]
        for logger in trainer.loggers:
            _log_figures(logger, figures, trainer.global_step)
        plots.close(figures)
    for logger in trainer.loggers:
        _log_hyperparams(logger, OmegaConf.to_container(cfg, resolve=True), metrics)
    return pictures


def kept_checkpoint(trainer: L.Trainer) -> dict[str, Any] | None:
    """The best checkpoint the run keeps, as its pictures mark it: {"checkpoint": file name, "step":
    the optimizer step it holds (read from the file), "monitor", "value"}; None without one
    (checkpoint.save_top_k=0, no validation, or a DeepSpeed checkpoint folder)."""
    from pathlib import Path

    from gpt2tasks.resume import BestCheckpoint
    from gpt2tasks.runfile import saved_step

    kept = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint) and c.best_model_path), None)
    if kept is None or kept.best_model_score is None:
        return None
    step = saved_step(kept.best_model_path)
    if step is None:
        return None
    return {"checkpoint": Path(kept.best_model_path).name, "step": step, "monitor": str(kept.monitor),
            "value": float(kept.best_model_score)}


def _log_hyperparams(logger, params: dict, metrics: dict[str, float]) -> None:
    """The config as hyperparameters, with the final metrics (TensorBoard's HParams tab, W&B's run
    config, the CSV/TensorBoard logs' hparams.yaml)."""
    from pathlib import Path

    from lightning.pytorch.loggers import TensorBoardLogger

    import inspect

    if "metrics" in inspect.signature(logger.log_hyperparams).parameters:  # TensorBoard: shown together
        logger.log_hyperparams(params, metrics=metrics)
    else:  # CSV, W&B: the metrics are already logged as the run's final values
        logger.log_hyperparams(params)
    if isinstance(logger, TensorBoardLogger):
        # Lightning wrote an empty hparams.yaml when fit ended and never replaces an existing one.
        Path(logger.log_dir, logger.NAME_HPARAMS_FILE).unlink(missing_ok=True)
    logger.save()


def _log_figures(logger, figures: dict, step: int) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        for name, fig in figures.items():
            logger.experiment.add_figure(f"plots/{name}", fig, global_step=step, close=False)
    elif isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({f"plots/{name}": wandb.Image(fig) for name, fig in figures.items()})
