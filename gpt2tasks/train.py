"""`python -m gpt2tasks train`: compose the config with Hydra, fine-tune, evaluate, write the run.

`train(cfg)` is the whole job and is what tests call; `main()` is the thin Hydra wrapper.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from gpt2tasks import distributed, multitask, outputs
from gpt2tasks.build import build_for_training, build_logger, build_trainer
from gpt2tasks.config import check_epoch_length, validate_config
from gpt2tasks.throughput import ThroughputMonitor

log = logging.getLogger("gpt2tasks")


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fine-tune per `cfg`; returns the best checkpoint's metrics (also written to metrics.json).

    `callbacks` are extra Lightning callbacks (for programmatic use and tests)."""
    if multitask.is_multitask(cfg):
        multitask.expand(cfg)  # each task's full task/data blocks, under tasks.<name>
    validate_config(cfg, training=True)
    output_dir = Path(cfg.output_dir).absolute()
    # Several processes (multi-device): rank 0 alone checks, clears and writes the run folder.
    rank_zero = distributed.is_rank_zero()
    if rank_zero:
        resume_from = outputs.check_output_dir(output_dir, bool(cfg.overwrite), bool(cfg.resume))
    else:
        logging.getLogger("gpt2tasks").setLevel(logging.WARNING)  # rank 0 reports
        resume_from = outputs.resume_checkpoint(output_dir) if cfg.resume else None

    # Everything that can fail on bad input happens before the output directory is touched.
    datamodule, module, _ = build_for_training(cfg)
    log.info("task=%s (%s): %s", cfg.task.name, cfg.task.kind, datamodule.describe())
    log.info("model: %s", module.parameter_summary())

    checkpoint = ModelCheckpoint(dirpath=str(outputs.checkpoints_dir(output_dir)), filename="best",
                                 monitor=cfg.task.monitor, mode=cfg.task.mode,
                                 save_top_k=int(cfg.checkpoint.save_top_k), save_last=bool(cfg.checkpoint.save_last),
                                 auto_insert_metric_name=False, enable_version_counter=False)
    # Built before the folder is touched: devices/strategy problems stop the run here. Nothing is
    # written until fit (the logger and the checkpoint callback create their folders lazily).
    callbacks = [ThroughputMonitor.from_config(cfg), *callbacks]  # samples/s, tokens/s, MFU (progress bar, logger)
    trainer = build_trainer(cfg, logger=build_logger(cfg, output_dir), callbacks=[checkpoint, *callbacks],
                            default_root_dir=str(output_dir))
    check_epoch_length(cfg, trainer, datamodule)  # trainer.val_check_interval needs the batches of an epoch

    if rank_zero:
        if resume_from is None:
            outputs.clear_output_dir(output_dir)
        outputs.write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    # world_size = devices x num_nodes, known once the Trainer resolved devices="auto"
    devices = trainer.world_size
    log.info("effective batch: %d = data.batch_size %d x %d device(s) x accumulate_grad_batches %d (%s)",
             cfg.data.batch_size * devices * cfg.trainer.accumulate_grad_batches, cfg.data.batch_size,
             devices, cfg.trainer.accumulate_grad_batches, type(trainer.strategy).__name__)
    with distributed.ranks_run(cfg):  # the other ranks (launched inside fit) run this cfg
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
        # Final numbers come from the best checkpoint, exactly as `eval ckpt=...` recomputes them.
        best = checkpoint.best_model_path or None
        metrics = _evaluate(trainer, module, datamodule, best)
    if trainer.is_global_zero:
        outputs.write_metrics(output_dir / "metrics.json", metrics)
        outputs.write_predictions(output_dir, getattr(module, "latest_predictions", {}))
        _report(output_dir, best, _headline(cfg, metrics))
    return metrics


def _evaluate(trainer: L.Trainer, module, datamodule, ckpt_path: str | None) -> dict[str, float]:
    module.latest_metrics = {}
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    return dict(sorted(module.latest_metrics.items()))


def _headline(cfg: DictConfig, metrics: dict[str, float]) -> dict[str, float]:
    """What the final line shows: everything, or for a multi-task run each task's own monitored
    metric and the means (metrics.json has the rest)."""
    if not multitask.is_multitask(cfg):
        return metrics
    main = multitask.main_metrics(cfg)
    return {k: v for k, v in metrics.items() if k.endswith("/mean") or k.split("/")[-1] == main.get(k.split("/")[0])}


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


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from gpt2tasks.cli import quiet_known_noise, run_and_report
    from gpt2tasks.config import check_overrides
    from gpt2tasks.resources import CONF_DIR, register_resolvers

    register_resolvers()
    spawned = distributed.spawned_rank_config()
    if spawned is not None:
        # Lightning re-launched this command line as another rank: run rank 0's config, not a new
        # Hydra composition of the arguments (see gpt2tasks/distributed.py).
        quiet_known_noise()
        run_and_report(lambda: train(spawned))
        return

    # tasks.<name>.<key>=... and lightning.Trainer keywords without Hydra's ++; unknown keys refused
    sys.argv[1:] = run_and_report(lambda: check_overrides(multitask.cli_overrides(sys.argv[1:])))

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _main(cfg: DictConfig) -> None:
        # In a -m sweep every job gets its own folder; Hydra knows it, the config does not.
        cfg.output_dir = HydraConfig.get().runtime.output_dir
        quiet_known_noise()
        run_and_report(lambda: train(cfg), cleanup_dir=Path(cfg.output_dir))
        if not distributed.is_rank_zero():
            # torchrun/srun without output_dir=: this rank's own ${now} folder may differ from
            # rank 0's by a second; Hydra made it, nothing was written to it.
            outputs.remove_if_empty(Path(cfg.output_dir))

    _main()
