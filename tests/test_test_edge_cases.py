"""test.py beside the full run: no output folder, an unreadable image, exit codes and --help, nothing to evaluate,
an undefined mAP, images rewritten in place, Ctrl-C during extraction with loader workers."""

import concurrent.futures
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.features import KEY_CHECKS
from tests.conftest import ROOT
from tests.eval_sets import DIM, random_image, run_test, test_py, write_checkpoint, write_mini_set

pytestmark = pytest.mark.usefixtures("one_thread")


def test_without_output_dir_nothing_is_kept(eval_inputs, tmp_path, monkeypatch):
    data_root, checkpoint = eval_inputs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    report = run_test(data_root, checkpoint, None, "--scales", "1")
    assert report["datasets"]["roxford5k"]["runs"]["exact"]["medium"]["mAP"] >= 0
    assert list(tmp_path.iterdir()) == []


def test_unreadable_image_in_a_loader_worker_is_one_line(eval_inputs, tmp_path, capsys):
    data_root, checkpoint = eval_inputs
    shutil.copytree(data_root, tmp_path / "data")
    broken = tmp_path / "data" / "test" / "roxford5k" / "jpg" / "db_000.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit):
        test_py.main(["--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "data"), "--datasets",
                      "roxford5k", "--imsize", "64", "--scales", "1", "--workers", "1", "--device", "cpu"])
    err = capsys.readouterr().err  # after the progress bars
    assert err.endswith("\n") and err.splitlines()[-1].startswith(f"error: {broken}: cannot read image"), err


