"""Checks of command-line values, shared by the scripts: each returns the value or raises an ``InputError`` that
names the flag, the value given and what was expected (one line, exit code 2 through ``fail_cleanly``)."""

import argparse
import math

from utils.errors import InputError


def _fail(flag, value, expected):
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    raise InputError(f"{flag} {shown}: expected {expected}")


def positive_int(flag, value):
    if value < 1:
        _fail(flag, value, "a whole number of at least 1")
    return value


def non_negative_int(flag, value):
    if value < 0:
        _fail(flag, value, "a whole number of at least 0")
    return value


def positive_float(flag, value):
    """A finite number > 0 (nan and inf are refused)."""
    if not (math.isfinite(value) and value > 0):
        _fail(flag, value, "a finite number greater than 0")
    return value


def non_negative_float(flag, value):
    """A finite number >= 0."""
    if not (math.isfinite(value) and value >= 0):
        _fail(flag, value, "a finite number of at least 0")
    return value


def unit_interval(flag, value):
    """A number in [0, 1] (a probability)."""
    if not 0 <= value <= 1:
        _fail(flag, value, "a number from 0 to 1")
    return value


def ordered_pair(flag, pair, low, high):
    """Two numbers MIN MAX with ``low < MIN <= MAX <= high``."""
    first, second = pair
    if not (low < first <= second <= high):
        _fail(flag, pair, f"MIN MAX with {low} < MIN <= MAX <= {high}")
    return pair


def in_range(flag, value, low, high):
    """A whole number from ``low`` to ``high``."""
    if not low <= value <= high:
        _fail(flag, value, f"a whole number from {low} to {high}")
    return value


def int_in(low, high):
    """An argparse ``type``: a whole number from ``low`` to ``high``, refused with one line naming the flag once the
    parser has passed through ``check_flags``."""

    def whole_number(text):
        return int(text)

    whole_number.__name__ = "int"  # argparse's "invalid int value: 'x'" for text that is not a number
    whole_number.bounds = (low, high)
    return whole_number


SEED = int_in(0, 2**32 - 1)  # what numpy's and the data loaders' generators take
IMSIZE = int_in(32, 4096)  # pixels: the backbone's stride at least; beyond 4096 a batch needs tens of GB
THREADS = int_in(1, 1024)
WORKERS = int_in(0, 256)  # loader or generator processes: each holds a Python and its modules (hundreds of MB)
EXTRACT_BATCH = int_in(1, 1024)  # images of one size through the model together: 1024 at 1024 px are ~10 GB


def check_flags(parser):
    """Check every typed flag of ``parser`` and of its subcommands as argparse converts it, whatever its ``nargs``
    or ``type``: a value that comes out as a float must be finite (``float`` takes nan and inf, and a check such as
    ``alpha < 0`` lets nan through), one made by ``int_in`` within its bounds; one line naming the flag, as the
    checks above. Returns ``parser``; every entry point's parser passes through it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                check_flags(subparser)
        elif callable(action.type):
            action.type = _checked(action.option_strings[0] if action.option_strings else action.dest, action.type)
    return parser


def _checked(flag, convert):
    def check(text):
        value = convert(text)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(flag, text, "a finite number (nan and inf are refused)")
        if hasattr(convert, "bounds"):
            in_range(flag, value, *convert.bounds)
        return value

    check.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid float value: 'x'"
    return check
