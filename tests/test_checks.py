"""The checks of command-line values shared by the scripts: every float flag of train.py, test.py and index.py
refuses nan and inf with one line naming the flag."""

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import demo
import index
import visualize
from benchmarks import eval as bench_eval
from benchmarks import extract as bench_extract
from benchmarks import gpu_check
from benchmarks import index as bench_index
from benchmarks import loader as bench_loader
from benchmarks import search as bench_search
from datasets.download import cli as download_cli
from datasets.synthetic import cli as synthetic_cli
from networks.config import CONFIGS
from retrieval import settings
from tests.conftest import ROOT
from training import options
from utils import checks
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


def test_a_float_flag_of_any_type_and_nargs_refuses_nan():
    """The check follows the value, not ``type=float``: a converter of its own or several values per flag are
    covered too (issue 22, 14: index.py query --box nan tracebacked)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--box", type=lambda text: float(text), nargs=4, action="append")
    checks.check_flags(parser)
    with pytest.raises(InputError, match=r"^--box inf: expected a finite number"):
        parser.parse_args(["--box", "0", "0", "inf", "1"])
    assert parser.parse_args(["--box", "0", "0", "1", "1"]).box == [[0, 0, 1, 1]]


def test_index_query_box_nan_is_one_line_and_exit_code_2():
    result = subprocess.run([sys.executable, "index.py", "query", "--index", "x", "q.jpg", "--box", "0", "0", "nan",
                             "1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --box nan: expected a finite number (nan and inf are refused)"]


SEEDS = "a whole number from 0 to 4294967295"
# (entry point's parse, argv, the one line expected): the numeric flags of issue 22, 17, through checks.int_in
NUMERIC = [
    (options.parse_args, ["--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (options.parse_args, ["--split-seed", "-1"], f"--split-seed -1: expected {SEEDS}"),
    (options.parse_args, ["--imsize", "100000"], "--imsize 100000: expected a whole number from 32 to 4096"),
    (options.parse_args, ["--arcface-margin", "inf"], "--arcface-margin inf: expected a finite number"),
    (demo.get_args_parser().parse_args, ["--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (demo.get_args_parser().parse_args, ["--jobs", "0"], "--jobs 0: expected a whole number from 1 to 64"),
    (visualize.parse_args, ["retrievals", "--data-root", "x", "--dataset", "x", "--features", "x", "--out", "x.png",
                            "--width", "100000000"], "--width 100000000: expected a whole number from 100 to 10000"),
    (visualize.parse_args, ["attention", "--checkpoint", "x", "--images", "x", "--out", "x.png", "--imsize", "0"],
     "--imsize 0: expected a whole number from 32 to 4096"),
    (bench_eval.get_args_parser().parse_args, ["--threads", "0"], "--threads 0: expected a whole number from 1 to"),
    (bench_eval.get_args_parser().parse_args, ["--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (bench_eval.get_args_parser().parse_args, ["--queries", "-1"], "--queries -1: expected a whole number from 1"),
    (bench_index.get_args_parser().parse_args, ["--sizes", "0"], "--sizes 0: expected a whole number from 1000"),
    (bench_index.get_args_parser().parse_args, ["--dim", "-1"], "--dim -1: expected a whole number from 16"),
    (bench_index.get_args_parser().parse_args, ["--budget", "nan"], "--budget nan: expected a finite number"),
    (bench_loader.get_args_parser().parse_args, ["--long-side", "0", "0"], "--long-side 0: expected a whole number"),
    (bench_loader.get_args_parser().parse_args, ["--imsize", "-1"], "--imsize -1: expected a whole number from 32"),
    (bench_extract.get_args_parser().parse_args, ["--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (bench_search.get_args_parser().parse_args, ["--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (bench_search.get_args_parser().parse_args, ["--latency-budget", "inf"], "--latency-budget inf: expected a finite"),
    (gpu_check.get_args_parser().parse_args, ["--budget-s", "nan"], "--budget-s nan: expected a finite number"),
    (gpu_check.get_args_parser().parse_args, ["--workers", "-1"], "--workers -1: expected a whole number from 0"),
    (PARSERS["test.py"].parse_args, ["--imsize", "100000"], "--imsize 100000: expected a whole number from 32 to 4096"),
    (index.get_args_parser().parse_args, ["build", "--images", "x", "--index", "x", "--checkpoint", "x", "--imsize",
                                          "100000"], "--imsize 100000: expected a whole number from 32 to 4096"),
    (index.get_args_parser().parse_args, ["query", "--index", "x", "q.jpg", "--topk", "0"],
     "--topk 0: expected a whole number from 1 to 10000"),
    # upper bounds: a loader process each, a batch in memory, a thread each
    (PARSERS["test.py"].parse_args, ["--batch-size", "100000000"], "--batch-size 100000000: expected a whole number "
                                                                   "from 1 to 1024"),
    (PARSERS["test.py"].parse_args, ["--workers", "100000"], "--workers 100000: expected a whole number from 0 to 256"),
    (PARSERS["test.py"].parse_args, ["--pq", "100000000"], "--pq 100000000: expected a whole number from 1 to 65536"),
    (PARSERS["test.py"].parse_args, ["--pq-bits", "17"], "--pq-bits 17: expected a whole number from 1 to 16"),
    (options.parse_args, ["--workers", "100000"], "--workers 100000: expected a whole number from 0 to 256"),
    (download_cli._parser().parse_args, ["gldv2", "--data-root", "x", "--jobs", "100000"],
     "--jobs 100000: expected a whole number from 1 to 64"),
    (download_cli._parser().parse_args, ["gldv2", "--data-root", "x", "--jobs", "0"],
     "--jobs 0: expected a whole number from 1 to 64"),
    (synthetic_cli.get_args_parser().parse_args, ["--root", "x", "--workers", "100000"],
     "--workers 100000: expected a whole number from 0 to 256"),
    (synthetic_cli.get_args_parser().parse_args, ["--root", "x", "--seed", "-1"], f"--seed -1: expected {SEEDS}"),
    (synthetic_cli.get_args_parser().parse_args, ["--root", "x", "--train-landmarks", "100000000"],
     "--train-landmarks 100000000: expected a whole number from 1 to 100000"),
]


@pytest.mark.parametrize("parse,argv,expected", NUMERIC, ids=[" ".join(argv[-2:]) for _, argv, _ in NUMERIC])
def test_numeric_flags_are_refused_as_they_are_parsed(parse, argv, expected):
    with pytest.raises(InputError, match=f"^{re.escape(expected)}") as err:
        parse(argv)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("main,argv,expected", [
    (bench_loader.main, ["--long-side", "100", "50"], "--long-side 100 50: expected MIN MAX with 0 < MIN <= MAX"),
    (bench_eval.main, ["--out", "/proc/eval.json"], "--out /proc/eval.json: its folder /proc"),
    (bench_index.main, ["--out", "/proc/index.json"], "--out /proc/index.json: its folder /proc"),
    (bench_extract.main, ["--checkpoint", "BAD"], "BAD: refused to load"),
    (gpu_check.main, ["--budget-s", "-1", "--device", "cpu", "--smoke"], "--budget-s -1.0: expected a finite number"),
], ids=["loader --long-side 100 50", "eval --out read-only", "index --out read-only", "extract --checkpoint bad",
        "gpu_check --budget-s -1"])
def test_benchmark_mains_fail_with_one_line_and_exit_code_2(main, argv, expected, tmp_path, capsys):
    argv, expected = [str(tmp_path / "bad.pth") if a == "BAD" else a for a in argv], \
        expected.replace("BAD", str(tmp_path / "bad.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    out = [] if "--out" in argv else ["--out", str(tmp_path / "report.json")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *out] if main is gpu_check.main else [*argv, *out, "--quick"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines


@pytest.mark.parametrize("dims,expected", [
    ("0", "--dims 0: expected a whole number from 1 to 65536"),
    ("-1", "--dims -1: expected a whole number from 1 to 65536"),
    ("10", "--dims 10: expected a whole number from 1 to 9 (10 descriptors of dimension 16 have at most 9 directions)"),
    ("1000", "--dims 1000: expected a whole number from 1 to 9"),
])
def test_index_whiten_dims_is_checked_against_the_index_before_any_work(dims, expected, tmp_path, capsys):
    """index.py whiten --dims 0 gave all-zero scores, -1 silently kept N - 2, 1000 kept null directions."""
    from retrieval.image_index import DESCRIPTORS, FORMAT, INDEX_FILE
    from retrieval.index_files import file_entry

    (tmp_path / "idx").mkdir()
    np.save(tmp_path / "idx" / DESCRIPTORS, np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32))
    meta = {"format": FORMAT, "count": 10, "dim": 16, "parts": ["collection"],  # what read_meta accepts
            "files": {DESCRIPTORS: file_entry(tmp_path / "idx" / DESCRIPTORS)}}
    (tmp_path / "idx" / INDEX_FILE).write_text(json.dumps(meta))
    argv = ["whiten", "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "W.npz"), "--dims"]
    with pytest.raises(SystemExit) as exit_:
        index.main([*argv, dims])
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert not (tmp_path / "W.npz").exists()
    index.main([*argv, "9"])
    with np.load(tmp_path / "W.npz") as arrays:
        assert arrays["components"].shape == (9, 16)
