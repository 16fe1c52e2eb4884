"""The checks of command-line values shared by the scripts: every float flag of train.py, test.py and index.py
refuses nan and inf with one line naming the flag."""

import argparse
import subprocess
import sys

import pytest

import index
from networks.config import CONFIGS
from retrieval import settings
from tests.conftest import ROOT
from training import options
from utils.errors import InputError

PARSERS = {**{f"train.py --model {model}": options.get_args_parser(model) for model in CONFIGS},
           "test.py": settings.get_args_parser(), "index.py": index.get_args_parser()}


def float_flags(parser, command=()):
    """(argv of a subcommand, its required flags, a float action) for every float flag, subcommands included."""
    required = [arg for a in parser._actions if a.required and a.option_strings for arg in (a.option_strings[0], "x")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from float_flags(subparser, (*command, name))
        elif getattr(action.type, "__name__", None) == "float":
            yield [*command, *required], action


def count(action):
    return action.nargs if isinstance(action.nargs, int) else 1


CASES = [(name, argv, action, bad) for name, parser in PARSERS.items() for argv, action in float_flags(parser)
         for bad in ("nan", "inf", "-inf") if bad != "-inf" or count(action) == 1]  # "--flag=-inf" only


@pytest.mark.parametrize("name,argv,action,bad", CASES,
                         ids=[f"{name}:{' '.join(argv[:1])}{action.option_strings[0]}={bad}"
                              for name, argv, action, bad in CASES])
def test_every_float_flag_refuses_nan_and_inf(name, argv, action, bad):
    flag = action.option_strings[0]
    values = [f"{flag}={bad}"] if count(action) == 1 else [flag, *[bad] * count(action)]
    with pytest.raises(InputError, match=f"^{flag} {bad}: expected a finite number") as err:
        PARSERS[name].parse_args([*argv, *values])
    assert "\n" not in str(err.value)


def test_the_float_flags_are_found():
    flags = {action.option_strings[0] for _, _, action, _ in CASES}
    assert {"--alpha", "--whiten-power", "--scales", "--lr", "--crop-scale", "--box", "--gem-p"} <= flags


def test_finite_values_still_parse():
    assert PARSERS["test.py"].parse_args(["--checkpoint", "x", "--data-root", "x", "--alpha", "2.5"]).alpha == 2.5


def test_test_py_alpha_nan_is_one_line_and_exit_code_2():
    result = subprocess.run([sys.executable, "test.py", "--checkpoint", "x", "--data-root", "x", "--alpha", "nan"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --alpha nan: expected a finite number (nan and inf are refused)"]
