"""The benchmarks' --quick forms (in-process, JSON checked), the compressed index that benchmarks/search.py picked
for R1M, and test.py --r1m reporting it beside exact search."""

import contextlib
import io
import json

import numpy as np
import pytest

from benchmarks import eval as eval_benchmark
from benchmarks import extract as extract_benchmark
from benchmarks import search as search_benchmark
from benchmarks.common import table, write_json
from retrieval.revisited import PROTOCOLS
from retrieval.search import R1M_COMPRESSED, CompressedSearch, ExactSearch, principal_directions
from tests.test_test import run_test, write_checkpoint, write_mini_set, write_r1m

pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(n, d, seed, rank=None):
    """``n`` unit vectors of ``d`` dimensions; with ``rank``, all in one ``rank``-dimensional subspace."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank or d))
    if rank:
        x = x @ np.linalg.qr(rng.standard_normal((d, rank)))[0].T
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    """A data folder that the search and extract benchmarks share: the demo's quick world is generated once."""
    return tmp_path_factory.mktemp("world")


# ---------------------------------------------------------------------------------------------------------- eval


def test_eval_quick_times_both_methods_on_equal_results(tmp_path, capsys):
    out = tmp_path / "eval.json"
    report = eval_benchmark.main(["--quick", "--db", "60000", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["speedup"] == pytest.approx(report["speedup"]) and saved["db"] == 60_000 and saved["queries"] == 70
    assert saved["equal"] is True and saved["max_abs_difference"] <= 1e-12
    assert saved["naive_s"] > 0 and saved["fast_s"] > 0
    assert saved["speedup"] == pytest.approx(saved["naive_s"] / saved["fast_s"])
    assert saved["speedup"] > 2  # ~35x at 200k on 2 cores; a loose bound for a loaded CI machine
    for protocol in PROTOCOLS:
        assert saved["mAP"][protocol]["naive"] == saved["mAP"][protocol]["fast"]
        assert 0.05 < saved["mAP"][protocol]["fast"] < 0.95  # neither trivial nor hopeless
    for key, (lo, hi) in {"easy": eval_benchmark.EASY, "hard": eval_benchmark.HARD,
                          "junk": eval_benchmark.JUNK}.items():
        assert lo <= saved["labels_per_query"][key]["min"] <= saved["labels_per_query"][key]["max"] <= hi
    assert "revisited_map" in capsys.readouterr().out


def test_eval_check_equal_catches_a_difference():
    scores, gnd = eval_benchmark.problem(3000, 4, seed=1, labelled=500)
    reference = eval_benchmark.naive(scores, gnd)
    assert eval_benchmark.check_equal(reference, reference) == 0
    changed = {p: dict(reference[p]) for p in PROTOCOLS}
    changed["hard"]["aps"] = reference["hard"]["aps"] + 1e-6
    with pytest.raises(AssertionError, match="hard aps"):
        eval_benchmark.check_equal(changed, reference)


# -------------------------------------------------------------------------------------------------------- search


def test_search_quick_reports_every_index(world_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(search_benchmark, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "search.json"
    search_benchmark.main(["--quick", "--data-dir", str(world_dir), "--checkpoint", str(tmp_path / "none.pth"),
                           "--distractors", "5000", "--queries", "20",
                           "--latency-budget", "0.1", "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["model"]["fallback"] is True and "freshly initialised" in report["model"]["note"]
    assert list((tmp_path / "cache").glob("descriptors-*.npz"))  # the real descriptors are cached
    n = report["database_images"]
    assert n == 5000 + report["real_database_images"] and report["real_database_images"] > 0
    configs = {c["name"]: c for c in report["configs"]}
    assert {"exact float32", "float16", "8-bit SQ", "PQ64x6"} <= set(configs)
    assert any(name.startswith("IVF") for name in configs) and any("pick" in name for name in configs)
    for c in report["configs"]:
        for k in (1, 10, 100):
            assert 0 <= c[f"recall@{k}"] <= 1 and 0 <= c[f"nn_recall@{k}"] <= 1
        assert c["ms_per_query"] > 0 and c["batch_queries_per_s"] > 0 and c["build_s"] >= 0
        overhead = c["memory_bytes"] - n * c["bytes_per_image"]
        assert 0 <= overhead < 2 ** 20 + 4 * 1024 * 1024  # codebooks, centroids, projection: small and fixed
        assert c["memory_mib"] == pytest.approx(c["memory_bytes"] / 2 ** 20)
        assert c["memory_mib_per_1M_images"] == pytest.approx((overhead + 1e6 * c["bytes_per_image"]) / 2 ** 20)
        assert set(c["mAP"]) == set(PROTOCOLS) and all(0 <= v <= 100 for v in c["mAP"].values())
    exact = configs["exact float32"]
    assert exact["bytes_per_image"] == 4 * report["dim"] and exact["recall@100"] == 1
    assert configs["float16"]["bytes_per_image"] == 2 * report["dim"] and configs["float16"]["recall@100"] > 0.95
    assert configs["8-bit SQ"]["bytes_per_image"] == report["dim"]
    pick = [c for c in report["configs"] if "pick" in c["name"]]
    assert all(c["bytes_per_image"] == R1M_COMPRESSED["dims"] + 8 for c in pick)
    assert report["distribution"]["sampled"]["cosine_mean"] == pytest.approx(
        report["distribution"]["real"]["cosine_mean"], abs=0.05)
    assert report["meets_goal"] == [c["name"] for c in report["configs"] if c["meets_goal"]]


def test_fitted_gaussian_keeps_the_mean_and_spectrum():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((24, 6)))[0].T  # 6 orthonormal directions, scales 1 to 0.3
    real = 3 * unit_rows(1, 24, 4) + (rng.standard_normal((2000, 6)) * np.linspace(1, 0.3, 6)) @ basis
    real = real + 0.02 * rng.standard_normal((2000, 24))
    real = (real / np.linalg.norm(real, axis=1, keepdims=True)).astype(np.float32)
    mean, factor, noise = search_benchmark.fit(real, variance=0.99)
    drawn = search_benchmark.sample(mean, factor, noise, 20000, seed=0, block=4096)
    assert drawn.shape == (20000, 24) and drawn.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(drawn, axis=1), 1, atol=1e-5)
    a, b = search_benchmark.stats(real), search_benchmark.stats(drawn)
    assert a["cosine_mean"] == pytest.approx(b["cosine_mean"], abs=0.03)
    assert a["top10_variance"] == pytest.approx(b["top10_variance"], abs=0.03)
    assert factor.shape[1] <= 7 and 0 < noise < 0.02  # 6 directions kept (7 with the sphere's bend), noise the rest
    np.testing.assert_array_equal(drawn, search_benchmark.sample(mean, factor, noise, 20000, seed=0, block=4096))


# ------------------------------------------------------------------------------------------------------- extract


def test_extract_quick_checks_both_methods_agree(world_dir, tmp_path):
    out = tmp_path / "extract.json"
    extract_benchmark.main(["--quick", "--data-dir", str(world_dir), "--checkpoint", str(tmp_path / "none.pth"),
                            "--images", "6", "--workers", "0",
                            "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["gpu_run"] is False and report["model"]["fallback"] is True
    assert set(report["sets"]) == {"as generated", "two shapes"}
    assert report["sets"]["two shapes"]["distinct_sizes"] <= 2
    for entry in report["sets"].values():
        assert entry["images"] == 6
        assert set(entry["methods"]) == {"reference", "ours, contiguous", "ours"}
        assert entry["methods"]["reference"]["max_abs_diff"] == 0 and entry["methods"]["reference"]["speedup"] == 1
        for method in entry["methods"].values():
            assert method["max_abs_diff"] < extract_benchmark.TOLERANCE
            assert method["images_per_s"] == pytest.approx(6 / method["seconds"])
            assert method["ms_per_image"] == pytest.approx(1000 * method["seconds"] / 6)


# ---------------------------------------------------------------------------------------- the compressed index


def test_principal_directions_are_orthonormal_and_keep_inner_products_in_their_span():
    x = unit_rows(300, 32, 0, rank=5)
    p = principal_directions(x, 5)
    np.testing.assert_allclose(p @ p.T, np.eye(5), atol=1e-5)
    np.testing.assert_allclose((x @ p.T) @ (x[:4] @ p.T).T, x @ x[:4].T, atol=1e-5)


def test_compressed_index_projected_ivf_sq8_close_to_exact():
    db, queries = unit_rows(4000, 32, 1, rank=12), unit_rows(5, 32, 2, rank=12)
    index = CompressedSearch([db[:1500], db[1500:]], "SQ8", dims=16, nlist=64, nprobe=64)
    assert index.label == "pca16-ivf64-sq8-nprobe64" and index.bytes_per_image == 16 + 8
    assert index.memory_bytes > 4000 * 24
    exact = db @ queries.T
    scores = index.scores(queries)
    np.testing.assert_allclose(scores, exact, atol=0.02)  # every cell visited: every image scored
    _, ids = index.search(queries, 10)
    _, exact_ids = ExactSearch([db]).search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)]) >= 0.8
    index.nprobe = 2
    assert index.label.endswith("nprobe2") and np.isneginf(index.scores(queries)).any()


def test_compressed_index_adapts_to_small_databases_and_rejects_what_cannot_train():
    db = unit_rows(100, 32, 3)
    index = CompressedSearch([db], **R1M_COMPRESSED)
    assert index.dims is None and index.nlist == 2 and index.nprobe == 2  # 100 // 39 cells, no projection
    assert index.label == "ivf2-sq8-nprobe2"
    flat = CompressedSearch([db], "SQfp16")
    assert flat.label == "sqfp16" and flat.bytes_per_image == 64
    np.testing.assert_allclose(flat.scores(db[:3]), db @ db[:3].T, atol=1e-3)
    with pytest.raises(ValueError, match="at least 256 database images"):
        CompressedSearch([db], "PQ8")
    with pytest.raises(ValueError, match="faiss cannot build 'PQ5'"):
        CompressedSearch([unit_rows(300, 32, 4)], "PQ5")


def test_test_py_r1m_adds_the_compressed_search_unless_pq_is_asked(tmp_path):
    data_root = tmp_path / "data"
    write_mini_set(data_root)
    write_r1m(data_root)
    checkpoint = write_checkpoint(tmp_path / "token.pth")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        report = run_test(data_root, checkpoint, tmp_path / "out", "--r1m")
    out = capture.getvalue()
    runs = report["datasets"]["roxford5k+1M"]["runs"]
    compressed = [label for label in runs if label != "exact"]
    assert len(compressed) == 1 and compressed[0].endswith("sq8-nprobe1")  # 37 images: one cell
    assert f">> compressed search: {compressed[0]}" in out and "benchmarks.search" in out
    assert f"roxford5k+1M [{compressed[0]}]" in out
    assert set(report["datasets"]["roxford5k"]["runs"]) == {"exact"}  # only the +1M database gets it
    for protocol in PROTOCOLS:  # 8-bit codes of a 32-d descriptor: the ranking barely moves
        assert runs[compressed[0]][protocol]["mAP"] == pytest.approx(runs["exact"][protocol]["mAP"], abs=10)
    with contextlib.redirect_stdout(io.StringIO()):
        report = run_test(data_root, checkpoint, tmp_path / "out", "--r1m", "--pq", "8", "--pq-bits", "4")
    assert set(report["datasets"]["roxford5k+1M"]["runs"]) == {"exact", "pq8x4"}


def test_common_table_and_json(tmp_path):
    assert table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    path = write_json(tmp_path / "sub" / "r.json", {"x": np.float32(0.5), "y": np.arange(2), "z": (np.int64(3),)})
    assert json.loads(path.read_text()) == {"x": 0.5, "y": [0, 1], "z": [3]}
