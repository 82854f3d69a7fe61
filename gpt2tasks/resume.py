"""Checkpoints a run can always be resumed from, exactly, at any step.

- `LastCheckpoint` keeps `checkpoints/last.ckpt` the newest state: after every validation, every
  `checkpoint.every_n_train_steps` steps / `checkpoint.every_n_minutes` minutes, at each epoch end
  and at the end of training (then marked finished; the validation and epoch end that training
  stops after leave it to that write). Written atomically (a kill mid-write leaves the
  previous file). When best.ckpt was just written with the same state (the validation that chose
  it is the newest state), last.ckpt is a hard link to it: the bytes are written and stored once
  (for `gpt2` with its AdamW state, 1.5 GB).
- `ValidateAtEnd` makes the last step of training validate (Lightning does not when `max_steps`
  ends training mid-epoch), so every run with validation has a best checkpoint.
- `ResumeExactly` makes a resumed run continue where the checkpoint left it: the train batches of
  the interrupted epoch that were already trained on are skipped (Lightning restores its loop
  counters but restarts a plain DataLoader from the epoch's first batch), and the RNG states
  (dropout) are put back just before training continues (after Lightning made its data iterator,
  which draws from the global RNG).

Why skipping works for any sampler: this project's train samplers are deterministic given
(seed, epoch) (`set_epoch`), so the resumed epoch's batches are the interrupted epoch's batches, and
the number already trained is Lightning's own count (`batch_progress.current.ready`).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import (Callback, Checkpoint, ModelCheckpoint, StochasticWeightAveraging,
                                         WeightAveraging)
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from gpt2tasks import compat, signals
from gpt2tasks.errors import UserError
from gpt2tasks.outputs import FILESYSTEM_FIXES, filesystem_problem

log = logging.getLogger("gpt2tasks")


# ---- writing checkpoints -------------------------------------------------------------------------
class DirectCheckpointIO(TorchCheckpointIO):
    """`torch.save` straight into the file. Lightning's TorchCheckpointIO serialises the whole
    checkpoint into memory, copies that buffer and writes it through an fsspec transaction: for
    `gpt2` with its AdamW state, 1.5 GB held twice more in memory and copied twice before the write.
    Atomicity is `save_atomic`'s (a temporary name, renamed once complete)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)  # its refusal
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Through a Python file: a failed write (e.g. a full disk) is then an OSError with its errno,
        # where torch's own path writer reports a RuntimeError that does not say why.
        with open(path, "wb") as f:
            torch.save(checkpoint, f)


def save_atomic(trainer: L.Trainer, path: str, weights_only: bool = False) -> None:
    """trainer.save_checkpoint into a temporary name beside `path`, renamed onto it once complete.
    A signal during the write takes effect once it is done (signals.writing)."""
    with signals.writing():
        _save_atomic(trainer, path, weights_only)


