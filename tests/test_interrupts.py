"""Ctrl-C with real SIGINTs: utils.interrupts in this process, utils.command in every command's real process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from utils import command
from utils.errors import fail_cleanly
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


# Every command of the project: the entry scripts and the python -m modules.
COMMANDS = [["train.py"], ["test.py"], ["demo.py"], ["visualize.py"], ["index.py"], ["-m", "datasets.download"],
            ["-m", "datasets.synthetic"],
            *[["-m", f"benchmarks.{name}"] for name in ("eval", "extract", "index", "loader", "search", "gpu_check")]]


def importing_a_library(pid):
    """Whether process ``pid`` has begun to load a compiled module of an installed package (numpy, torch,
    pandas...): the entry script's own imports have started, long before they end."""
    try:
        return "site-packages/" in Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:  # it has ended already
        return True


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_ctrl_c_while_a_command_imports_its_modules_is_one_line_and_exit_130(command):
    """A real SIGINT to a real process while its modules are still importing (before: a KeyboardInterrupt
    traceback from whatever module was importing, exit status 1 or killed by the signal). ``--help`` would print
    the usage and exit 0 had the signal come after the imports: nothing on stdout shows it came during them."""
    run = subprocess.Popen([sys.executable, *command, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not importing_a_library(run.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert (run.returncode, out, err) == (130, "", "error: interrupted\n")


def test_imported_as_a_library_the_commands_leave_sigint_alone():
    """Importing an entry script (a test, a notebook, ``python -c``) installs nothing: Python's handler stays;
    and once ``main`` starts (``fail_cleanly``), Python's handler is back for the command's own Ctrl-C path."""
    code = ("import signal, index, train, datasets.download; from utils.errors import fail_cleanly; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    probe = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert probe.stdout == "True\n", probe.stderr
    signal.signal(signal.SIGINT, command._exit_interrupted)  # as a command's first import leaves it
    try:
        handler = fail_cleanly(lambda: signal.getsignal(signal.SIGINT))()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert handler is signal.default_int_handler
