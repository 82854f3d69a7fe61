"""`python -m gpt2tasks train`: compose the config with Hydra, fine-tune, evaluate, write the run.

`train(cfg)` is the whole job and is what tests call; `main()` is the thin Hydra wrapper.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from gpt2tasks import distributed, multitask, outputs, signals
from gpt2tasks.cli import done_lines, format_metrics
from gpt2tasks.config import check_epoch_length, fit_log_interval, validate_config
from gpt2tasks.literal import literal_yaml
from gpt2tasks.errors import UserError

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

log = logging.getLogger("gpt2tasks")


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Fine-tune per `cfg`; returns the best checkpoint's metrics (also written to metrics.json).

    `callbacks` are extra Lightning callbacks (for programmatic use and tests)."""
    from gpt2tasks.build import absolute_data_paths  # not at module scope: `train --help` answers without torch

    multitask.expand(cfg)  # several tasks: each one's full task/data blocks, under tasks.<name>
    validate_config(cfg, training=True)
    absolute_data_paths(cfg)  # the saved config finds its data from any working directory
    output_dir = Path(cfg.output_dir).absolute()
    # Several processes (multi-device): rank 0 alone checks, clears and writes the run folder.
    rank_zero = distributed.is_rank_zero()
    # trainer.fast_dev_run: a few batches to check the code path; it writes nothing to output_dir.
    debug = bool(cfg.trainer.get("fast_dev_run", False))
    if rank_zero and not debug:
        outputs.check_folder_writable(output_dir, "output_dir")  # a read-only or impossible path: said up front
    # One run folder, one writer: held from before the first check to the end (outputs.run_lock).
    with outputs.run_lock(output_dir) if rank_zero and not debug else contextlib.nullcontext():
        return _train(cfg, callbacks, output_dir, rank_zero, debug)


