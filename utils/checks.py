"""Checks of command-line values, shared by the scripts: each returns the value or raises an ``InputError`` that
names the flag, the value given and what was expected (one line, exit code 2 through ``fail_cleanly``)."""

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
