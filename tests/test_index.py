"""index.py end to end on a folder of generated JPEGs with a small resnet18 Token: build from a folder or a list,
skipped files, duplicates, add, query (JSON, figure, boxes), compressed search, whitening, resume after SIGKILL,
clean errors."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import index as index_benchmark
from datasets.collection import CollectionImages
from retrieval.extract import extract, prepare_model
from retrieval.image_index import DESCRIPTORS, EXACT_MAX_IMAGES, PATHS, SKIPPED, ImageIndex, query, search_kind
from retrieval.settings import ExtractionSettings, extraction_fields, get_args_parser
from tests.eval_sets import DB_SIZES, random_image, write_checkpoint
from weights import load_token

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("token_index_script", ROOT / "index.py")
index_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(index_py)
RUN = ["--workers", "0", "--device", "cpu", "--no-progress"]
BUILD = ["--imsize", "64", *RUN]
IMAGES = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def write_images(folder, count, seed=0, prefix="img"):
    """``count`` JPEGs of a few sizes in ``folder`` and a sub-folder; their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = Path(folder) / ("sub" if i % 3 == 0 else "") / f"{prefix}_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(rng, *DB_SIZES[i % len(DB_SIZES)]).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A folder of images with a text file, a truncated JPEG and a hidden file in it; a checkpoint."""
    base = tmp_path_factory.mktemp("collection")
    images = write_images(base / "photos", IMAGES)
    (base / "photos" / "notes.txt").write_text("not an image\n")
    truncated = base / "photos" / "sub" / "broken.jpg"
    truncated.write_bytes(Path(images[1]).read_bytes()[:300])
    (base / "photos" / ".hidden.jpg").write_bytes(Path(images[2]).read_bytes())
    return base, images, write_checkpoint(base / "token.pth")


def run(*argv):
    return index_py.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory):
    base, images, checkpoint = collection
    out = tmp_path_factory.mktemp("built") / "index"
    summary = run("build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", out, *BUILD)
    return out, summary


def rows_by_path(index_dir):
    paths = (Path(index_dir) / PATHS).read_text().splitlines()
    return dict(zip(paths, np.load(Path(index_dir) / DESCRIPTORS), strict=True))


def test_build_from_a_folder_skips_what_is_not_an_image(collection, built):
    base, images, _ = collection
    out, summary = built
    assert summary["count"] == IMAGES and summary["skipped"] == 2 and summary["search"] == "exact"
    assert sorted((out / PATHS).read_text().splitlines()) == sorted(images)  # the hidden file is left out
    assert sorted((out / SKIPPED).read_text().splitlines()) == sorted(
        [str(base / "photos" / "notes.txt"), str(base / "photos" / "sub" / "broken.jpg")])
    descriptors = np.load(out / DESCRIPTORS)
    assert descriptors.shape == (IMAGES, 32) and descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-5)
    meta = json.loads((out / "index.json").read_text())
    assert meta["count"] == IMAGES and meta["settings"]["imsize"] == 64 and meta["dim"] == 32


def test_a_query_in_the_index_finds_itself_first(collection, built, tmp_path, capsys):
    _, images, _ = collection
    out, _ = built
    capsys.readouterr()
    run("query", "--index", out, images[4], images[7], "--topk", "3", "--json", tmp_path / "r.json",
        "--figure", tmp_path / "r.png", "--device", "cpu")
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "r.json").read_text())
    assert [entry["query"] for entry in results] == [images[4], images[7]]
    for entry, image in zip(results, (images[4], images[7]), strict=True):
        assert [set(hit) for hit in entry["results"]] == [{"path", "score"}] * 3
        assert entry["results"][0]["path"] == image and entry["results"][0]["score"] == pytest.approx(1, abs=1e-4)
        scores = [hit["score"] for hit in entry["results"]]
        assert scores == sorted(scores, reverse=True) and scores[1] < 0.9999
        assert f"   1  {entry['results'][0]['score']:.4f}  {image}" in printed
    with Image.open(tmp_path / "r.png") as png:
        assert png.format == "PNG" and png.width == 1200


