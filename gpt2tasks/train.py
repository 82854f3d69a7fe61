"""`python -m gpt2tasks train`: compose the config with Hydra, fine-tune, evaluate, write the run.

`train(cfg)` is the whole job and is what tests call; `main()` is the thin Hydra wrapper.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from gpt2tasks import outputs
from gpt2tasks.build import build_for_training, build_logger, trainer_kwargs
from gpt2tasks.config import validate_config
from gpt2tasks.throughput import ThroughputMonitor

log = logging.getLogger("gpt2tasks")


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fine-tune per `cfg`; returns the best checkpoint's metrics (also written to metrics.json).

    `callbacks` are extra Lightning callbacks (for programmatic use and tests)."""
    validate_config(cfg)
    output_dir = Path(cfg.output_dir).absolute()
    resume_from = outputs.check_output_dir(output_dir, bool(cfg.overwrite), bool(cfg.resume))

    # Everything that can fail on bad input happens before the output directory is touched.
    datamodule, module, _ = build_for_training(cfg)
    log.info("task=%s (%s, %s): %s", cfg.task.name, cfg.task.kind, datamodule.label_space.problem_type,
             {k: len(v) for k, v in datamodule.datasets.items()})
    log.info("model: %s", module.parameter_summary())

    if resume_from is None:
        outputs.clear_output_dir(output_dir)
    outputs.write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    checkpoint = ModelCheckpoint(dirpath=str(outputs.checkpoints_dir(output_dir)), filename="best",
                                 monitor=cfg.task.monitor, mode=cfg.task.mode,
                                 save_top_k=int(cfg.checkpoint.save_top_k), save_last=bool(cfg.checkpoint.save_last),
                                 auto_insert_metric_name=False, enable_version_counter=False)
    callbacks = [ThroughputMonitor.from_config(cfg), *callbacks]  # samples/s, tokens/s, MFU (progress bar, logger)
    trainer = L.Trainer(**trainer_kwargs(cfg), logger=build_logger(cfg, output_dir), callbacks=[checkpoint, *callbacks],
                        default_root_dir=str(output_dir))
    devices = trainer.world_size
    log.info("effective batch: %d = data.batch_size %d x %d device(s) x accumulate_grad_batches %d",
             cfg.data.batch_size * devices * cfg.trainer.accumulate_grad_batches, cfg.data.batch_size,
             devices, cfg.trainer.accumulate_grad_batches)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)

    # Final numbers come from the best checkpoint, exactly as `eval ckpt=...` recomputes them.
    best = checkpoint.best_model_path or None
    metrics = _evaluate(trainer, module, datamodule, best)
    outputs.write_metrics(output_dir / "metrics.json", metrics)
    if trainer.is_global_zero:
        outputs.write_predictions(output_dir, getattr(module, "latest_predictions", {}))
    if trainer.is_global_zero:
        _report(output_dir, best, metrics)
    return metrics


def _evaluate(trainer: L.Trainer, module, datamodule, ckpt_path: str | None) -> dict[str, float]:
    module.latest_metrics = {}
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    return dict(sorted(module.latest_metrics.items()))


def _report(output_dir: Path, best: str | None, metrics: dict[str, float]) -> None:
    # No best checkpoint when training stopped before its first validation (e.g. a small max_steps).
    best = best or str(outputs.checkpoints_dir(output_dir) / "last.ckpt")
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(f"\nDone. {shown}\n"
          f"  run:        {output_dir}\n"
          f"  config:     {output_dir / 'config.yaml'}\n"
          f"  metrics:    {output_dir / 'metrics.json'}\n"
          f"  checkpoint: {best}\n"
          f"  re-evaluate: python -m gpt2tasks eval ckpt={best}")


def quiet_known_noise() -> None:
    # CPU runs use num_workers=0 on purpose (tokenized rows are in memory; workers only add start-up).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # An advertisement Lightning prints on every Trainer start.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from gpt2tasks.cli import run_and_report
    from gpt2tasks.resources import CONF_DIR, register_resolvers

    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _main(cfg: DictConfig) -> None:
        # In a -m sweep every job gets its own folder; Hydra knows it, the config does not.
        cfg.output_dir = HydraConfig.get().runtime.output_dir
        quiet_known_noise()
        run_and_report(lambda: train(cfg), cleanup_dir=Path(cfg.output_dir))

    _main()