def test_subprocess_exit_codes_and_help(tmp_path):
    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "x.pth", "--data-root", str(tmp_path / "no")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and str(tmp_path / "no") in done.stderr
    helped = subprocess.run([sys.executable, "test.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0
    for flag in ("--checkpoint", "--data-root", "--datasets", "--r1m", "--output-dir", "--imsize", "--scales", "--pq",
                 "--pq-bits", "--ivf", "--nprobe", "--qe", "--dba", "--alpha", "--top-n", "--batch-size", "--workers",
                 "--device", "--amp", "--shard-size"):
        assert flag in helped.stdout


def with_gnd(data_root, tmp_path, edit):
    """A copy of the data root whose ground-truth pickle is rewritten (a real pickle) after ``edit(data)``."""
    root = Path(shutil.copytree(data_root, tmp_path / "data"))
    pkl = root / "test" / "roxford5k" / "gnd_roxford5k.pkl"
    with open(pkl, "rb") as f:
        data = pickle.load(f)
    edit(data)
    with open(pkl, "wb") as f:
        pickle.dump(data, f)
    return root, pkl


def _no_database(data):
    data["imlist"] = []
    for q in data["gnd"]:
        q.update(easy=[], hard=[], junk=[])


def _no_positives(data):
    for q in data["gnd"]:
        q.update(easy=[], hard=[])


@pytest.mark.parametrize("edit,message", [
    (lambda data: data.update(qimlist=[], gnd=[]), "'qimlist' is empty: no queries, nothing to evaluate"),
    (_no_database, "'imlist' is empty: no database images, nothing to evaluate"),
    (_no_positives, "no query has a positive (every 'easy' and 'hard' is empty): no mAP is defined"),
])
def test_nothing_to_evaluate_is_exit_code_2(eval_inputs, tmp_path, capsys, edit, message):
    data_root, checkpoint = with_gnd(eval_inputs[0], tmp_path, edit)[0], eval_inputs[1]
    with pytest.raises(SystemExit) as exit_info:
        run_test(data_root, checkpoint, tmp_path / "out")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {data_root / 'test' / 'roxford5k' / 'gnd_roxford5k.pkl'}: {message}"), err
    assert not (tmp_path / "out" / "results.json").exists()


def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_an_undefined_map_is_null_in_results_json_and_n_a_on_screen(eval_inputs, tmp_path, capsys):
    """No query has an easy positive: Easy mAP and mP@k are undefined; Medium and Hard are numbers."""
    data_root, _ = with_gnd(eval_inputs[0], tmp_path, lambda data: [q.update(easy=[]) for q in data["gnd"]])
    run_test(data_root, eval_inputs[1], tmp_path / "out", "--scales", "1")
    out = capsys.readouterr().out
    assert ">> mAP Easy: n/a, Medium: " in out and "Easy: [n/a, n/a, n/a], Medium: [" in out
    results = _strict_json((tmp_path / "out" / "results.json").read_text())
    exact = results["datasets"]["roxford5k"]["runs"]["exact"]
    assert exact["easy"] == {"mAP": None, "mP@1": None, "mP@5": None, "mP@10": None}
    assert 0 <= exact["medium"]["mAP"] <= 100 and 0 <= exact["hard"]["mAP"] <= 100
    with pytest.raises(ValueError, match="not strict JSON: NaN"):
        _strict_json(json.dumps({"mAP": float("nan")}))  # the parser used above refuses what was written before


def test_images_rewritten_in_place_are_extracted_again(eval_inputs, tmp_path, capsys):
    """The same paths with other contents (new files, new sizes and modification times): not the old features."""
    data_root = Path(shutil.copytree(eval_inputs[0], tmp_path / "data"))
    first = run_test(data_root, eval_inputs[1], tmp_path / "out", "--scales", "1")
    before = np.load(tmp_path / "out" / "features" / "roxford5k_db.npy")
    write_mini_set(data_root, seed=7)
    capsys.readouterr()
    report = run_test(data_root, eval_inputs[1], tmp_path / "out", "--scales", "1")
    out = capsys.readouterr().out
    assert ">> roxford5k_db: extracting 26 images" in out and ">> roxford5k_query: extracting 4 images" in out
    assert "reusing" not in out
    assert np.abs(np.load(tmp_path / "out" / "features" / "roxford5k_db.npy") - before).max() > 1e-3
    exact = report["datasets"]["roxford5k"]["runs"]["exact"]
    assert exact["medium"] != first["datasets"]["roxford5k"]["runs"]["exact"]["medium"]  # not the old result
    fresh = run_test(data_root, eval_inputs[1], tmp_path / "fresh", "--scales", "1")["datasets"]["roxford5k"]["runs"]
    assert all(exact[p] == fresh["exact"][p] for p in ("easy", "medium", "hard"))  # but the fresh one
    capsys.readouterr()
    run_test(data_root, eval_inputs[1], tmp_path / "out", "--scales", "1")
    out = capsys.readouterr().out
    assert f"/features/roxford5k_db.npy ({KEY_CHECKS})" in out and "extracting" not in out  # unchanged: reused


def write_uniform_set(data_root, count, size=(160, 120)):
    """A roxford5k-format set of ``count`` database images of one size and two queries: enough images for an
    extraction that lasts a few seconds."""
    rng = np.random.default_rng(3)
    folder = Path(data_root) / "test" / "roxford5k"
    (folder / "jpg").mkdir(parents=True)
    imlist = [f"db_{i:04d}" for i in range(count)]
    for name in imlist + ["query_0", "query_1"]:
        random_image(rng, *size).save(folder / "jpg" / f"{name}.jpg", quality=90)
    gnd = [{"bbx": [0.0, 0.0, 100.0, 100.0], "easy": [q], "hard": [q + 2], "junk": []} for q in range(2)]
    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": ["query_0", "query_1"], "gnd": gnd}, f)


def test_ctrl_c_during_extraction_with_loader_workers_stops_the_run(tmp_path):
    """A real SIGINT to real test.py runs with --workers 2, at four moments after the database extraction began,
    to the process alone or (as Ctrl-C in a terminal) to its whole process group with the loader workers: every
    run stops with exit code 130 and one last line, and the shards it wrote are complete."""
    write_uniform_set(tmp_path / "data", 400)
    checkpoint = write_checkpoint(tmp_path / "token.pth")
    tries = [(0.0, os.kill), (0.5, os.killpg), (1.0, os.kill), (2.0, os.killpg)]

    def interrupt(k, delay, kill):
        cmd = [sys.executable, "test.py", "--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "data"),
               "--datasets", "roxford5k", "--imsize", "160", "--workers", "2", "--device", "cpu", "--shard-size", "8",
               "--output-dir", str(tmp_path / f"out{k}")]
        run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
        out = ""
        for line in run.stdout:
            out += line
            if ">> roxford5k_db: extracting 400 images" in line:
                break
        time.sleep(delay)
        kill(run.pid, signal.SIGINT)
        rest, err = run.communicate(timeout=120)
        return run.returncode, out + rest, err

    with concurrent.futures.ThreadPoolExecutor(len(tries)) as pool:
        results = list(pool.map(lambda args: interrupt(*args), [(k, *t) for k, t in enumerate(tries)]))
    for k, (code, out, err) in enumerate(results):
        assert "roxford5k_db: extracting" in out and "Test Dataset" not in out, (k, out)  # stopped mid-extraction
        assert code == 130 and err.splitlines()[-1] == "error: interrupted", (k, code, err[-2000:])
        folder = tmp_path / f"out{k}" / "features"
        assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
        assert not (folder / "roxford5k_db.npy").exists()
        for shard in (folder / "roxford5k_db").glob("shard_*.npy"):
            assert np.load(shard).shape == (8, DIM)