def _train(cfg: DictConfig, callbacks: Sequence[Callback], output_dir: Path, rank_zero: bool, debug: bool
           ) -> dict[str, float]:
    # Imported here, not at module scope: `train --help` answers without loading torch.
    from gpt2tasks import resume, runfile
    from gpt2tasks.build import build_for_training, build_logger, build_trainer, model_spec
    from gpt2tasks.callbacks import report_run, run_callbacks
    from gpt2tasks.throughput import ThroughputMonitor

    if not rank_zero:
        logging.getLogger("gpt2tasks").setLevel(logging.WARNING)  # rank 0 reports
    start_from, source = (None, "") if debug else _start_checkpoint(cfg, output_dir, rank_zero)
    # resume=true: the run's config.yaml, and which keys this command changes (those that would change
    # what the run computes are refused here: runfile.RESUME_MAY_CHANGE)
    started_as = runfile.saved_run_config(output_dir) if cfg.resume and not debug else None
    changes = runfile.resume_changes(started_as, cfg) if started_as is not None else {}

    # Everything that can fail on bad input happens before the output directory is touched.
    datamodule, module, tokenizer = build_for_training(cfg)
    log.info("tokenizer: %s (%d tokens)", model_spec(cfg).tokenizer_source, len(tokenizer))
    log.info("task=%s (%s): %s", cfg.task.name, cfg.task.kind, datamodule.describe())
    log.info("model: %s", module.parameter_summary())
    saved = runfile.peek(start_from, source) if start_from is not None else {}
    resume.check_compatible(saved, module, source)
    if cfg.resume and saved:
        runfile.check_same_data(saved["gpt2tasks"], datamodule.file_digests, source)
    module.run_info["data_files"] = runfile.data_files_info(datamodule.file_digests)  # checked by a later resume

    ckpt_dir = outputs.checkpoints_dir(output_dir)
    best_checkpoint = resume.BestCheckpoint(
        dirpath=str(ckpt_dir), filename="best", monitor=cfg.task.monitor, mode=cfg.task.mode,
        save_top_k=int(cfg.checkpoint.save_top_k), save_last=False, save_on_train_epoch_end=False,
        auto_insert_metric_name=False, enable_version_counter=False, resuming=bool(cfg.resume))
    committed = False  # the new run has a checkpoint: from then on a failure leaves it resumable
    kept: Path | None = None  # overwrite=true: the replaced run, until the new one has a checkpoint

    def commit() -> None:
        nonlocal committed, kept
        committed = True
        if rank_zero and kept is not None:
            outputs.remove_marked(kept, outputs.is_run, "run")  # the replaced run, set aside by this run
            kept = None

    logger = False if debug else build_logger(cfg, output_dir)
    # samples/s, tokens/s, MFU (progress bar, logger); metric history, LR, early stopping (callbacks.py)
    # A ThroughputMonitor among the caller's callbacks replaces ours (Lightning allows one of a stateful kind).
    own_monitor = [] if any(isinstance(c, ThroughputMonitor) for c in callbacks) else [ThroughputMonitor.from_config(cfg)]
    all_callbacks = [*own_monitor, resume.ResumeExactly(), resume.ValidateAtEnd(),
                     *run_callbacks(cfg, has_logger=bool(logger)), *callbacks]
    last_checkpoint = None
    if not debug:
        all_callbacks.append(best_checkpoint)
        if cfg.checkpoint.save_last:
            last_checkpoint = resume.LastCheckpoint(
                ckpt_dir / "last.ckpt", every_n_train_steps=cfg.checkpoint.get("every_n_train_steps"),
                every_n_minutes=cfg.checkpoint.get("every_n_minutes"), on_first_save=commit)
            all_callbacks.append(last_checkpoint)
            # SLURM's SIGUSR1 before the time limit: last.ckpt at a step's end, then Lightning requeues
            all_callbacks.append(resume.RequeueOnSignal(ckpt_dir / "last.ckpt", on_save=commit))
        # SIGTERM/SIGINT: last.ckpt written, then exit 143/130 (fast_dev_run writes nothing: it stops at once)
        all_callbacks.append(resume.StopOnSignal(last_checkpoint))
    quiet = {} if "enable_model_summary" in cfg.trainer else {"enable_model_summary": False}  # the model line says it
    # Built before the folder is touched: devices/strategy problems stop the run here. Nothing is
    # written until fit (the logger and the checkpoint callback create their folders lazily).
    trainer = build_trainer(cfg, logger=logger, callbacks=all_callbacks, default_root_dir=str(output_dir),
                            **quiet, **({"enable_checkpointing": False} if debug else {}))
    check_epoch_length(cfg, trainer, datamodule)  # trainer.val_check_interval needs the batches of an epoch
    fit_log_interval(trainer, datamodule)  # trainer.log_every_n_steps: at most an epoch
    resume.check_can_continue(saved, trainer, source,
                              has_metrics=(output_dir / "metrics.json").exists() if cfg.resume else True)

    if rank_zero and not debug:
        if not cfg.resume:
            kept = outputs.set_aside(output_dir)  # a new run (overwrite=true: the old one is kept aside)
            if kept is not None and start_from is not None and start_from.is_relative_to(output_dir):
                start_from = kept / start_from.relative_to(output_dir)  # ckpt_path= into the run replaced
        outputs.write_run_marker(output_dir)  # gpt2tasks' mark on its run folder; names this process
        if started_as is None:
            outputs.write_atomic(output_dir / "config.yaml", literal_yaml(cfg))  # label names etc. stay literal
        else:  # the settings a resume changed are recorded, the previous ones kept as config.<n>.yaml
            runfile.record_resume(output_dir, cfg, changes)
    # world_size = devices x num_nodes, known once the Trainer resolved devices="auto"
    devices = trainer.world_size
    log.info("effective batch: %d = data.batch_size %d x %d device(s) x accumulate_grad_batches %d (%s)",
             cfg.data.batch_size * devices * cfg.trainer.accumulate_grad_batches, cfg.data.batch_size,
             devices, cfg.trainer.accumulate_grad_batches, type(trainer.strategy).__name__)
    if start_from is not None:
        log.info("continuing from %s", start_from)
    # Lightning's warning assumes a mid-epoch resume restarts the epoch; ResumeExactly continues it.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    try:
        with distributed.ranks_run(cfg):  # the other ranks (launched inside fit) run this cfg
            # weights_only=True: Lightning would otherwise leave it to torch's default, which an
            # environment variable can turn off; our checkpoints are plain data (runfile.load_checkpoint).
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(start_from) if start_from else None,
                        weights_only=True)
            # Final numbers come from the best checkpoint, exactly as `eval ckpt=...` recomputes them
            # (every run with validation has one: the last step validates), or without one
            # (checkpoint.save_top_k=0, no validation) from the final weights.
            best = None if debug else best_checkpoint.best_model_path or None
            reuse = not debug and (best_checkpoint.holds_current(trainer) if best
                                   else best_checkpoint.validated_current(trainer))
            metrics = _evaluate(trainer, module, datamodule, best, in_memory=reuse)
    except BaseException as exc:
        if rank_zero and not committed and not cfg.resume:
            # Failed before its first checkpoint: nothing of it is worth keeping; the replaced run returns.
            outputs.put_back(output_dir, kept)
            outputs.remove_if_empty(output_dir)
        if isinstance(exc, signals.Interrupted) and rank_zero and not debug:
            exc.note = _how_to_resume(output_dir, kept_run=committed or bool(cfg.resume))
        raise
    if debug:
        if trainer.is_global_zero:
            outputs.remove_if_empty(output_dir)  # Hydra made it; nothing was written to it
            shown = format_metrics(module.headline(metrics, str(cfg.task.monitor)))
            print(f"\nfast_dev_run: a debug run of {int(cfg.trainer.fast_dev_run)} batch(es) per stage; nothing was "
                  f"written (no config.yaml, checkpoint, metrics.json or plots).\n  metrics of those batches "
                  f"(not a result): {shown}")
        return metrics
    commit()
    if trainer.is_global_zero:
        outputs.write_metrics(output_dir / "metrics.json", metrics)
        outputs.write_predictions(output_dir, getattr(module, "latest_predictions", {}))
        report_run(trainer, cfg, module, metrics, output_dir)  # plots/*.png, hyperparameters in the logger
        last = outputs.checkpoints_dir(output_dir) / "last.ckpt"
        headline = module.headline(metrics, str(cfg.task.monitor))  # metrics.json has every metric
        _report(output_dir, best, headline, trainer.global_step, cfg.task.monitor,
                validated=str(cfg.task.monitor) in metrics, last=str(last) if last.exists() else None)
    return metrics


