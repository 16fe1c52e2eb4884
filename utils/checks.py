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


def finite_float_flags(parser):
    """Make every ``type=float`` flag of ``parser`` and of its subcommands refuse nan and inf (``float`` takes
    them, and a check such as ``alpha < 0`` lets nan through): one line naming the flag, as the checks above.
    Returns ``parser``; train.py's, test.py's and index.py's parsers pass through it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                finite_float_flags(subparser)
        elif action.type is float:
            action.type = _finite_float(action.option_strings[0] if action.option_strings else action.dest)
    return parser


def _finite_float(flag):
    def check(text):
        value = float(text)
        if not math.isfinite(value):
            _fail(flag, text, "a finite number (nan and inf are refused)")
        return value

    check.__name__ = "float"  # what argparse names in "invalid float value: 'x'" for text that is not a number
    return check
