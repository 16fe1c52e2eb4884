"""utils.interrupts with real SIGINTs sent to this process."""

import os
import signal

import pytest

from utils.interrupts import interrupts_deferred


def test_a_sigint_in_the_block_is_raised_when_it_ends():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("end of the block")  # a Python bytecode later: the signal has been handled (noted)
    assert reached == ["end of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # and after it, SIGINT raises at once again
        os.kill(os.getpid(), signal.SIGINT)


def test_without_a_sigint_nothing_is_raised_and_an_ignored_sigint_stays_ignored():
    with interrupts_deferred():
        pass
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