def _how_to_resume(output_dir: Path, kept_run: bool) -> str:
    """What a run stopped by a signal leaves, and the command that continues it."""
    last = outputs.checkpoints_dir(output_dir) / "last.ckpt"
    if kept_run and last.exists():
        return (f"{last} holds step {_saved_step(str(last))}. Continue the run with:\n"
                f"  python -m gpt2tasks train resume=true output_dir={output_dir}")
    if kept_run:
        return f"no last.ckpt was written (checkpoint.save_last=false): {output_dir} cannot be resumed."
    return f"it stopped before its first checkpoint, so nothing was kept in {output_dir}; start it again."


def _start_checkpoint(cfg: DictConfig, output_dir: Path, rank_zero: bool) -> tuple[Path | None, str]:
    """The checkpoint training starts from (None: from scratch), and how the user named it (errors).

    `resume=true`: output_dir's checkpoints/last.ckpt. `ckpt_path=<file>`: that file, in a new
    output_dir (or `overwrite=true`), or with `resume=true` continuing output_dir from it instead of
    its last.ckpt (e.g. back to its best.ckpt)."""
    given = cfg.get("ckpt_path")
    if not given:
        if rank_zero:
            path = outputs.check_output_dir(output_dir, bool(cfg.overwrite), bool(cfg.resume))
        else:
            path = outputs.resume_checkpoint(output_dir) if cfg.resume else None
        return path, f"resume=true ({path})"
    path = Path(os.path.expanduser(str(given))).absolute()
    source = f"ckpt_path={path}"
    if not rank_zero and not path.exists() and path.is_relative_to(output_dir):
        path = outputs.previous_dir(output_dir) / path.relative_to(output_dir)  # rank 0 set that run aside
    if not path.exists():
        raise UserError(f"{source} does not exist. Fix: give the path of a checkpoint written by `python -m "
                        "gpt2tasks train` (<run>/checkpoints/last.ckpt, or best.ckpt).")
    if rank_zero and cfg.resume and not (output_dir / "config.yaml").exists():
        raise UserError(f"{source} with resume=true continues the run in output_dir={output_dir}, which holds "
                        "no run. Fix: set output_dir to that run, or drop resume=true to start a new run "
                        "from the checkpoint.")
    if rank_zero and not cfg.resume:
        outputs.check_output_dir(output_dir, bool(cfg.overwrite), resume=False)
    return path, source


def _evaluate(trainer: L.Trainer, module, datamodule, ckpt_path: str | None, in_memory: bool = False
              ) -> dict[str, float]:
    """The eval sets' metrics of the checkpoint at `ckpt_path` (None: the weights in memory).

    `in_memory`: the last validation of fit ran on the weights in memory, and they are the ones to
    score (that checkpoint's: resume.BestCheckpoint.holds_current, typically the best is the last
    step; or, without a best checkpoint, the final weights: validated_current): its metrics are
    this validation's, so neither the reload (a 124M model's checkpoint is 1.5 GB with the
    optimizer state) nor a second validation is needed."""
    if in_memory:
        ckpt_path = None
    else:
        module.latest_metrics = {}
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    if datamodule.has_test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    return dict(sorted(module.latest_metrics.items()))


