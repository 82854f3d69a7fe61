"""How a command ends on SIGTERM (a scheduler's stop, `scancel`, `kill`) or SIGINT (Ctrl+C): the
way schedulers expect, with exit status 128 + the signal number (143, 130) and nothing half-written.

Outside a training loop the signal stops the command at once: `Interrupted` (a SystemExit carrying
that status) is raised where the program is, and unwinds through the same clean-up as any error
(outputs are written atomically, temporary folders are context managers), so `predict`, `eval`
and `export` leave no partial output. `cli.run_and_report` turns it into one line and the status.

Inside `trainer.fit`'s training loop the signal only *asks* to stop (`deferred`): the loop stops
at the next step boundary where `last.ckpt` can be written exactly as the resume machinery writes
it (resume.StopOnSignal), then raises `Interrupted`. A second signal while stopping stops at once
(the `last.ckpt` already on disk is kept), except while a checkpoint is being written (`writing`):
that write completes first, so the file is never cut short.

Lightning 2.6 has its own SIGTERM handling (trainer.received_sigterm, raising SIGTERMException, a
SystemExit with status 0, at a batch's end): it reports success to the scheduler, abandons a
validation in progress, and each DDP rank reads its own flag. StopOnSignal therefore takes over
SIGTERM during the training loop (Lightning restores its handlers at teardown), keeping what
Lightning does that matters: the signal is forwarded to the ranks Lightning launched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("gpt2tasks")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SystemExit):
    """A command stopped by a signal: exits with status 128 + signum (SIGTERM 143, SIGINT 130).
    `note`: what the user should know (e.g. how to resume), printed by cli.run_and_report."""

    def __init__(self, signum: int, note: str = ""):
        super().__init__(128 + signum)
        self.signum = signum
        self.note = note

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class _State:
    """What the handler knows: whether the training loop is deferring, the signal it was asked to
    stop by (`requested`), whether a checkpoint is being written, and a second signal that came
    during that write (`pending`)."""

    def __init__(self) -> None:
        self.deferring = False
        self.requested: int | None = None
        self.writing = 0
        self.pending: int | None = None
        self.forward: Callable[[int], None] | None = None
        self.owner = os.getpid()  # the process whose command this is (set by install)


_state = _State()


def _handle(signum: int, frame) -> None:
    if os.getpid() != _state.owner:
        # A forked child (a DataLoader worker) inherits the handler: it behaves as Python's default
        # (torch's workers end quietly on KeyboardInterrupt); the parent decides when to stop.
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state.forward is not None:
        _state.forward(signum)  # the ranks Lightning launched stop too (each agrees on the step: StopOnSignal)
    if not _state.deferring:
        raise Interrupted(signum)
    if _state.requested is None:
        _state.requested = signum
        log.warning("%s received: stopping after this step, once checkpoints/last.ckpt is written (a second "
                    "signal stops at once, keeping the last.ckpt already on disk).", signal.Signals(signum).name)
        return
    if _state.writing:
        _state.pending = signum  # raised once the checkpoint on its way to disk is complete
        return
    raise Interrupted(signum)


def install() -> None:
    """Our handler for SIGTERM and SIGINT (main thread only: Python allows no other)."""
    if threading.current_thread() is threading.main_thread():
        _state.owner = os.getpid()
        for signum in SIGNALS:
            signal.signal(signum, _handle)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Around a whole command: SIGTERM / SIGINT raise Interrupted; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def defer(forward: Callable[[int], None] | None = None) -> None:
    """From here (the training loop), a signal asks to stop (see `requested`) instead of raising.
    `forward(signum)`: passes it on to child processes."""
    _state.deferring, _state.requested, _state.pending, _state.forward = True, None, None, forward
    install()  # again: Lightning put its own SIGTERM handler in place when fit started


def undefer() -> None:
    _state.deferring, _state.forward = False, None


def requested() -> int | None:
    """The signal this process was asked to stop by while deferring (None: none)."""
    return _state.requested


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """A checkpoint write no signal interrupts: a second signal during it takes effect once it is done."""
    _state.writing += 1
    try:
        yield
    finally:
        _state.writing -= 1
    if not _state.writing and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        raise Interrupted(signum)
