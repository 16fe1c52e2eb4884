"""Ctrl-C from the first instant of a command: the first import of every entry script and of the packages that
``python -m`` imports before one (``datasets.download``, ``benchmarks.gpu_check``), set apart by ``# isort: split``:

    import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

    # isort: split

From then on, while the modules import (seconds: torch, faiss, pandas), a SIGINT prints ``error: interrupted`` and
ends the process with exit code 130 at once (nothing has been written yet), where Python's handler would raise
``KeyboardInterrupt`` in whatever module was importing: a traceback. ``utils.errors.fail_cleanly`` puts Python's
handler back as ``main`` starts (``main_handles_interrupts``) and from there gives the same line and exit code.
Imported by anything else (a library module, a test, a notebook, torch.hub, ``python -c``), it changes nothing; an
ignored SIGINT (``SIG_IGN``) stays ignored. Only the standard library's already loaded modules are used, so that
the handler is in place within a millisecond of the script's first line (``signal`` would import ``enum``).
"""

import _signal
import os
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command that Ctrl-C ended
INTERRUPTED = "error: interrupted"


def _exit_interrupted(signum, frame):
    os.write(2, f"{INTERRUPTED}\n".encode())
    os._exit(EXIT_INTERRUPTED)


def main_handles_interrupts():
    """Python's own SIGINT handler (``KeyboardInterrupt``) back, if this module's is in place."""
    if _signal.getsignal(_signal.SIGINT) is _exit_interrupted:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def _importer():
    """The globals of the module whose import statement brought this one in (past importlib's frames)."""
    frame = sys._getframe(1)  # this module's own frame, then importlib's (named importlib.* once it is imported)
    while frame is not None and \
            frame.f_globals.get("__name__", "").startswith((__name__, "_frozen_importlib", "importlib")):
        frame = frame.f_back
    return frame.f_globals if frame is not None else {}


_by = _importer()
_as_command = (_by.get("__name__") == "__main__" and "__file__" in _by) or sys.argv[:1] == ["-m"]  # a script run
# as a command, or "python -m" importing the packages of its module
if _as_command and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _exit_interrupted)