def _report(output_dir: Path, best: str | None, metrics: dict[str, float], final_step: int, monitor: str,
            validated: bool = True, last: str | None = None) -> None:
    """The final lines: the metrics, where the run's files are and which weights metrics.json scores.

    Those are the best checkpoint's or, without one, the final weights: validated at the end when
    `checkpoint.save_top_k=0`, not validated in a run without validation (e.g.
    trainer.limit_val_batches=0); last.ckpt holds them unless `checkpoint.save_last=false`."""
    if best:
        ckpt, scored = best, f"from {Path(best).name}: best {monitor}, step {_saved_step(best)} of {final_step}"
    else:
        ckpt = last
        weights = f"from {Path(last).name}: the final weights" if last else "from the final weights"
        why = "validated at the end; checkpoint.save_top_k=0 keeps no best" if validated else "no validation ran"
        scored = f"{weights}, step {final_step}: {why}"
    why_none = "checkpoint.save_top_k=0" if validated else "no validation chose a best"
    print(done_lines(format_metrics(metrics), [
        ("run", output_dir), ("config", output_dir / "config.yaml"),
        ("metrics", f"{output_dir / 'metrics.json'} ({scored})"),
        ("checkpoint", ckpt or f"none saved (checkpoint.save_last=false; {why_none})"),
        ("re-evaluate", f"python -m gpt2tasks eval ckpt={ckpt}" if ckpt else None)]))


def _saved_step(path: str) -> int | str:
    from gpt2tasks.runfile import saved_step

    step = saved_step(path)
    return "?" if step is None else step  # a DeepSpeed folder, or an unreadable file: the report still prints


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gpt2tasks import plugins, sweep
    from gpt2tasks.cli import quiet_known_noise, run_and_report, setup_logging
    from gpt2tasks.keys import check_overrides
    from gpt2tasks.resources import CONF_DIR, register_resolvers

    register_resolvers()
    spawned = distributed.spawned_rank_config()
    if spawned is not None:
        # Lightning re-launched this command line as another rank: run rank 0's config, not a new
        # Hydra composition of the arguments (see gpt2tasks/distributed.py).
        setup_logging()
        quiet_known_noise()
        run_and_report(lambda: train(spawned))
        return

    # tasks.<name>.<key>=... and lightning.Trainer keywords without Hydra's ++; unknown keys refused
    sys.argv[1:] = run_and_report(lambda: check_overrides(multitask.cli_overrides(sys.argv[1:])))
    # Hydra makes output_dir before the job starts; a path it cannot make is said here, not in its traceback.
    given = [a.partition("=")[2] for a in sys.argv[1:] if a.lstrip("+").startswith("output_dir=")]
    if given and "${" not in given[-1]:
        run_and_report(lambda: outputs.check_folder_writable(Path(given[-1]), "output_dir"))
    # hydra/launcher=submitit_*, hparams_search=...: the plugin is installed (else: the pip install)
    run_and_report(lambda: plugins.prepare(sys.argv[1:]))

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _main(cfg: DictConfig) -> float | sweep.JobFailed:
        # In a -m sweep every job gets its own folder; Hydra knows it, the config does not.
        hydra_cfg = HydraConfig.get()
        cfg.output_dir = hydra_cfg.runtime.output_dir
        setup_logging()  # every command's console format (conf/config.yaml leaves Hydra's job logging off)
        quiet_known_noise()
        from gpt2tasks.runfile import resume_base

        def job() -> float:
            # resume=true: the run's own config.yaml with only what this command line typed on top, not the defaults
            run_cfg = resume_base(cfg, hydra_cfg.overrides.task, list(hydra_cfg.runtime.choices)) if cfg.resume else cfg
            return monitored_value(train(run_cfg), run_cfg)

        if hydra_cfg.mode == RunMode.MULTIRUN:  # a failed job returns its error: the other jobs go on
            value = run_and_report(lambda: sweep.run_job(job, cleanup_dir=Path(cfg.output_dir)))  # signals: stop
        else:
            value = run_and_report(job, cleanup_dir=Path(cfg.output_dir))
        if not distributed.is_rank_zero():
            # torchrun/srun without output_dir=: this rank's own ${now} folder may differ from
            # rank 0's by a second; Hydra made it, nothing was written to it.
            outputs.remove_if_empty(Path(cfg.output_dir))
        return value  # what a search sweeper (hparams_search=..., Optuna) optimizes

    _main()


def monitored_value(metrics: dict[str, float], cfg: DictConfig) -> float:
    """The run's value of `task.monitor` (its best checkpoint's, as in metrics.json), what `train`
    returns to Hydra; nan when the run has none (no validation ran)."""
    return float(metrics.get(str(cfg.task.monitor), math.nan))
