"""experiments/: the table scripts hold the paper's rows (their flags parse with train.py's parser, each row builds
its model) and ``python -m experiments.ablations`` runs, stores, skips and tabulates the same rows."""

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import ablations, probe, runner
from experiments.report import markdown
from experiments.runner import plan
from experiments.tables import PAPER_TABLES, TABLES, Row, Table
from networks import build_model
from networks.config import TokenConfig
from training.options import model_config, parse_args
from training.recipes import DEMO, QUICK
from weights import model_state, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PAPER_ROWS = [(table, row) for table in PAPER_TABLES for row in TABLES[table].rows]


def launched(script, *args, env=None):
    """What ``sh script args`` hands torchrun (a stub printing its arguments), and the script's return code."""
    stub = {**os.environ, "TORCHRUN": "printf %s\\n", **(env or {})}
    done = subprocess.run(["sh", str(ROOT / script), *args], env=stub, capture_output=True, text=True, cwd=ROOT)
    return done.stdout.splitlines(), done.returncode, done.stderr


def train_args(argv):
    """train.py's parsed flags among torchrun's arguments."""
    return parse_args(argv[next(i for i, a in enumerate(argv) if a.endswith("train.py")) + 1:])


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_a_script_without_a_known_row_names_its_rows_in_one_line(table):
    for args in ([], ["nonsense"]):
        out, code, err = launched(f"experiments/table{table}.sh", *args)
        assert (code, out, len(err.splitlines())) == (2, [], 1)
        rows = err.split("rows: ")[1].split(" (")[0].split()
        assert rows == [row.key for row in TABLES[table].rows]


@pytest.mark.parametrize(("table", "row"), PAPER_ROWS, ids=[f"{t}-{r.key}" for t, r in PAPER_ROWS])
def test_each_script_row_is_the_paper_recipe_with_the_rows_model_and_builds_it(table, row):
    out, code, err = launched(f"experiments/table{table}.sh", row.key, "--amp", "bf16")
    assert code == 0, err
    args = train_args(out)
    reference, _, _ = launched("experiment.sh", env={"OUTPUT_DIR": f"runs/table{table}/{row.key}"})
    recipe = vars(train_args(reference))
    assert model_config(args) == TokenConfig(**row.model)  # the paper's model but for the row's change
    assert {k: v for k, v in vars(args).items() if k not in TokenConfig.__dataclass_fields__} == {
        **{k: v for k, v in recipe.items() if k not in TokenConfig.__dataclass_fields__}, "amp": "bf16"}
    torch.manual_seed(0)
    model = build_model(replace(model_config(args), backbone="resnet18"), pretrained=False).eval()
    with torch.no_grad():
        descriptors = model.forward_test(torch.randn(2, 3, 64, 64))
    assert descriptors.shape == (2, 1024)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2))


def test_plan_runs_shared_rows_once_seed_by_seed_with_each_rows_settings():
    rows = [row for table in TABLES.values() for row in table.rows]
    jobs = plan(rows, [0, 1], DEMO, "data/x", "runs/x")
    names = [job.name for job in jobs]
    assert len(names) == len(set(names)) == 2 * len({row.job for row in rows})
    assert [job.seed for job in jobs] == sorted(job.seed for job in jobs)
    by_name = {job.name: job.recipe for job in jobs}
    assert by_name["token seed 1"].model == DEMO.model and by_name["token seed 1"].data_root == "data/x/seed-1"
    assert by_name["num_tokens=8 seed 0"].model == {**DEMO.model, "num_tokens": 8}
    longer = by_name["aggregation=gem-epochs=16 seed 0"]
    assert (longer.epochs, longer.model["aggregation"], longer.run_dir) == (16, "gem",
                                                                          "runs/x/aggregation=gem-epochs=16/seed-0")


def test_the_table_gives_mean_and_min_max_over_the_seeds_and_marks_rows_not_run():
    table = Table("t", "c", (Row("a", "A", dict(num_tokens=2), paper="1 / 2"), Row("b", "B", dict(num_tokens=3))))
    results = {"num_tokens=2": {0: {"mAP": {"medium": 10.0, "hard": 1.0}}, 2: {"mAP": {"medium": 40.0, "hard": 4.0}}}}
    lines = markdown({"9": table}, results).splitlines()
    assert "| A (`a`) | 1 / 2 | 25.00 (10.00-40.00) | 2.50 (1.00-4.00) | 0 2 |" in lines
    assert "| B (`b`) | - | not run | not run | - |" in lines