def _save_atomic(trainer: L.Trainer, path: str, weights_only: bool) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.partial")
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not another plugin (XLA, async, a user's)
        trainer.strategy.checkpoint_io = DirectCheckpointIO()
    try:
        trainer.save_checkpoint(str(tmp), weights_only=weights_only)  # collective; rank 0 writes (a folder under DeepSpeed)
    except BaseException as exc:
        # a full disk, a signal mid-write, ...: no partial checkpoint beside the previous one
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if not (isinstance(exc, OSError) and filesystem_problem(exc)):
            raise
        kept = f"the previous {target.name} is kept" if target.exists() else f"no {target.name} was written"
        raise UserError(f"checkpoint {target} could not be written ({exc.strerror}); {kept}. Fix: "
                        f"{FILESYSTEM_FIXES[exc.errno]}, then run again (resume=true continues from the last "
                        "checkpoint on disk, if the run has one).") from None
    if trainer.is_global_zero:
        _move_onto(tmp, target)
    trainer.strategy.barrier("gpt2tasks.save_atomic")


def _move_onto(written: Path, target: Path) -> None:
    """A complete checkpoint file (or DeepSpeed folder) renamed onto `target`, replacing it."""
    if written.is_dir():  # DeepSpeed: folders cannot be renamed over each other
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(written, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(written, target)


def link_atomic(trainer: L.Trainer, source: str, path: str) -> bool:
    """`path` becomes a hard link to the checkpoint file `source` (rank 0 links; every rank gets the
    answer). False where that cannot be done (a DeepSpeed/sharded checkpoint folder, a file system
    without hard links): the caller then saves. Atomic like `save_atomic`: a link under a temporary
    name, renamed onto `path`; the rename replaces only `path`'s name, so a later save of either
    file (a new temporary file renamed onto its name) never changes the other."""
    linked = False
    if trainer.is_global_zero and Path(source).is_file():
        target = Path(path)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            tmp.unlink(missing_ok=True)
            os.link(source, tmp)
            os.replace(tmp, target)
            linked = True
        except OSError:
            tmp.unlink(missing_ok=True)
    return bool(trainer.strategy.broadcast(linked))


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint (best by task.monitor, saved after validation) writing atomically."""

    def __init__(self, *args: Any, resuming: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resuming = resuming
        self._written: dict[str, tuple] = {}  # per file this process wrote: the weights' version then
        self._validated: tuple | None = None  # the weights' version at fit's latest validation

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A new run started from a checkpoint (ckpt_path= without resume=true): its best starts anew
        # among its own validations; Lightning would keep pointing at the other run's best file.
        if self.resuming and state_dict.get("dirpath") == self.dirpath:
            super().load_state_dict(state_dict)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        save_atomic(trainer, filepath, self.save_weights_only)
        compat.note_checkpoint_saved(self, trainer, filepath)
        self._written[filepath] = _weights_version(trainer)

    def holds_current(self, trainer: L.Trainer) -> bool:
        """Whether the best checkpoint holds exactly the weights now in memory: this process wrote
        it at this optimizer step, and no parameter was changed in place since (in-place updates
        bump a tensor's version counter; the fused AdamW does not, hence the step too). The final
        evaluation then needs no reload, and the validation that chose the checkpoint is its
        validation (same weights, same batches). Weight-averaging callbacks swap weights through
        `.data` (no version bump): with one, the answer is no."""
        path = self.best_model_path
        if not path or _averages_weights(trainer):
            return False
        return self._written.get(path) == _weights_version(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._validated = _weights_version(trainer)
        super().on_validation_end(trainer, pl_module)

    def validated_current(self, trainer: L.Trainer) -> bool:
        """Whether fit's latest validation ran on exactly the weights now in memory (as
        `holds_current`, without a checkpoint: e.g. `checkpoint.save_top_k=0`). Its metrics are
        then the final weights' (the last step of training validates, see ValidateAtEnd)."""
        return self._validated is not None and not _averages_weights(trainer) and \
            self._validated == _weights_version(trainer)


def _averages_weights(trainer: L.Trainer) -> bool:
    # Weight-averaging callbacks swap weights through `.data`, which no version counter sees.
    return any(isinstance(c, (WeightAveraging, StochasticWeightAveraging)) for c in trainer.callbacks)


def _weights_version(trainer: L.Trainer) -> tuple:
    """The optimizer step, and each parameter's identity and in-place version counter."""
    return trainer.global_step, tuple((id(p), compat.tensor_version(p)) for p in trainer.lightning_module.parameters())


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt, always the newest state (see the module docstring).

    A `Checkpoint` subclass, so Lightning runs it after the other callbacks and after the best
    checkpoint's ModelCheckpoint: the state it saves includes this validation's best score.
    `on_first_save` runs once, after the first checkpoint of this process is on disk."""

    def __init__(self, path: Path, every_n_train_steps: int | None = None, every_n_minutes: float | None = None,
                 on_first_save: Callable[[], None] | None = None):
        for key, value, kind in [("every_n_train_steps", every_n_train_steps, int),
                                 ("every_n_minutes", every_n_minutes, (int, float))]:
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
                raise UserError(f"checkpoint.{key}={value!r} must be a positive "
                                f"{'integer' if kind is int else 'number'}. Fix: e.g. checkpoint.{key}="
                                f"{500 if kind is int else 30}, or null (the default) to save last.ckpt only "
                                "at validations, epoch ends and the end of training.")
        self.path = str(path)
        self.every_n_train_steps = every_n_train_steps or 0
        self.every_seconds = every_n_minutes * 60 if every_n_minutes else None
        self.on_first_save = on_first_save
        self._saved_step: int | None = None
        self._saved_time = time.monotonic()
        self._finished: dict[str, Any] | None = None
        self._marked_finished_at: int | None = None  # the step of the validation-time state marked finished

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # Written into every checkpoint; "finished" only into those of the end of training: the
        # one saved then, and best.ckpt when the validation that training stops after chose it
        # (the same state: last.ckpt may then be a link to it).
        trainer = getattr(self, "_trainer", None)
        if self._finished is None and trainer is not None and self._fitting(trainer) and trainer.validating \
                and _training_ends(trainer):
            self._marked_finished_at = trainer.global_step
            return _finished_state(trainer)
        return self._finished or {"finished": False}

    def _save(self, trainer: L.Trainer) -> None:
        """Write last.ckpt, or link it to best.ckpt when that holds this very state (at the end of
        training: only if best.ckpt was marked finished too; early stopping decided at the epoch's
        end, after the validation, is not)."""
        same = _best_written_now(trainer)
        if same is not None and self._finished is not None and self._marked_finished_at != trainer.global_step:
            same = None
        if same is None or not link_atomic(trainer, same, self.path):
            save_atomic(trainer, self.path)
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
        if self.on_first_save is not None:
            first, self.on_first_save = self.on_first_save, None
            first()

    def _fitting(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking and not trainer.fast_dev_run

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._fitting(trainer) or trainer.global_step == self._saved_step:
            return  # also: the micro-batches of one accumulated step save once, after the step
        due = bool(self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0)
        if self.every_seconds is not None:
            # every rank must agree (save_checkpoint is collective): rank 0's clock decides
            due |= bool(trainer.strategy.broadcast(time.monotonic() - self._saved_time >= self.every_seconds))
        # Not when a validation (which saves) or the epoch's end (which saves) comes right after this
        # batch: a checkpoint taken there would make the resumed run skip that validation.
        if due and not _is_last_batch(trainer) and not _validates_after_this_batch(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._fitting(trainer) and not _training_ends(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._fitting(trainer) and trainer.global_step != self._saved_step and not _training_ends(trainer):
            self._save(trainer)  # an epoch without validation (check_val_every_n_epoch > 1, no val set)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._fitting(trainer):
            # `resume=true` on this run then says it is finished, unless a limit is raised
            self._finished = _finished_state(trainer)
            self._save(trainer)
            self._finished = None


class StopOnSignal(Checkpoint):
    """SIGTERM / SIGINT during training (see gpt2tasks/signals.py): training stops at the next point
    where `last.ckpt` is written as the resume machinery writes it -- after an optimizer step that no
    validation or epoch end follows (written here, as `checkpoint.every_n_train_steps` would), else
    after that validation or epoch end (LastCheckpoint writes it) -- and then raises
    signals.Interrupted, so a resumed run goes on exactly as the uninterrupted one.

    Every rank stops at the same step: at each of those points the ranks agree (a max-reduce of the
    signal each received), so a signal that reached one rank only, or the ranks at different
    moments, stops them all together. A `Checkpoint` placed after LastCheckpoint: Lightning runs
    checkpoint callbacks last and in order, so LastCheckpoint has written at a point before this
    decides there."""

    def __init__(self, last: LastCheckpoint | None):
        self.last = last
        self.signum = 0  # agreed by every rank: the signal training stops for (0: none)
        self._step_at_batch_start = -1

    def on_train_start(self, trainer, pl_module) -> None:
        launcher = trainer.strategy.launcher  # Lightning-launched ranks: forwarded to them, as Lightning does
        signals.defer(forward=launcher.kill if launcher is not None else None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # a micro-batch of gradient accumulation: not a step boundary
        if self._agreed(trainer) and not _is_last_batch(trainer) and not _validates_after_this_batch(trainer):
            self._stop(trainer)
        # else the validation or epoch end right after this batch writes last.ckpt; it stops there

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._agreed(trainer) \
                and not _training_ends(trainer):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._agreed(trainer) and not _training_ends(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # training is over and last.ckpt (marked finished) written: the final evaluation is skipped
        if self._agreed(trainer):
            self._stop(trainer)
        signals.undefer()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        signals.undefer()

    def _agreed(self, trainer: L.Trainer) -> int:
        if not self.signum:
            local = signals.requested() or 0
            if trainer.world_size > 1:  # collective: every rank calls it at the same point
                from torch.distributed import ReduceOp

                local = int(trainer.strategy.reduce(torch.tensor(local, device=trainer.strategy.root_device),
                                                    reduce_op=ReduceOp.MAX).item())
            self.signum = local
        return self.signum

    def _stop(self, trainer: L.Trainer) -> None:
        if self.last is not None and self.last._saved_step != trainer.global_step and self.last._fitting(trainer):
            self.last._save(trainer)
        signals.undefer()
        raise signals.Interrupted(self.signum)


class RequeueOnSignal(Checkpoint):
    """SLURM's warning before the time limit (`#SBATCH --signal=SIGUSR1@90`), answered at a step's end.

    Lightning's SLURM environment (`auto_requeue`, the default under srun) registers a SIGUSR1
    handler that saves an "hpc" checkpoint and requeues the job (`scontrol requeue`); it runs
    wherever the signal lands, mid-step too, and it is a collective save called from a signal handler.
    Here the signal only sets a flag. After the next train batch where a step-interval last.ckpt
    could be taken (not one a validation or the epoch's end follows: a checkpoint there would skip
    that validation on resume), the ranks agree on it, Lightning's own handler runs (loggers
    finalized, its hpc checkpoint written, the job requeued), its checkpoint is renamed onto
    checkpoints/last.ckpt -- the state LastCheckpoint would have written there, which ResumeExactly
    continues exactly -- and this process ends. The requeued job runs `train` with resume=true
    (scripts/slurm.sbatch does so when SLURM_RESTART_COUNT > 0). A `Checkpoint`, so it runs after
    the other callbacks' batch-end hooks."""

    def __init__(self, last: Path, on_save: Callable[[], None] | None = None):
        self.last = Path(last)
        self.on_save = on_save
        self._lightning_handler: Callable | None = None
        self._signum: int | None = None
        self._signalled = False

    def on_train_start(self, trainer, pl_module) -> None:
        import signal

        from lightning.fabric.plugins.environments import SLURMEnvironment

        environment = compat.cluster_environment(trainer)  # the one Lightning's signal connector decided on
        if not (isinstance(environment, SLURMEnvironment) and environment.auto_requeue and environment.requeue_signal):
            return
        # Lightning's own handler, registered in fit before training starts -- not when another was
        # there first (Lightning then leaves the signal to it, e.g. submitit's own requeue)
        handler = signal.getsignal(environment.requeue_signal)
        if compat.is_lightning_requeue_handler(trainer, handler):
            self._signum, self._lightning_handler = environment.requeue_signal, handler
            signal.signal(self._signum, self._note)  # Lightning's teardown puts the original handler back

    def _note(self, signum, frame) -> None:
        self._signalled = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._lightning_handler is None:
            return
        # one rank may have the signal and another not yet: all requeue together, at the same step
        if not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return
        if trainer.should_stop or _is_last_batch(trainer) or _validates_after_this_batch(trainer):
            self._signalled = True  # at the next batch that can be resumed from (or training ends)
            return
        hpc = compat.hpc_save_path(trainer)  # where Lightning saves
        if trainer.is_global_zero:
            log.warning("SLURM requeue signal: saving %s at step %d and requeueing the job", self.last,
                        trainer.global_step)
        self._lightning_handler(self._signum, None)  # collective save, then rank 0 runs scontrol requeue
        if trainer.is_global_zero:
            _move_onto(hpc, self.last)
        trainer.strategy.barrier("gpt2tasks.requeue")
        if self.on_save is not None:
            self.on_save()
        raise SystemExit(0)  # the job was requeued; its next start continues from last.ckpt


def _finished_state(trainer: L.Trainer) -> dict[str, Any]:
    return {"finished": True, "max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs}


def _best_written_now(trainer: L.Trainer) -> str | None:
    """best.ckpt when it holds the state last.ckpt is about to save: written at this validation
    (or at the validation that training stopped after), with the weights still those. Its
    callback and loop states are this validation's; nothing between the validation's end and the
    end of training changes the weights (else `holds_current` says no) or what a resume does."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, BestCheckpoint) and callback.holds_current(trainer):
            return callback.best_model_path
    return None


def _training_ends(trainer: L.Trainer) -> bool:
    """Training stops after this validation or epoch end (its limits reached: ValidateAtEnd set
    `should_stop`; or early stopping), so `on_train_end` writes last.ckpt next, marked finished: a
    write here would be the same weights written again (1.5 GB for `gpt2` with its AdamW state).
    Lightning's own test (compat.can_stop_early)."""
    return bool(trainer.should_stop) and compat.can_stop_early(trainer)


def _is_last_batch(trainer: L.Trainer) -> bool:
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def _validates_after_this_batch(trainer: L.Trainer) -> bool:
    return compat.validates_after_this_batch(trainer)


class ValidateAtEnd(Callback):
    """The batch that ends training is followed by a validation, as at an epoch's end: Lightning
    validates after a batch that sets `should_stop`. Without it a run cut by `trainer.max_steps`
    before its first (or its last) validation would have no best checkpoint, or a stale one."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        steps_done = trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step
        epochs_done = (trainer.max_epochs is not None and trainer.max_epochs >= 0
                       and trainer.current_epoch + 1 >= trainer.max_epochs and _is_last_batch(trainer))
        if not (steps_done or epochs_done) or trainer.should_stop:
            return
        trainer.should_stop = True  # training ends after this batch anyway
        every = trainer.check_val_every_n_epoch
        if every and (trainer.current_epoch + 1) % every:
            trainer.check_val_every_n_epoch = 1  # the last epoch validates too


# ---- resuming ------------------------------------------------------------------------------------
class ContinueEpoch(BatchSampler):
    """A train batch sampler that starts an epoch at its first batch not yet trained on.

    `position()` gives (epoch, batches of that epoch already done); it is read when the epoch's
    iteration starts, which is after Lightning restored (or reset) its loop counters."""

    def __init__(self, inner, position: Callable[[], tuple[int, int]]):
        self.inner = inner
        self.sampler = getattr(inner, "sampler", inner)  # where Lightning calls set_epoch
        self.position = position

    def __iter__(self) -> Iterator:
        epoch, done = self.position()
        if done and hasattr(self.sampler, "set_epoch"):
            # With DataLoader workers the first indices are drawn when the iterator is made, which on
            # resume is before Lightning's set_epoch: set it here (same value Lightning sets).
            self.sampler.set_epoch(epoch)
        yield from itertools.islice(self.inner, done, None)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:  # when this is a DataLoader's `sampler` (it yields whole batches)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def continue_epochs(loader: DataLoader, position: Callable[[], tuple[int, int]]) -> DataLoader:
    """The same DataLoader, its batches (the batch sampler, or a sampler yielding whole batches with
    batch_size=None) wrapped in ContinueEpoch."""
    if loader.batch_sampler is not None:
        batches = {"batch_sampler": ContinueEpoch(loader.batch_sampler, position)}
    else:
        batches = {"sampler": ContinueEpoch(loader.sampler, position), "batch_size": None}
    if type(loader) is not DataLoader or isinstance(loader.dataset, IterableDataset):
        log.warning("The train DataLoader (%s) cannot skip batches: a run resumed mid-epoch restarts that "
                    "epoch's batches.", type(loader).__name__)
        return loader
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers else {}
    return DataLoader(loader.dataset, **batches,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                      persistent_workers=loader.persistent_workers, pin_memory_device=loader.pin_memory_device,
                      in_order=loader.in_order, **extra)


class ResumeExactly(Callback):
    """Train batches continue at the checkpoint's position; RNG states restored when training resumes."""

    def __init__(self):
        self._rng: dict | None = None
        self._complete_epoch: int | None = None  # the epoch a finished checkpoint trained to its end

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or getattr(datamodule, "_continues_epochs", False):
            return
        make = datamodule.train_dataloader

        def position() -> tuple[int, int]:
            loop = trainer.fit_loop
            epoch, done = loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.ready
            if epoch == self._complete_epoch:
                # saved at the validation that ended training with its last epoch (a last.ckpt linked
                # to best.ckpt): that epoch is done whatever its length is now (another device count)
                done = sys.maxsize
            return epoch, done

        datamodule.train_dataloader = lambda: continue_epochs(make(), position)
        datamodule._continues_epochs = True

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == "fit":
            saved = checkpoint.get("gpt2tasks", {})
            # each rank its own states when resumed on as many processes; on another number, rank 0's
            by_rank = saved.get("rng_by_rank")
            self._rng = by_rank[trainer.global_rank] if by_rank and len(by_rank) == trainer.world_size else saved.get("rng")
            self._complete_epoch = _epoch_trained_to_its_end(checkpoint)

    def on_train_start(self, trainer, pl_module) -> None:
        # Here, not when the checkpoint loads: Lightning has made the train iterator since (which
        # draws a seed from the global RNG); the uninterrupted run made its own before the checkpoint.
        if self._rng is not None:
            from gpt2tasks.tasks.base import _set_rng_state

            _set_rng_state(self._rng)
            self._rng = None


def _epoch_trained_to_its_end(checkpoint: dict[str, Any]) -> int | None:
    """The epoch of a checkpoint saved at the end of training when training ended because that epoch
    was the last (trainer.max_epochs), not at a step limit inside it; None otherwise. Such a
    checkpoint may hold the state of the epoch's final validation (LastCheckpoint links last.ckpt
    to best.ckpt then), taken before Lightning counts the epoch as done."""
    limits = finished_limits(checkpoint)
    epoch, step = checkpoint.get("epoch"), checkpoint.get("global_step")
    if not limits or not isinstance(epoch, int) or not isinstance(step, int):
        return None
    max_epochs, max_steps = limits.get("max_epochs"), limits.get("max_steps")
    # `epoch` is Lightning's count of completed epochs when saved: the last epoch's index while its
    # final validation runs (the linked state), max_epochs once on_train_end counted it (then the
    # loop counters already say the epoch is done, and nothing is to be skipped)
    by_epochs = isinstance(max_epochs, int) and max_epochs > 0 and epoch + 1 == max_epochs
    by_steps = isinstance(max_steps, int) and max_steps > 0 and step >= max_steps
    return epoch if by_epochs and not by_steps else None


# ---- what the checkpoint resumed from says (read by runfile.peek) -----------------------------------
def finished_limits(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The training limits a checkpoint written at the end of training (by LastCheckpoint) stopped
    under, or None when it was written during training."""
    for name, state in ckpt.get("callbacks", {}).items():
        if name.startswith("LastCheckpoint") and isinstance(state, dict) and state.get("finished"):
            return state
    return None


def check_can_continue(ckpt: dict[str, Any], trainer: L.Trainer, source: str, has_metrics: bool) -> None:
    """Refuse to resume a finished run unless a limit was raised: it would train no further (or, if
    it stopped early, stop again) and only rewrite metrics.json. A finished run without metrics.json
    (it failed while evaluating) is let through: fit does nothing and the final evaluation runs."""
    limits = finished_limits(ckpt) if ckpt else None
    if limits is None or not has_metrics:
        return
    step, epoch = int(ckpt.get("global_step", 0)), int(ckpt.get("epoch", 0))
    steps_left = trainer.max_steps is None or trainer.max_steps < 0 or trainer.max_steps > step
    epochs_left = trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.max_epochs > epoch
    raised = (trainer.max_steps, trainer.max_epochs) != (limits.get("max_steps"), limits.get("max_epochs"))
    if steps_left and epochs_left and raised:
        return
    raise UserError(f"{source} is the end of a finished run (epoch {epoch}, step {step}, under trainer.max_epochs="
                    f"{limits.get('max_epochs')} trainer.max_steps={limits.get('max_steps')}): there is nothing to "
                    "continue. Fix: raise trainer.max_epochs or trainer.max_steps to train further from it, or "
                    "use overwrite=true (without resume=true) to train the run again from scratch.")


def check_compatible(ckpt: dict[str, Any], module, source: str) -> None:
    """Refuse a checkpoint of another task, label set or model before fit starts (Lightning would
    fail deep inside with a list of state_dict keys): first by the settings the checkpoint records
    (named as the overrides that select them), then by its labels and tensors."""
    if not ckpt:
        return
    saved, ours = ckpt["gpt2tasks"], module.run_info
    theirs, mine = _setup(saved), _setup(ours)
    differ = [key for key in theirs if key in mine and _known(theirs[key][0]) and theirs[key][0] != mine[key][0]]
    if differ:
        trained, here = (", ".join(_shown(setup[key]) for key in differ) for setup in (theirs, mine))
        raise UserError(f"{source}: this checkpoint was trained with {trained} (this run: {here}), so this run "
                        f"cannot continue from it. Fix: add {' '.join(theirs[key][1] for key in differ)} (its run's "
                        "config.yaml has every setting it was trained with), or, to start from its weights with "
                        "another setup, export it and set model.name_or_path=<exported folder>.")
    problems = []
    if _labels(saved) != _labels(ours):
        problems.append(f"its labels {_labels(saved)} differ from this run's {_labels(ours)}")
    state = ckpt["state_dict"]
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    frozen_left_out = bool(saved.get("frozen_base_from"))
    missing = [k for k in expected if k not in state and not frozen_left_out]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        shown = ", ".join((wrong + unexpected + missing)[:3])
        problems.append(f"its weights do not fit this run's model ({len(wrong)} of another shape, "
                        f"{len(unexpected)} unknown, {len(missing)} missing; e.g. {shown})")
    if problems:
        raise UserError(f"{source} cannot resume this run: {'; '.join(problems)}. Fix: use the same "
                        "task, labels, model and peft settings as the run that wrote it (its config.yaml), "
                        "or to start from its weights with another setup, export it and set "
                        "model.name_or_path=<exported folder>.")


# The settings a checkpoint's tensors depend on: per setting (the value compared, the override that
# selects it, what it means). Labels come from the data and are compared in check_compatible.
_LORA_SHAPE_KEYS = ("r", "targets", "bias", "extra_trainable")


def _setup(info: dict) -> dict[str, tuple[Any, str, str]]:
    cfg = info.get("config") or {}
    task, peft, model = cfg.get("task") or {}, cfg.get("peft") or {}, cfg.get("model") or {}
    tasks = info.get("tasks") or {}
    hf = next(iter(tasks.values()), {}).get("hf_config") or {}
    arch = tuple(hf.get(k) for k in ("n_layer", "n_head", "n_embd", "vocab_size"))
    method = peft.get("method", "none")
    kinds = ", ".join(str(t.get("kind")) for t in tasks.values())
    setup = {"kind": (task.get("kind") if task.get("kind") == "multitask" else kinds, f"task={task.get('name')}",
                      f"a {kinds} task"),
             "peft": (method, f"peft={method}", "")}
    if method != "none":
        setup.update({f"peft.{k}": (peft.get(k), f"peft.{k}={_value(peft.get(k))}", "") for k in _LORA_SHAPE_KEYS})
    setup["model"] = (arch, _model_choice(model, arch), f"{arch[0]} layers, width {arch[2]}, vocabulary {arch[3]}")
    setup["model.pad_token"] = (model.get("pad_token"), f"model.pad_token={model.get('pad_token')}", "")
    return setup


def _known(value: Any) -> bool:
    """Recorded by the checkpoint (one of an older version may lack a key: not a difference)."""
    return value is not None and not (isinstance(value, tuple) and all(v is None for v in value))


def _shown(setting: tuple[Any, str, str]) -> str:
    _, override, meaning = setting
    return f"{override} ({meaning})" if meaning else override


def _value(value: Any) -> str:
    """A config value as an override writes it."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _model_choice(model: dict, arch: tuple) -> str:
    """`model=<preset>` when a size preset has this architecture and checkpoint, else the checkpoint."""
    import yaml

    from gpt2tasks.resources import CONF_DIR

    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        preset = yaml.safe_load(path.read_text()) or {}
        shape = preset.get("arch") or {}
        if (shape.get("n_layer"), shape.get("n_head"), shape.get("n_embd")) == arch[:3] \
                and preset.get("name_or_path") == model.get("name_or_path"):
            return f"model={path.stem}"
    if model.get("name_or_path"):
        return f"model.name_or_path={model['name_or_path']}"
    return " ".join(f"model.arch.{k}={v}" for k, v in zip(("n_layer", "n_head", "n_embd"), arch))  # a random init


def _labels(info: dict) -> Any:
    """Each task's kind and label space (a run of one task: its label space, as the message shows it)."""
    labels = {name: (t.get("kind"), t.get("label_space")) for name, t in info["tasks"].items()}
    return labels if (info.get("config") or {}).get("tasks") else next(iter(labels.values()))[1]
