"""The demo keeps its promise: it runs end to end, writes what it says, prints the same table whatever --jobs,
trains and evaluates the Table 1 baselines it is given (--models), and its full recipe lifts the trained Token far
above the untrained one."""

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import demo

ROWS = {"untrained Token", "trained Token", "trained GeM baseline"}


def run_demo(capfd, *flags):
    summary = demo.main([*flags])
    captured = capfd.readouterr()  # the workers' output too
    return summary, captured.out, captured.err


def test_quick_demo_end_to_end_writes_what_it_says_and_jobs_do_not_change_the_table(tmp_path, capfd):
    data = tmp_path / "data"
    summary, printed, logged = run_demo(capfd, "--quick", "--run-dir", str(tmp_path / "two"), "--data-root", str(data))
    assert set(summary["mAP"]) == ROWS
    for row in summary["mAP"].values():
        assert all(0 <= row[p] <= 100 for p in ("easy", "medium", "hard"))
    out = tmp_path / "two"
    assert json.loads((out / "results.json").read_text())["mAP"] == summary["mAP"]
    for name in ("token", "gem"):
        assert (out / name / "last.pth").is_file() and (out / name / "metrics.csv").is_file()
        assert (out / name / "eval" / "results.json").is_file()
    for figure in ("training_curves.png", "retrievals.png", "attention.png"):
        with Image.open(out / "figures" / figure) as png:
            assert png.size[0] >= 800 and png.size[1] >= 100
    assert "| trained Token |" in printed and "| model | Easy | Medium | Hard |" in printed
    [wrote] = [line for line in printed.splitlines() if line.startswith("wrote ")]
    paths = wrote.removeprefix("wrote ").split(", ")
    assert len(paths) == 4 and all(Path(p).is_file() for p in paths), paths
    assert "None" not in wrote
    assert "[trained Token] epoch 1/1: train loss" in logged and "it/s]" not in logged  # no bars over each other

    again, printed_again, _ = run_demo(capfd, "--quick", "--jobs", "1", "--run-dir", str(tmp_path / "one"),
                                    "--data-root", str(data))
    table = lambda text: re.findall(r"^\|.*\|$", text, re.M)  # noqa: E731
    assert again["mAP"] == summary["mAP"] and table(printed_again) == table(printed)


def test_quick_demo_trains_and_evaluates_the_baselines_it_is_given(tmp_path, capfd):
    root = logging.getLogger()
    logging_before = root.level, root.handlers[:]
    summary, printed, logged = run_demo(capfd, "--quick", "--models", "netvlad", "delg", "--jobs", "1",
                                        "--run-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "data"))
    assert list(summary["mAP"]) == ["trained DELG", "trained NetVLAD"] and summary["models"] == ["delg", "netvlad"]
    for name in ("delg", "netvlad"):
        state = torch.load(tmp_path / "run" / name / "last.pth", weights_only=True)
        assert state["model_config"]["model"] == name and state["args"]["model"] == name
        assert (tmp_path / "run" / name / "eval" / "results.json").is_file()
    assert "train_loss_local" in (tmp_path / "run" / "delg" / "metrics.csv").read_text().splitlines()[0]
    assert "| trained NetVLAD |" in printed and "(local " in logged
    assert not (tmp_path / "run" / "figures").exists()  # the figures are the trained Token's
    assert (root.level, root.handlers) == logging_before  # --jobs 1 ran in this process and left its logging alone


def test_quick_demo_trains_one_how_for_its_asmk_vlad_and_aggregator_rows(tmp_path, capfd):
    summary, printed, logged = run_demo(capfd, "--quick", "--models", "how-token", "how-vlad", "how-asmk", "--jobs",
                                        "1", "--run-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "data"))
    assert list(summary["mAP"]) == ["trained HOW + ASMK", "trained HOW + VLAD", "trained HOW + Token aggregator"]
    for row in summary["mAP"].values():
        assert all(0 <= row[p] <= 100 for p in ("easy", "medium", "hard"))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["aggregator", "how", "results.json"]  # one HOW for all rows
    assert torch.load(run / "how" / "last.pth", weights_only=True)["model_config"]["model"] == "how"
    for method in ("asmk", "vlad"):
        results = json.loads((run / "how" / f"eval-{method}" / "results.json").read_text())
        assert list(results["datasets"]["synthetic"]["runs"]) == [method] and results["local"]["method"] == method
        assert results["datasets"]["synthetic"]["runs"][method]["medium"]["mAP"] == \
            summary["mAP"][f"trained HOW + {method.upper()}"]["medium"]
    aggregator = torch.load(run / "aggregator" / "last.pth", weights_only=True)
    assert aggregator["model_config"]["model"] == "aggregator"
    assert aggregator["extractor"]["path"] == os.path.abspath(run / "how" / "last.pth")  # the HOW trained here
    results = json.loads((run / "aggregator" / "eval" / "results.json").read_text())
    assert results["model"] == "aggregator" and results["scales"] == [1.0]
    assert results["datasets"]["synthetic"]["runs"]["exact"]["medium"]["mAP"] == \
        summary["mAP"]["trained HOW + Token aggregator"]["medium"]
    assert "| trained HOW + ASMK |" in printed and "[trained HOW] asmk: mAP Medium" in logged
    assert "| trained HOW + Token aggregator |" in printed


def test_the_default_models_are_the_three_that_make_demo_runs():
    assert demo.get_args_parser().parse_args([]).models == ["token", "gem", "untrained"]


def test_bad_training_settings_stop_the_demo_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        demo.main(["--epochs", "0", "--run-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "data")])
    assert stop.value.code == 2 and "--epochs" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_the_demo_recipe_lifts_the_token_by_20_medium_points(tmp_path, capfd):
    """The demo's world and recipe as `make demo` runs them, in a temporary folder, without the GeM row: each model
    trains and is evaluated on one thread of its own, so the two rows compared are those `make demo` prints."""
    summary, _, _ = run_demo(capfd, "--models", "token", "untrained", "--run-dir", str(tmp_path / "run"),
                             "--data-root", str(tmp_path / "data"))
    untrained, token = (summary["mAP"][name]["medium"] for name in ("untrained Token", "trained Token"))
    assert token >= untrained + 20, summary["mAP"]