def test_a_box_crops_the_query(collection, built, tmp_path):
    _, images, _ = collection
    out, _ = built
    run("query", "--index", out, images[0], "--box", "0", "0", "40", "30", "--json", tmp_path / "box.json",
        "--device", "cpu")
    top = json.loads((tmp_path / "box.json").read_text())[0]["results"][0]
    assert top["score"] < 0.9999  # the crop is not the indexed image


def test_a_list_with_root_and_duplicates_gives_the_folders_descriptors(collection, built, tmp_path):
    base, images, checkpoint = collection
    relative = [os.path.relpath(path, base / "photos") for path in images[:5]]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(relative + [relative[0], "./" + relative[1], "", "# a comment"]) + "\n")
    summary = run("build", "--images", listing, "--root", base / "photos", "--checkpoint", checkpoint,
                  "--index", tmp_path / "index", *BUILD)
    assert summary["count"] == 5 and summary["skipped"] == 0
    assert (tmp_path / "index" / PATHS).read_text().splitlines() == images[:5]
    folder_rows = rows_by_path(built[0])
    for path, row in rows_by_path(tmp_path / "index").items():
        np.testing.assert_allclose(row, folder_rows[path], atol=1e-5)


def test_add_extracts_only_the_new_images(collection, built, tmp_path, capsys):
    base, images, checkpoint = collection
    first = tmp_path / "first.txt"
    first.write_text("\n".join(images[:7]) + "\n")
    run("build", "--images", first, "--checkpoint", checkpoint, "--index", tmp_path / "index", *BUILD)
    capsys.readouterr()
    summary = run("add", "--images", base / "photos", "--index", tmp_path / "index", *RUN)
    printed = capsys.readouterr().out
    assert summary["extracted"] == IMAGES - 7 + 2  # the new images and the two unreadable files
    assert f"extracting {IMAGES - 7 + 2} images" in printed
    assert f"7 already indexed or skipped before, {IMAGES - 7} added" in printed
    assert summary["count"] == IMAGES and summary["skipped"] == 2
    full = rows_by_path(built[0])
    added = rows_by_path(tmp_path / "index")
    assert set(added) == set(full)
    for path, row in added.items():
        np.testing.assert_allclose(row, full[path], atol=1e-5)
    again = run("add", "--images", base / "photos", "--index", tmp_path / "index", *RUN)
    assert again["extracted"] == 0 and again["added"] == 0 and again["count"] == IMAGES
    newest = write_images(base / "later", 2, seed=5, prefix="late")
    later = run("add", "--images", base / "later", "--index", tmp_path / "index", *RUN)
    assert later["extracted"] == 2 and later["count"] == IMAGES + 2
    results, _ = query(ImageIndex(tmp_path / "index", torch.device("cpu")), newest[1:], 1)
    assert results[0]["results"][0]["path"] == newest[1]


def test_compressed_search_finds_the_query_first(collection, built, tmp_path):
    base, images, checkpoint = collection
    summary = run("build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", tmp_path / "index",
                  "--compressed", *BUILD)
    assert summary["search"] == "compressed" and summary["count"] == IMAGES
    index = ImageIndex(tmp_path / "index", torch.device("cpu"))
    results, _ = query(index, images[3:6], 2)
    for entry, image in zip(results, images[3:6], strict=True):
        assert entry["results"][0]["path"] == image and entry["results"][0]["score"] == pytest.approx(1, abs=0.02)


