"""test.py --local-features asmk|vlad with a small HOW (resnet18, random weights) on the generated roxford5k-format set
with R1M distractors: local features extracted into float16 shards, reused and resumed; a codebook trained and
cached, or given; the runs "asmk" and "vlad" in results.json, the output and the HTML report; the one-line refusals."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from networks.how import HOW
from retrieval.local_features import LOCAL_DIM, LocalImages, ShardRows, pack, unpack
from tests.conftest import ROOT
from tests.eval_sets import DB_SIZES, QUERIES, R1M_IMAGES, TEST_ARGS, run_test
from weights import model_state

pytestmark = pytest.mark.usefixtures("one_thread")
NUM = 12  # local features per image (a 64 px image has 16 + 4 cells at scales 1 and 0.5)
LOCAL = ("--num-features", str(NUM), "--scales", "1", "0.5", "--shard-size", "4", "--r1m")


@pytest.fixture(scope="module")
def how_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = HOW(backbone="resnet18", skip_layer=1, pretrained=False).eval()
    for p in model.parameters():  # random reduction and BatchNorm too: varied descriptors
        p.data.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("how") / "how.pth"
    torch.save(model_state(model), path)
    return path


@pytest.fixture(scope="module")
def how_inputs(eval_inputs, how_checkpoint):
    """The generated data root and the small HOW checkpoint."""
    return eval_inputs[0], how_checkpoint


@pytest.fixture
def local_model(monkeypatch):
    """The forward_local calls of the test, counted."""
    calls = []
    forward_local = HOW.forward_local

    def counted(self, *args):
        calls.append(1)
        return forward_local(self, *args)

    monkeypatch.setattr(HOW, "forward_local", counted)
    return calls


def run(inputs, output_dir, *extra):
    """test.py on ``inputs`` (data root, checkpoint) with the local flags: its report and printed output."""
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        report = run_test(*inputs, output_dir, *LOCAL, *extra)
    return report, capture.getvalue()


def codebook_images(inputs):
    return str(inputs[0] / "test" / "roxford5k" / "jpg")


def test_pack_and_unpack():
    features = np.arange(3 * LOCAL_DIM, dtype=np.float32).reshape(3, LOCAL_DIM)
    row = pack(features, 5)
    assert row.shape == (5 * LOCAL_DIM,) and np.isnan(row[3 * LOCAL_DIM:]).all()
    np.testing.assert_array_equal(unpack(row), features)
    np.testing.assert_array_equal(unpack(pack(features, 3)), features)  # a full row
    assert unpack(pack(features[:0], 4)).shape == (0, LOCAL_DIM)  # an image without features


def test_shard_rows_read_across_shards():
    rows = np.arange(7 * 3, dtype=np.float16).reshape(7, 3)
    shard_rows = ShardRows([rows[:3], rows[3:6], rows[6:]])
    assert len(shard_rows) == 7 and shard_rows.dtype == np.float16
    np.testing.assert_array_equal(shard_rows[4], rows[4])
    np.testing.assert_array_equal(shard_rows[2:7], rows[2:7])
    np.testing.assert_array_equal(shard_rows[5:5], rows[5:5])
    np.testing.assert_array_equal(np.asarray(shard_rows), rows)
    assert [len(f) for f in LocalImages(ShardRows([np.stack([pack(np.ones((n, LOCAL_DIM)), 4)]) for n in (1, 4, 0)]))] \
        == [1, 4, 0]


def test_asmk_run_codebook_trained_cached_and_features_reused(how_inputs, local_model, tmp_path):
    out_dir = tmp_path / "out"
    report, out = run(how_inputs, out_dir, "--local-features", "asmk", "--asmk-words", "16", "--codebook-images",
                      codebook_images(how_inputs), "--report", str(tmp_path / "page.html"))
    features = out_dir / "features"
    db = np.load(features / "roxford5k_db_local.npy")
    assert db.dtype == np.float16 and db.shape == (len(DB_SIZES), NUM * LOCAL_DIM)
    shards = sorted((features / "revisitop1m_local").glob("shard_*.npy"))
    assert len(shards) == 3 and np.load(shards[0]).dtype == np.float16  # 11 distractors, 4 a shard
    centroids = np.load(features / "codebook-asmk-16.npy")
    assert centroids.shape == (16, LOCAL_DIM) and centroids.dtype == np.float32
    assert ">> codebook: k-means of" in out and "into 16 words" in out
    for name in ("roxford5k", "roxford5k+1M"):
        entry = report["datasets"][name]
        assert set(entry["runs"]) == {"asmk"}
        asmk = entry["runs"]["asmk"]
        assert 0 <= asmk["medium"]["mAP"] <= 100 and asmk["bytes_per_image"] > 0
        assert f">> Test Dataset: {name} [asmk]\n>> mAP Easy: {asmk['easy']['mAP']:.2f}" in out
    assert report["local"] == {"method": "asmk", "num_features": NUM, "codebook": "trained", "words": 16}
    assert report["scales"] == [1.0, 0.5]
    assert json.loads((out_dir / "results.json").read_text()) == json.loads(json.dumps(report))
    page = (tmp_path / "page.html").read_text()
    assert 'data-search="asmk"' in page and "under asmk search" in page

    calls = len(local_model)
    again, out = run(how_inputs, out_dir, "--local-features", "asmk", "--asmk-words", "16", "--codebook-images",
                     codebook_images(how_inputs))
    assert len(local_model) == calls and "extracting" not in out  # nothing extracted again
    assert ">> codebook: reusing" in out and ">> roxford5k_db_local: reusing" in out
    assert again["datasets"] == report["datasets"] | {
        name: {**entry, "runs": {"asmk": {**entry["runs"]["asmk"],
                                          "search_ms_per_query": again["datasets"][name]["runs"]["asmk"][
                                              "search_ms_per_query"]}}}
        for name, entry in report["datasets"].items()}


def test_truncated_local_shard_is_extracted_again(how_inputs, local_model, tmp_path):
    out_dir = tmp_path / "out"
    codebook = tmp_path / "words.npy"
    np.save(codebook, np.random.default_rng(0).normal(size=(8, LOCAL_DIM)).astype(np.float32))
    first, _ = run(how_inputs, out_dir, "--local-features", "asmk", "--codebook", str(codebook))
    shard = out_dir / "features" / "revisitop1m_local" / "shard_00001.npy"
    kept = np.load(shard)
    shard.write_bytes(shard.read_bytes()[:1000])  # a killed copy, a full disk
    report, out = run(how_inputs, out_dir, "--local-features", "asmk", "--codebook", str(codebook))
    assert ">> revisitop1m_local: 2 of 3 shards found, extracting the other 1" in out
    np.testing.assert_array_equal(np.load(shard), kept)
    assert report["local"]["codebook"] == str(codebook) and report["local"]["words"] == 8
    assert report["datasets"]["roxford5k+1M"]["runs"]["asmk"]["medium"] == \
        first["datasets"]["roxford5k+1M"]["runs"]["asmk"]["medium"]


def test_vlad_runs_go_through_the_global_searches(how_inputs, local_model, tmp_path):
    codebook = tmp_path / "words.npy"
    np.save(codebook, np.random.default_rng(1).normal(size=(4, LOCAL_DIM)).astype(np.float32))
    report, out = run(how_inputs, tmp_path / "out", "--local-features", "vlad", "--codebook", str(codebook), "--qe",
                      "--dba", "--pq", "8", "--pq-bits", "4")
    runs = report["datasets"]["roxford5k"]["runs"]
    assert set(runs) == {"vlad", "vlad+qe", "vlad+dba", "vlad+dba+qe", "pq8x4"}
    assert runs["vlad"]["bytes_per_image"] == 4 * 4 * LOCAL_DIM
    assert report["datasets"]["roxford5k+1M"]["images"]["db"] == len(DB_SIZES) + R1M_IMAGES
    assert ">> Test Dataset: roxford5k [vlad]\n" in out and ">> Test Dataset: roxford5k+1M [vlad+qe]" in out
    assert report["datasets"]["roxford5k"]["images"]["query"] == len(QUERIES)


@pytest.mark.parametrize("extra, message", [
    (("--local-features", "asmk", "--codebook", "WIDE"), "expected float centroids of shape (K, 128), got float32"),
    (("--local", "vlad", "--codebook", "WIDE"), "expected float centroids of shape (K, 128), got float32 (4, 64)"),
    (("--local-features", "asmk", "--qe"), "--local-features asmk searches its inverted file"),
    (("--local-features", "asmk", "--codebook", "missing.npy"), "--codebook missing.npy not found"),
    (("--local-features", "asmk", "--protocol", "dir"), "--local-features runs HOW's protocol"),
    (("--local-features", "vlad"), "no --codebook and no --codebook-images, and no GLDv2 training images"),
])
def test_refusals_are_one_line(how_inputs, local_model, tmp_path, capsys, extra, message):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((4, 64), np.float32))
    extra = [str(wide) if arg == "WIDE" else arg for arg in extra]
    with pytest.raises(SystemExit) as exit_info:
        run(how_inputs, tmp_path / "out", *extra)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not local_model  # refused before any extraction


def test_model_without_local_features_is_refused(eval_inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(eval_inputs, tmp_path / "out", "--local-features", "asmk")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "needs a model with local features (HOW); Token has none" in err


def test_missing_asmk_package_says_how_to_install(how_inputs, local_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "asmk", None)  # import asmk raises ImportError
    with pytest.raises(SystemExit):
        run(how_inputs, tmp_path / "out", "--local-features", "asmk")
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install asmk==0.1.1 (after faiss-cpu; it builds a C extension, so a C compiler must "
                        "be there), or make setup") and len(err.splitlines()) == 1
    assert not local_model


def test_torchrun_two_processes_give_the_local_features_and_codebook_of_one(how_inputs, tmp_path):
    flags = ["--local-features", "asmk", "--asmk-words", "16", "--codebook-images", codebook_images(how_inputs)]
    one, _ = run(how_inputs, tmp_path / "one", *flags)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "test.py"), "--checkpoint", str(how_inputs[1]), "--data-root", str(how_inputs[0]),
           "--datasets", "roxford5k", *TEST_ARGS, *LOCAL, *flags, "--output-dir", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(">> Test Dataset: roxford5k [asmk]\n") == 1  # rank 0 alone reports
    names = ["roxford5k_db_local.npy", "roxford5k_query_local.npy", "codebook_images.npy", "codebook-asmk-16.npy"]
    names += [f"revisitop1m_local/shard_{k:05d}.npy" for k in range(3)]
    for name in names:
        np.testing.assert_allclose(np.load(tmp_path / "two" / "features" / name),
                                   np.load(tmp_path / "one" / "features" / name), atol=1e-3, err_msg=name)
    two = json.loads((tmp_path / "two" / "results.json").read_text())["datasets"]
    for name in ("roxford5k", "roxford5k+1M"):
        assert two[name]["runs"]["asmk"]["medium"] == pytest.approx(one["datasets"][name]["runs"]["asmk"]["medium"])


def test_local_features_of_another_width_are_refused_in_one_line(how_inputs, tmp_path, capsys, monkeypatch):
    forward_local = HOW.forward_local
    monkeypatch.setattr(HOW, "forward_local", lambda self, *a: forward_local(self, *a)._replace(
        descriptors=torch.zeros(3, 64)))
    codebook = tmp_path / "words.npy"
    np.save(codebook, np.zeros((4, LOCAL_DIM), np.float32))
    with pytest.raises(SystemExit):
        run(how_inputs, tmp_path / "out", "--local-features", "vlad", "--codebook", str(codebook), "--no-progress")
    err = capsys.readouterr().err.strip()
    assert err == "error: HOW.forward_local gave descriptors of shape (3, 64), expected at most 12 x 128"
