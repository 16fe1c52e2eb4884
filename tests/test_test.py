"""test.py end to end on a generated roxford5k-format set (and R1M-format distractors) with a small resnet18 Token:
the printed report, the files written, reuse of features, shard resume, torchrun, clean errors."""

import concurrent.futures
import contextlib
import importlib.util
import io
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
import torch
from PIL import Image

from networks import Token
from retrieval.evaluation import EvalSettings, evaluate_checkpoint, parse_settings
from retrieval.features import KEY_CHECKS
from weights import model_state

ROOT = Path(__file__).resolve().parents[1]
# test.py by path: importing it by its module name could find the standard library's test package
_spec = importlib.util.spec_from_file_location("token_test_script", ROOT / "test.py")
test_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_py)
DIM = 32
# (width, height) of the database images: repeated sizes batch together, odd ones fall back to smaller batches
DB_SIZES = [(96, 72), (72, 96), (96, 72), (80, 80), (96, 64), (50, 90), (96, 72), (72, 96)] * 3 + [(33, 47), (120, 40)]
# query boxes as the official pickles hold them (floats); the last query's crop has the first one's size
QUERIES = [((96, 72), (10.0, 8.0, 70.5, 60.2)), ((72, 96), (0.0, 0.0, 72.0, 96.0)), ((80, 80), (20, 5, 60, 75)),
           ((96, 72), (10.0, 8.0, 70.5, 60.2))]