def test_whiten_file_for_build_query_and_test_py(collection, built, tmp_path):
    base, images, checkpoint = collection
    run("whiten", "--index", built[0], "--out", tmp_path / "W.npz", "--dims", "8")
    with np.load(tmp_path / "W.npz") as arrays:
        assert arrays["components"].shape == (8, 32)
    summary = run("build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", tmp_path / "index",
                  "--whiten-file", tmp_path / "W.npz", "--whiten-power", "0.5", *BUILD)
    assert summary["count"] == IMAGES and (tmp_path / "index" / "whitening.npz").is_file()
    index = ImageIndex(tmp_path / "index", torch.device("cpu"))
    assert index.structure.d == 8
    results, _ = query(index, images[:2], 3)
    assert [entry["results"][0]["path"] for entry in results] == images[:2]
    # the raw index searched with the whitening given at query time ranks as the whitened index
    raw = ImageIndex(built[0], torch.device("cpu"), whiten_file=tmp_path / "W.npz", whiten_power=0.5)
    again, _ = query(raw, images[:2], 3)
    assert [[hit["path"] for hit in entry["results"]] for entry in again] == \
        [[hit["path"] for hit in entry["results"]] for entry in results]


def _shards(index_dir):
    return sorted((Path(index_dir) / "features").glob("collection-*/shard_*.npy"))


def test_a_killed_build_resumes_from_its_shards(collection, built, tmp_path):
    base, _, checkpoint = collection
    photos = tmp_path / "many"
    write_images(photos, 30, seed=3)
    cmd = [sys.executable, "index.py", "build", "--images", str(photos), "--checkpoint", str(checkpoint),
           "--index", str(tmp_path / "index"), "--shard-size", "2", *BUILD]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_shards(tmp_path / "index")) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {path.name: path.stat().st_mtime_ns for path in _shards(tmp_path / "index")}
    assert 2 <= len(kept) < 15 and not (tmp_path / "index" / "index.json").exists()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(kept)} of 15 shards found, extracting the other {15 - len(kept)}" in done.stdout
    assert f"extracted {30 - 2 * len(kept)} images" in done.stdout
    whole = run("build", "--images", photos, "--checkpoint", checkpoint, "--index", tmp_path / "whole", *BUILD)
    assert whole["count"] == 30
    np.testing.assert_allclose(np.load(tmp_path / "index" / DESCRIPTORS), np.load(tmp_path / "whole" / DESCRIPTORS),
                               atol=1e-5)
    assert (tmp_path / "index" / PATHS).read_text() == (tmp_path / "whole" / PATHS).read_text()


def test_an_unchanged_build_is_reused(collection, built, tmp_path, capsys):
    base, _, checkpoint = collection
    capsys.readouterr()
    summary = run("build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", built[0], *BUILD)
    assert summary["extracted"] == 0 and re.search(r"^>> collection-[0-9a-f]{12}: reusing ", capsys.readouterr().out,
                                                   re.MULTILINE)


