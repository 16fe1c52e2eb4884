"""The scripts' exit codes, and clear errors for bad input: one line naming the file and what was expected, exit code
2, no traceback."""

import functools
import sys

from utils.command import EXIT_INTERRUPTED, INTERRUPTED, main_handles_interrupts

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3  # train.py: the loss or the weights became NaN


class InputError(Exception):
    """Bad user input (missing path, malformed file). Scripts turn it into one line and exit code 2."""


def fail_cleanly(main):
    """Decorate a script's ``main``: an ``InputError`` prints ``error: <message>`` and exits with code 2; Ctrl-C
    (SIGINT, ``KeyboardInterrupt``) prints ``error: interrupted`` and exits with code 130. Files written so far
    stay: every one is written whole or not at all (``utils.atomic``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        main_handles_interrupts()  # a Ctrl-C during the imports has ended the process already (utils.command)
        try:
            return main(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            pass  # leaving the except block frees the interrupted frames: their destructors print before this line
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)

    return wrapper


def require_path(path, what):
    """Return ``path`` if it exists, else raise an ``InputError`` naming it and what it should hold."""
    from pathlib import Path

    if not Path(path).exists():
        raise InputError(f"{path} not found: expected {what}")
    return path