R1M_IMAGES = 11
TEST_ARGS = ["--imsize", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


def _image(rng, width, height):
    """Smooth random colours with a few rectangles: enough structure for distinct descriptors."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.array(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        arr[y0:y0 + height // 3, x0:x0 + width // 3] = rng.integers(0, 256, size=3)
    return Image.fromarray(arr)


def write_mini_set(data_root, name="roxford5k", seed=0):
    """A revisitop-format set: database and query JPEGs of several sizes and ``gnd_<name>.pkl`` as the official
    pickles hold it (lists of ints, ``bbx`` as a list of floats)."""
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "test" / name
    (folder / "jpg").mkdir(parents=True, exist_ok=True)  # an existing set is rewritten in place
    imlist = [f"db_{i:03d}" for i in range(len(DB_SIZES))]
    qimlist = [f"query_{q}" for q in range(len(QUERIES))]
    for image, size in zip(imlist, DB_SIZES, strict=True):
        _image(rng, *size).save(folder / "jpg" / f"{image}.jpg", quality=90)
    for image, (size, _) in zip(qimlist, QUERIES, strict=True):
        _image(rng, *size).save(folder / "jpg" / f"{image}.jpg", quality=90)
    gnd = [{"bbx": list(map(float, box)), "easy": [3 * q, 3 * q + 1], "hard": [3 * q + 2, 20 + q], "junk": [10 + q]}
           for q, (_, box) in enumerate(QUERIES)]
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return folder


def write_r1m(data_root, count=R1M_IMAGES, seed=1):
    """R1M-format distractors: ``revisitop1m.txt`` listing images in sub-folders of ``jpg/``."""
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "test" / "revisitop1m"
    entries = [f"{i % 3}/distractor_{i:04d}.jpg" for i in range(count)]
    for entry in entries:
        (folder / "jpg" / entry).parent.mkdir(parents=True, exist_ok=True)
        _image(rng, *DB_SIZES[int(rng.integers(len(DB_SIZES)))]).save(folder / "jpg" / entry, quality=90)
    (folder / "revisitop1m.txt").write_text("\n".join(entries) + "\n")
    return folder


pytestmark = pytest.mark.usefixtures("one_thread")


def small_token():
    torch.manual_seed(0)
    return Token(backbone="resnet18", dim=64, out_dim=DIM, heads=4, pretrained=False).eval()


def write_checkpoint(path):
    model = small_token()
    torch.save(model_state(model), path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    write_mini_set(base / "data")
    write_r1m(base / "data")
    return base / "data", write_checkpoint(base / "token.pth")


def run_test(data_root, checkpoint, output_dir, *extra):
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(data_root), "--datasets", "roxford5k",
            *TEST_ARGS, *extra]
    if output_dir is not None:
        argv += ["--output-dir", str(output_dir)]
    return test_py.main(argv)


FULL = ("--r1m", "--shard-size", "4", "--qe", "--dba", "--pq", "8", "--pq-bits", "4")


@pytest.fixture(scope="module")
def evaluated(setup, tmp_path_factory):
    """One full run (R1M in shards of 4, QE, DBA, PQ): its output folder, report and printed text."""
    data_root, checkpoint = setup
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


def test_rerun_reuses_features(setup, evaluated, tmp_path, capsys):
    data_root, checkpoint = setup
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


def test_library_call_gives_the_report_of_test_py(setup, evaluated, tmp_path, capsys):
    """evaluate_checkpoint (what demo.py calls) with the settings of test.py's flags: test.py's report."""
    data_root, checkpoint = setup
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


def test_interrupted_r1m_extraction_resumes(setup, evaluated, tmp_path, capsys):
    data_root, checkpoint = setup
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


def test_torchrun_two_processes_give_the_features_of_one(setup, evaluated, tmp_path):
    data_root, checkpoint = setup
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


def test_without_output_dir_nothing_is_kept(setup, tmp_path, monkeypatch):
    data_root, checkpoint = setup
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    report = run_test(data_root, checkpoint, None, "--scales", "1")
    assert report["datasets"]["roxford5k"]["runs"]["exact"]["medium"]["mAP"] >= 0
    assert list(tmp_path.iterdir()) == []


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
def test_bad_input_is_one_line_and_exit_code_2(setup, evaluated, tmp_path, capsys, case, message):
    data_root, checkpoint = setup
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


def test_unreadable_image_in_a_loader_worker_is_one_line(setup, tmp_path, capsys):
    data_root, checkpoint = setup
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
def test_nothing_to_evaluate_is_exit_code_2(setup, tmp_path, capsys, edit, message):
    data_root, checkpoint = with_gnd(setup[0], tmp_path, edit)[0], setup[1]
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


def test_an_undefined_map_is_null_in_results_json_and_n_a_on_screen(setup, tmp_path, capsys):
    """No query has an easy positive: Easy mAP and mP@k are undefined; Medium and Hard are numbers."""
    data_root, _ = with_gnd(setup[0], tmp_path, lambda data: [q.update(easy=[]) for q in data["gnd"]])
    run_test(data_root, setup[1], tmp_path / "out", "--scales", "1")
    out = capsys.readouterr().out
    assert ">> mAP Easy: n/a, Medium: " in out and "Easy: [n/a, n/a, n/a], Medium: [" in out
    results = _strict_json((tmp_path / "out" / "results.json").read_text())
    exact = results["datasets"]["roxford5k"]["runs"]["exact"]
    assert exact["easy"] == {"mAP": None, "mP@1": None, "mP@5": None, "mP@10": None}
    assert 0 <= exact["medium"]["mAP"] <= 100 and 0 <= exact["hard"]["mAP"] <= 100
    with pytest.raises(ValueError, match="not strict JSON: NaN"):
        _strict_json(json.dumps({"mAP": float("nan")}))  # the parser used above refuses what was written before


def test_images_rewritten_in_place_are_extracted_again(setup, tmp_path, capsys):
    """The same paths with other contents (new files, new sizes and modification times): not the old features."""
    data_root = Path(shutil.copytree(setup[0], tmp_path / "data"))
    first = run_test(data_root, setup[1], tmp_path / "out", "--scales", "1")
    before = np.load(tmp_path / "out" / "features" / "roxford5k_db.npy")
    write_mini_set(data_root, seed=7)
    capsys.readouterr()
    report = run_test(data_root, setup[1], tmp_path / "out", "--scales", "1")
    out = capsys.readouterr().out
    assert ">> roxford5k_db: extracting 26 images" in out and ">> roxford5k_query: extracting 4 images" in out
    assert "reusing" not in out
    assert np.abs(np.load(tmp_path / "out" / "features" / "roxford5k_db.npy") - before).max() > 1e-3
    exact = report["datasets"]["roxford5k"]["runs"]["exact"]
    assert exact["medium"] != first["datasets"]["roxford5k"]["runs"]["exact"]["medium"]  # not the old result
    fresh = run_test(data_root, setup[1], tmp_path / "fresh", "--scales", "1")["datasets"]["roxford5k"]["runs"]
    assert all(exact[p] == fresh["exact"][p] for p in ("easy", "medium", "hard"))  # but the fresh one
    capsys.readouterr()
    run_test(data_root, setup[1], tmp_path / "out", "--scales", "1")
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
        _image(rng, *size).save(folder / "jpg" / f"{name}.jpg", quality=90)
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