@pytest.mark.parametrize("case,message", [
    ("no_index", "no index there"),
    ("no_images", "not found: expected a folder of images or a text file of image paths"),
    ("no_query_image", "query image"),
    ("box_count", "--box given 2 times for 1 images"),
    ("learned_whitening", "this checkpoint has no learned whitening of that name; known: none"),
    ("root_with_folder", "only for a text file of paths"),
])
def test_bad_input_is_one_line_and_exit_code_2(collection, built, tmp_path, capsys, case, message):
    base, images, checkpoint = collection
    argv = {
        "no_index": ["query", "--index", tmp_path, images[0]],
        "no_images": ["add", "--images", tmp_path / "nowhere", "--index", built[0]],
        "no_query_image": ["query", "--index", built[0], tmp_path / "missing.jpg"],
        "box_count": ["query", "--index", built[0], images[0], "--box", 0, 0, 5, 5, "--box", 0, 0, 6, 6],
        "learned_whitening": ["build", "--images", base / "photos", "--checkpoint", checkpoint, "--index",
                              tmp_path / "i", "--whiten", "gldv2", *BUILD],
        "root_with_folder": ["add", "--images", base / "photos", "--root", base, "--index", built[0]],
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        run(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_help_explains_every_flag():
    done = subprocess.run([sys.executable, "index.py", "build", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    for flag in ("--images", "--root", "--checkpoint", "--index", "--imsize", "--scales", "--amp", "--batch-size",
                 "--workers", "--shard-size", "--whiten", "--whiten-file", "--whiten-power", "--exact", "--compressed"):
        assert flag in done.stdout


def test_build_shares_the_extraction_flags_of_test_py():
    """index.py build and test.py: one set of extraction flags, with the defaults of ``ExtractionSettings``; the
    whitening flags say what each script does with the whitening, the others have the same help."""
    args = index_py.get_args_parser().parse_args(["build", "--images", "x", "--checkpoint", "c.pth", "--index", "i"])
    assert ExtractionSettings(**extraction_fields(args)) == ExtractionSettings("c.pth")

    def extraction_help(parser):
        group = next(g for g in parser._action_groups if g.title == "extraction")
        return {a.dest: a.help for a in group._group_actions}

    build = index_py.get_args_parser()._subparsers._group_actions[0].choices["build"]
    ours, theirs = extraction_help(build), extraction_help(get_args_parser())
    assert set(ours) == set(theirs) - {"protocol"} == set(extraction_fields(args))
    assert {k: v for k, v in ours.items() if "whiten" not in k} == {k: theirs[k] for k in ours if "whiten" not in k}


def test_auto_search_switches_at_the_measured_size():
    assert search_kind("auto", EXACT_MAX_IMAGES) == "exact"
    assert search_kind("auto", EXACT_MAX_IMAGES + 1) == "compressed"
    assert search_kind("exact", 10 * EXACT_MAX_IMAGES) == "exact" and search_kind("compressed", 5) == "compressed"


def test_benchmark_quick_measures_both_structures(tmp_path, capsys):
    report = index_benchmark.main(["--quick", "--dim", "64", "--budget", "0.05", "--out", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [row["images"] for row in saved["rows"]] == [2000, 8000] and saved["exact_max_images"] == EXACT_MAX_IMAGES
    for row in saved["rows"]:
        assert row["exact"]["ms_per_query"] > 0 and row["compressed"]["ms_per_query"] > 0
        assert 0 < row["compressed"]["recall@10"] <= 1
    assert report["exact_budget_reached_at"] == saved["exact_budget_reached_at"] > 0
    assert "exact search reaches 50 ms per query" in capsys.readouterr().out


def test_torchrun_two_processes_build_the_index_of_one(collection, built, tmp_path):
    base, _, checkpoint = collection
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "index.py",
           "build", "--images", str(base / "photos"), "--checkpoint", str(checkpoint), "--index",
           str(tmp_path / "index"), "--shard-size", "3", *BUILD]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"{IMAGES} images indexed, 2 skipped") == 1  # rank 0 alone writes and reports
    for name in (PATHS, SKIPPED):
        assert (tmp_path / "index" / name).read_text() == (built[0] / name).read_text()
    np.testing.assert_allclose(np.load(tmp_path / "index" / DESCRIPTORS), np.load(built[0] / DESCRIPTORS), atol=1e-5)


def test_extract_leaves_the_rows_of_unreadable_images_nan(collection):
    """retrieval.extract: an item without a tensor (CollectionImages' unreadable file) is a NaN row, the others
    are the descriptors they get alone."""
    base, images, checkpoint = collection
    model = prepare_model(load_token(checkpoint), torch.device("cpu"))
    paths = [images[0], str(base / "photos" / "notes.txt"), images[1]]
    rows = extract(model, CollectionImages(paths, 64), 32, torch.device("cpu"), batch_size=2, workers=0)
    alone = extract(model, CollectionImages([images[1]], 64), 32, torch.device("cpu"), workers=0)
    assert np.isnan(rows[1]).all() and not np.isnan(rows[[0, 2]]).any()
    np.testing.assert_allclose(rows[2], alone[0], atol=1e-5)
