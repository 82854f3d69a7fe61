"""gpt2tasks/signals.py: a signal stops at once outside training, only asks to stop inside it, and a
second signal never cuts a checkpoint write short."""

import os
import signal
import time

import pytest

from gpt2tasks import signals


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs between bytecodes, at the latest here


def test_outside_training_a_signal_stops_at_once_with_128_plus_its_number():
    with signals.stop_on_signals():
        for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            with pytest.raises(signals.Interrupted) as stop:
                _send(signum)
            assert stop.value.code == status and stop.value.name == signal.Signals(signum).name
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_in_training_the_first_signal_asks_and_a_second_waits_for_the_write():
    with signals.stop_on_signals():
        signals.defer()
        try:
            _send(signal.SIGTERM)  # asks only
            assert signals.requested() == signal.SIGTERM
            written = False
            with pytest.raises(signals.Interrupted) as stop:
                with signals.writing():
                    _send(signal.SIGINT)  # a second signal mid-write: after the write
                    written = True
            assert written and stop.value.code == 130
            with pytest.raises(signals.Interrupted):  # a second signal outside a write: at once
                _send(signal.SIGTERM)
        finally:
            signals.undefer()
        with pytest.raises(signals.Interrupted):
            _send(signal.SIGTERM)