def test_unknown_rows_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        ablations.main(["--tables", "5", "--rows", "L8", "--run-dir", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: --rows L8: not a row of table(s) 5 (rows: full learned vq)")
    assert not (tmp_path / "r").exists()


def test_quick_run_stores_each_job_and_does_not_run_a_finished_one_again(tmp_path, capsys):
    argv = ["--quick", "--tables", "6", "--rows", "L1", "--seeds", "3", "--jobs", "1",
            "--run-dir", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data")]
    assert ablations.main(argv) == 0
    result = tmp_path / "runs" / "num_tokens=1" / "seed-3" / "result.json"
    stamp = result.stat().st_mtime_ns
    first = capsys.readouterr().out
    assert "[1/1] num_tokens=1 seed 3: Medium" in first
    assert ablations.main(argv) == 0
    again = capsys.readouterr().out
    assert f"done before: num_tokens=1 seed 3 ({result})" in again and "[1/1]" not in again
    assert result.stat().st_mtime_ns == stamp
    (tmp_path / "runs" / "ablations.md").unlink()
    assert ablations.main([*argv, "--rows", "L1", "L2", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "done: num_tokens=1 seed 3" in listed and "to run: num_tokens=2 seed 3" in listed
    assert not (tmp_path / "runs" / "num_tokens=2").exists()
    table = (tmp_path / "runs" / "ablations.md").read_text()
    assert "| L = 1 (`L1`) | - | " in table and "| 3 |" in table and "| L = 2 (`L2`) | - | not run |" in table
    assert (tmp_path / "runs" / "ablations.png").is_file()


def test_the_cluttered_world_has_its_own_folders_and_reaches_the_generator(tmp_path, capsys, monkeypatch):
    runs, data = tmp_path / "runs", tmp_path / "data"
    argv = ["--quick", "--tables", "6", "--rows", "L1", "--seeds", "3", "--run-dir", str(runs),
            "--data-root", str(data)]
    assert ablations.main([*argv, "--world", "cluttered", "--dry-run"]) == 0
    assert f"to run: num_tokens=1 seed 3 -> {runs / 'cluttered' / 'num_tokens=1' / 'seed-3'}" in capsys.readouterr().out
    assert sorted(p.name for p in (runs / "cluttered").iterdir()) == ["ablations.md", "ablations.png"]
    assert sorted(p.name for p in runs.iterdir()) == ["cluttered"] and not data.exists()  # nothing trained
    parse = ablations.get_args_parser().parse_args
    assert ablations.world_recipe(parse(argv)) == (QUICK, str(data), str(runs))  # the plain world's paths as before
    recipe, data_root, run_dir = ablations.world_recipe(parse([*argv, "--world", "cluttered"]))
    assert (recipe.world, data_root, run_dir) == ({**QUICK.world, "scene": "cluttered"}, str(data / "cluttered"),
                                                  str(runs / "cluttered"))
    generated = []
    monkeypatch.setattr(runner, "ensure_generated", lambda root, **world: generated.append((root, world)))
    monkeypatch.setattr(runner, "load_gldv2", lambda *args: None)
    runner.prepare(plan(TABLES["6"].rows[:2], [3], recipe, data_root, run_dir))
    assert generated == [(str(data / "cluttered" / "seed-3"), {"seed": 3, **QUICK.world, "scene": "cluttered"})]


def test_an_unknown_world_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        ablations.main(["--world", "busy", "--dry-run"])
    assert stop.value.code == 2 and "invalid choice: 'busy'" in capsys.readouterr().err


def test_probe_sees_queries_at_their_initialisation_and_after_they_moved(tmp_path, capsys):
    images = tmp_path / "jpg"
    images.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (80, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.jpg")
    config = replace(TokenConfig(**DEMO.model), dim=32, out_dim=32)
    torch.manual_seed(7)
    model = build_model(config, pretrained=False)
    save_checkpoint(model_state(model), tmp_path / "init.pth")
    with torch.no_grad():
        model.tokenizer.queries[0, 1] *= -1
    save_checkpoint(model_state(model), tmp_path / "moved.pth")
    probe.main([str(tmp_path / "init.pth"), str(tmp_path / "moved.pth"), "--images", str(images), "--seed", "7"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("queries' cosine to their initialisation [1.0, 1.0, 1.0, 1.0]")
    assert lines[1].endswith("queries' cosine to their initialisation [1.0, -1.0, 1.0, 1.0]")
    assert "positions per image 9;" in lines[0]  # 96 x 80 px: a 3 x 3 map at stride 32 (rounded up)
    shares = json.loads(lines[0].split("share of each token ")[1].split(";")[0])
    assert len(shares) == 4 and abs(sum(shares) - 1) < 0.01
    scaled = build_model(replace(config, tokenizer_temperature=16.0), pretrained=False)
    scaled.load_state_dict(model.state_dict())
    save_checkpoint(model_state(scaled), tmp_path / "scaled.pth")
    probe.main([str(tmp_path / "moved.pth"), str(tmp_path / "scaled.pth"), "--images", str(images), "--seed", "7"])
    stds = [float(line.split("logit std ")[1].split(";")[0]) for line in capsys.readouterr().out.splitlines()]
    assert stds[1] == pytest.approx(stds[0] / 16, rel=1e-3)  # the logits the softmax sees
