"""test.py's full run on the generated set with R1M distractors in shards, QE, DBA and PQ, built once: the printed
report, results.json and the features written; their reuse by a rerun and by the library call, an interrupted R1M
extraction resumed, torchrun's two processes giving the same features; bad input (one case reuses its features)."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.evaluation import EvalSettings, evaluate_checkpoint, parse_settings
from tests.conftest import ROOT
from tests.eval_sets import DB_SIZES, DIM, QUERIES, R1M_IMAGES, TEST_ARGS, run_test

pytestmark = pytest.mark.usefixtures("one_thread")

FULL = ("--r1m", "--shard-size", "4", "--qe", "--dba", "--pq", "8", "--pq-bits", "4")


@pytest.fixture(scope="module")
def evaluated(eval_inputs, tmp_path_factory):
    """One full run (R1M in shards of 4, QE, DBA, PQ): its output folder, report and printed text."""
    data_root, checkpoint = eval_inputs
    output_dir = tmp_path_factory.mktemp("evaluated")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        report = run_test(data_root, checkpoint, output_dir, *FULL)
    return output_dir, report, capture.getvalue()


def copy_of(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_report_features_and_results(evaluated):
    output_dir, report, out = evaluated
    assert ">> Test Dataset: roxford5k\n>> mAP Easy: " in out and ">> mP@k[1, 5, 10] Easy: [" in out
    assert ">> Test Dataset: roxford5k+1M\n" in out
    for name in ("roxford5k", "roxford5k+1M"):
        for label in ("exact+qe", "exact+dba", "exact+dba+qe", "pq8x4"):
            assert f">> Test Dataset: {name} [{label}]" in out
    assert ">> roxford5k_db: extracting 26 images" in out and "reusing" not in out

    features = output_dir / "features"
    db, queries = np.load(features / "roxford5k_db.npy"), np.load(features / "roxford5k_query.npy")
    assert db.shape == (len(DB_SIZES), DIM) and queries.shape == (len(QUERIES), DIM) and db.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    assert not (features / "roxford5k_db").exists()  # shards merged, then removed
    assert json.loads((features / "roxford5k_db.json").read_text())["key"]["imsize"] == 64
    shards = sorted((features / "revisitop1m").glob("shard_*.npy"))
    assert [p.name for p in shards] == [f"shard_{k:05d}.npy" for k in range(3)]  # 11 images, 4 a shard
    assert np.concatenate([np.load(p) for p in shards]).shape == (R1M_IMAGES, DIM)

    results = json.loads((output_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(report))
    entry = results["datasets"]["roxford5k"]
    assert entry["images"] == {"db": len(DB_SIZES), "query": len(QUERIES)}
    assert entry["extraction_ms_per_image"]["db"] > 0
    assert set(entry["runs"]) == {"exact", "exact+qe", "exact+dba", "exact+dba+qe", "pq8x4"}
    exact = entry["runs"]["exact"]
    assert set(exact) == {"easy", "medium", "hard", "search_ms_per_query", "bytes_per_image", "database_bytes"}
    assert set(exact["medium"]) == {"mAP", "mP@1", "mP@5", "mP@10"} and 0 <= exact["medium"]["mAP"] <= 100
    assert exact["bytes_per_image"] == 4 * DIM and exact["database_bytes"] == 4 * DIM * len(DB_SIZES)
    assert f"Medium: {exact['medium']['mAP']:.2f}" in out
    assert entry["runs"]["pq8x4"]["bytes_per_image"] == 4  # 8 codes of 4 bits
    plus = results["datasets"]["roxford5k+1M"]
    assert plus["images"]["db"] == len(DB_SIZES) + R1M_IMAGES and plus["extraction_ms_per_image"]["revisitop1m"] > 0
    assert plus["runs"]["exact"]["database_bytes"] == 4 * DIM * (len(DB_SIZES) + R1M_IMAGES)


def test_rerun_reuses_features(eval_inputs, evaluated, tmp_path, capsys):
    data_root, checkpoint = eval_inputs
    output_dir = copy_of(evaluated[0], tmp_path)
    mtime = (output_dir / "features" / "roxford5k_db.npy").stat().st_mtime_ns
    report = run_test(data_root, checkpoint, output_dir, *FULL)
    out = capsys.readouterr().out
    for name in ("roxford5k_db", "roxford5k_query", "revisitop1m"):
        assert f">> {name}: reusing" in out
    assert "extracting" not in out
    assert (output_dir / "features" / "roxford5k_db.npy").stat().st_mtime_ns == mtime
    for name in ("roxford5k", "roxford5k+1M"):
        for label, run in report["datasets"][name]["runs"].items():
            for protocol in ("easy", "medium", "hard"):
                assert run[protocol] == evaluated[1]["datasets"][name]["runs"][label][protocol]


def test_library_call_gives_the_report_of_test_py(eval_inputs, evaluated, tmp_path, capsys):
    """evaluate_checkpoint (what demo.py calls) with the settings of test.py's flags: test.py's report."""
    data_root, checkpoint = eval_inputs
    output_dir = copy_of(evaluated[0], tmp_path)
    settings = EvalSettings(checkpoint=str(checkpoint), data_root=str(data_root), datasets=["roxford5k"], imsize=64,
                            batch_size=8, workers=0, device="cpu", r1m=True, shard_size=4, qe=True, dba=True, pq=8,
                            pq_bits=4, output_dir=str(output_dir))
    report = evaluate_checkpoint(settings)
    assert ">> roxford5k_db: reusing" in capsys.readouterr().out
    expected = evaluated[1]
    assert set(report) == set(expected)
    for key in set(expected) - {"datasets"}:
        assert report[key] == expected[key], key
    assert set(report["datasets"]) == set(expected["datasets"])
    for name, entry in expected["datasets"].items():
        assert set(report["datasets"][name]["runs"]) == set(entry["runs"])
        for label, run in entry["runs"].items():
            for protocol in ("easy", "medium", "hard"):
                assert report["datasets"][name]["runs"][label][protocol] == run[protocol]
    assert json.loads((output_dir / "results.json").read_text()) == json.loads(json.dumps(report))


def test_settings_defaults_are_the_flags_defaults():
    assert parse_settings(["--checkpoint", "c.pth", "--data-root", "data"]) == EvalSettings("c.pth", "data")


def test_interrupted_r1m_extraction_resumes(eval_inputs, evaluated, tmp_path, capsys):
    data_root, checkpoint = eval_inputs
    output_dir = copy_of(evaluated[0], tmp_path)
    shards = sorted((output_dir / "features" / "revisitop1m").glob("shard_*.npy"))
    expected = [np.load(p) for p in shards]
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    np.save(shards[2], expected[2][:2])  # a shard of the wrong length is redone too
    (shards[0].parent / ".shard_00001.npy.999.tmp").write_bytes(b"partial write of a killed run")
    report = run_test(data_root, checkpoint, output_dir, "--r1m", "--shard-size", "4")
    out = capsys.readouterr().out
    assert ">> revisitop1m: 1 of 3 shards found, extracting the other 2" in out
    assert ">> roxford5k_db: reusing" in out
    assert shards[0].stat().st_mtime_ns == kept
    for shard, rows in zip(shards, expected, strict=True):
        np.testing.assert_allclose(np.load(shard), rows, atol=1e-6)
    before = evaluated[1]["datasets"]["roxford5k+1M"]["runs"]["exact"]["medium"]
    assert report["datasets"]["roxford5k+1M"]["runs"]["exact"]["medium"] == pytest.approx(before)


def test_torchrun_two_processes_give_the_features_of_one(eval_inputs, evaluated, tmp_path):
    data_root, checkpoint = eval_inputs
    one = evaluated[0]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "test.py"), "--checkpoint", str(checkpoint), "--data-root", str(data_root),
           "--datasets", "roxford5k", *TEST_ARGS, *FULL, "--output-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(">> Test Dataset: roxford5k\n") == 1  # rank 0 alone reports
    # shards of 4 images dealt round-robin to the two processes: 7 for roxford5k's 26 images, 3 for R1M's 11
    names = ["roxford5k_db.npy", "roxford5k_query.npy"] + [f"revisitop1m/shard_{k:05d}.npy" for k in range(3)]
    for name in names:
        np.testing.assert_allclose(np.load(tmp_path / "features" / name), np.load(one / "features" / name),
                                   atol=1e-5)
    meta = json.loads((tmp_path / "features" / "revisitop1m" / "meta.json").read_text())
    assert meta["shard_size"] == 4 and meta["extraction_ms_per_image"] > 0
    two = json.loads((tmp_path / "results.json").read_text())["datasets"]
    for name in ("roxford5k", "roxford5k+1M"):
        for protocol in ("easy", "medium", "hard"):
            assert two[name]["runs"]["exact"][protocol] == pytest.approx(
                evaluated[1]["datasets"][name]["runs"]["exact"][protocol])


@pytest.mark.parametrize("case,message", [
    ("no_root", "not found: expected the layout"),
    ("no_checkpoint", "missing.pth not found: expected a model checkpoint file"),
    ("missing_image", "1 image(s) missing"),
    ("pq_not_dividing", "--pq 5 must divide the descriptor size 32"),
    ("pq_too_few", "needs at least 256 database images"),
    ("amp_on_cpu", "--amp runs float16 autocast on CUDA"),
    ("r1m_as_dataset", "pass --r1m"),
    ("scales_nan", "--scales nan: expected a finite number (nan and inf are refused)"),
    ("scales_inf", "--scales inf: expected a finite number (nan and inf are refused)"),
    ("scales_huge", "--scales: every value must be a number in (0, 4], got [1000000.0]"),
])
def test_bad_input_is_one_line_and_exit_code_2(eval_inputs, evaluated, tmp_path, capsys, case, message):
    data_root, checkpoint = eval_inputs
    output_dir = copy_of(evaluated[0], tmp_path) if case == "pq_too_few" else tmp_path / "out"  # features reused
    extra = {"pq_not_dividing": ["--pq", "5"], "pq_too_few": ["--pq", "4"], "amp_on_cpu": ["--amp"],
             "r1m_as_dataset": ["--datasets", "revisitop1m"], "scales_nan": ["--scales", "1", "nan"],
             "scales_inf": ["--scales", "inf"], "scales_huge": ["--scales", "1e6"]}.get(case, [])
    if case == "no_root":
        data_root = tmp_path / "nowhere"
    elif case == "no_checkpoint":
        checkpoint = tmp_path / "missing.pth"
    elif case == "missing_image":
        shutil.copytree(data_root, tmp_path / "data")
        data_root = tmp_path / "data"
        (data_root / "test" / "roxford5k" / "jpg" / "db_004.jpg").unlink()
    with pytest.raises(SystemExit) as exit_info:
        run_test(data_root, checkpoint, output_dir, *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
