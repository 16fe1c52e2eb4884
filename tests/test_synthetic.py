import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import synthetic
from datasets.gldv2 import GLDV2_DIR
from datasets.synthetic import MARKER, TEST_NAME, ensure_generated, generate, label_view, main, tasks
from utils.safe_pickle import safe_load

TINY = dict(num_train_landmarks=6, images_per_landmark=(3, 5), num_test_landmarks=3, queries_per_landmark=(1, 2),
            db_views_per_landmark=(4, 6), num_distractors=8, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return generate(root, seed=3, workers=1, **TINY)


@pytest.fixture(scope="module")
def cluttered(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("cluttered"), seed=3, workers=1, scene="cluttered", **TINY)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _train_tables(root):
    """``(train_clean.csv, train.csv)`` rows of the world in the data root ``root``."""
    clean = _read_csv(root / GLDV2_DIR / "train_clean.csv")
    full = _read_csv(root / GLDV2_DIR / "train.csv")
    return clean, full


def test_gldv2_layout_and_csvs_agree(world):
    root = world.root
    clean, full = _train_tables(root)
    assert clean[0] == ["landmark_id", "images"] and full[0] == ["id", "url", "landmark_id"]
    assert len(clean) - 1 == world.counts["train_landmarks"] == 6
    by_clean = {}
    for lid, images in clean[1:]:
        ids = images.split(" ")
        assert 3 <= len(ids) <= 5
        for i in ids:
            by_clean[i] = int(lid)
    lids = [int(r[0]) for r in clean[1:]]
    assert lids == sorted(lids) and len(set(lids)) == len(lids)
    assert lids != list(range(len(lids))), "landmark ids should not be contiguous from 0"
    by_full = {r[0]: int(r[2]) for r in full[1:]}
    assert len(by_full) == len(full) - 1 == len(by_clean) == world.counts["train_images"]
    assert by_full == by_clean
    for i in by_clean:
        assert re.fullmatch(r"[0-9a-f]{16}", i)
        path = root / GLDV2_DIR / "train" / i[0] / i[1] / i[2] / f"{i}.jpg"
        assert path.is_file()
    on_disk = {p.stem for p in (root / GLDV2_DIR / "train").rglob("*") if p.is_file()}
    assert on_disk == set(by_clean)
    assert all(r[1].startswith("synthetic://") for r in full[1:])


def test_images_are_small_jpegs_of_varied_shape(world):
    paths = sorted(world.train_dir.rglob("*.jpg")) + sorted((world.root / "test").rglob("*.jpg"))
    sizes = set()
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            w, h = im.size
        assert 128 <= max(w, h) <= 160 and min(w, h) >= 96
        sizes.add((w, h))
    assert len(sizes) > 10


def test_revisitop_ground_truth(world):
    gnd_path = world.root / "test" / TEST_NAME / f"gnd_{TEST_NAME}.pkl"
    assert gnd_path == world.gnd_path
    cfg = safe_load(gnd_path)  # plain data only
    assert set(cfg) == {"imlist", "qimlist", "gnd"}
    imlist, qimlist, gnd = cfg["imlist"], cfg["qimlist"], cfg["gnd"]
    assert len(gnd) == len(qimlist) and 3 <= len(qimlist) <= 6
    assert len(set(imlist)) == len(imlist) and len(set(qimlist)) == len(qimlist)
    assert not set(imlist) & set(qimlist)
    jpg = world.root / "test" / TEST_NAME / "jpg"
    assert {p.stem for p in jpg.glob("*.jpg")} == set(imlist) | set(qimlist)
    for name, g in zip(qimlist, gnd, strict=True):
        assert set(g) == {"bbx", "easy", "hard", "junk"}
        assert g["easy"] and g["hard"], "every query needs an easy and a hard positive"
        labelled = g["easy"] + g["hard"] + g["junk"]
        assert len(set(labelled)) == len(labelled)
        assert all(isinstance(i, int) and 0 <= i < len(imlist) for i in labelled)
        with Image.open(jpg / f"{name}.jpg") as im:
            w, h = im.size
        x0, y0, x1, y1 = g["bbx"]
        assert all(isinstance(v, float) for v in g["bbx"])
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) * (y1 - y0) >= 0.1 * w * h
    # Queries of one landmark share their database positives; distractors are in no query's lists.
    positives = {i for g in gnd for i in g["easy"] + g["hard"] + g["junk"]}
    assert len(imlist) - len(positives) == world.counts["distractors"] == 8


def test_labels_follow_generation_parameters(world):
    meta = json.loads((world.root / synthetic.META).read_text())
    cfg = safe_load(world.gnd_path)
    db = meta["database"]
    assert [d["name"] for d in db] == cfg["imlist"]
    for d in db:
        if d["role"] == "test":
            assert d["label"] == label_view(d["d"], d["visible"])
        else:
            assert d["label"] is None
    for q, g in zip(meta["queries"], cfg["gnd"], strict=True):
        for lab in ("easy", "hard", "junk"):
            assert g[lab] == [i for i, d in enumerate(db) if d["landmark_id"] == q["landmark_id"] and d["label"] == lab]
        assert q["visible"] >= 0.85 and q["d"] <= 0.3


def test_train_and_test_landmarks_are_disjoint(world):
    meta = json.loads((world.root / synthetic.META).read_text())
    groups = [meta["train_landmarks"], meta["test_landmarks"], meta["distractor_landmarks"]]
    for key in ("landmark_id", "fingerprint", "index"):
        values = [lm[key] for g in groups for lm in g]
        assert len(set(values)) == len(values), key
    clean, _ = _train_tables(world.root)
    train_lids = {int(r[0]) for r in clean[1:]}
    assert train_lids == {lm["landmark_id"] for lm in meta["train_landmarks"]}
    assert not train_lids & {q["landmark_id"] for q in meta["queries"]}


def test_same_seed_same_bytes_any_workers_other_seed_differs(world, tmp_path):
    again = generate(tmp_path / "again", seed=3, workers=2, **TINY)
    assert _files(again.root) == _files(world.root)
    other = generate(tmp_path / "other", seed=4, workers=1, **TINY)
    a, b = _files(world.root), _files(other.root)
    assert a[f"{GLDV2_DIR}/train_clean.csv"] != b[f"{GLDV2_DIR}/train_clean.csv"]
    assert not {k for k in a if k.endswith(".jpg")} & {k for k in b if k.endswith(".jpg")}


def test_marker_makes_reuse_a_no_op_and_regeneration_follows_changes(tmp_path):
    root = tmp_path / "w"
    first = ensure_generated(root, seed=1, workers=1, **TINY)
    assert first.generated and (root / MARKER).is_file()
    snapshot = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    second = ensure_generated(root, seed=1, workers=1, **TINY)
    assert not second.generated and second.counts == first.counts
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == snapshot

    # No marker: a partial folder, regenerated from scratch (stray files in our folders go).
    (root / MARKER).unlink()
    stray = root / GLDV2_DIR / "train" / "f" / "f" / "f" / "ffffffffffffffff.jpg"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"partial")
    keep = root / "test" / "roxford5k" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("another data set")
    third = ensure_generated(root, seed=1, workers=1, **TINY)
    assert third.generated and not stray.exists() and keep.read_text() == "another data set"

    # Different parameters: regenerated, and the old world's images are gone.
    old = set(_files(root))
    fourth = ensure_generated(root, seed=1, workers=1, **{**TINY, "num_train_landmarks": 4})
    assert fourth.generated and fourth.counts["train_landmarks"] == 4
    clean, _ = _train_tables(root)
    assert len(clean) == 5
    on_disk = {p.stem for p in (root / GLDV2_DIR / "train").rglob("*.jpg")}
    assert on_disk == {i for r in clean[1:] for i in r[1].split()}
    assert old != set(_files(root))


def test_the_world_has_the_authors_layout(world):
    """One data root: DIR/Google-landmark-v2/{train_clean.csv,train.csv,train/a/b/c/<id>.jpg} and DIR/test/<name>."""
    root = world.root
    assert sorted(p.name for p in root.iterdir()) == sorted([GLDV2_DIR, "test", MARKER, synthetic.META,
                                                             ".synthetic.lock"])
    gldv2_root = root / GLDV2_DIR
    assert world.gldv2_root == gldv2_root
    assert world.train_clean_csv == gldv2_root / "train_clean.csv" and world.train_clean_csv.is_file()
    assert world.train_csv == gldv2_root / "train.csv" and world.train_csv.is_file()
    assert world.train_dir == gldv2_root / "train" and world.train_dir.is_dir()
    assert sorted(p.name for p in gldv2_root.iterdir()) == ["train", "train.csv", "train_clean.csv"]
    assert world.test_root == root / "test" and world.test_name == TEST_NAME == "synthetic"
    assert world.gnd_path == root / "test" / "synthetic" / "gnd_synthetic.pkl" and world.gnd_path.is_file()
    assert sorted(p.name for p in (root / "test" / "synthetic").iterdir()) == ["gnd_synthetic.pkl", "jpg"]
    _, full = _train_tables(root)
    ids = sorted(r[0] for r in full[1:])
    paths = world.train_image_paths()
    assert paths == [gldv2_root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in ids]
    assert all(path.is_file() for path in paths)
    assert sorted(world.train_dir.rglob("*.jpg")) == sorted(paths)


def test_annotations_are_written_atomically(tmp_path, monkeypatch):
    """Every CSV, pickle and JSON goes through atomic_write (a kill leaves no half file), and no temp file stays."""
    from datasets.synthetic import world as world_module

    written = []
    real = world_module.atomic_write

    def recording(path, write):
        written.append(Path(path))
        real(path, write)

    monkeypatch.setattr(world_module, "atomic_write", recording)
    made = generate(tmp_path / "w", seed=7, workers=1, **{**TINY, "num_train_landmarks": 2, "num_distractors": 2})
    assert sorted(written) == sorted([made.train_clean_csv, made.train_csv, made.gnd_path,
                                      made.root / synthetic.META, made.root / MARKER])
    assert written[-1] == made.root / MARKER, "the marker is written last"
    assert not [p for p in made.root.rglob("*") if p.name.endswith(".tmp")]


def test_regeneration_deletes_only_its_own_outputs_and_an_old_layout(tmp_path):
    """A world of the old layout (GLDv2 files at the top of the root) is replaced; nothing else is touched."""
    root = tmp_path / "w"
    old = {"train_clean.csv": "landmark_id,images\n", "train.csv": "id,url,landmark_id\n",
           "train/a/b/c/abc.jpg": "old", "GLDv2-clean-train-split.pkl": "old cache", synthetic.META: "{}"}
    for relative, text in old.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (root / MARKER).write_text(json.dumps({"params": {"version": 1}, "counts": {}}))
    mine = {"notes.txt": "mine", f"{GLDV2_DIR}/index.csv": "mine too", "test/roxford5k/gnd_roxford5k.pkl": "x"}
    for relative, text in mine.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (root / GLDV2_DIR / "GLDv2-clean-val-split.pkl").write_text("a stale split of the old training set")

    made = ensure_generated(root, seed=1, workers=1, **TINY)
    assert made.generated
    assert not any((root / relative).exists() for relative in ("train_clean.csv", "train.csv", "train",
                                                               "GLDv2-clean-train-split.pkl"))
    assert not (root / GLDV2_DIR / "GLDv2-clean-val-split.pkl").exists()
    assert all((root / relative).read_text() == text for relative, text in mine.items())
    assert json.loads((root / MARKER).read_text())["params"]["version"] == synthetic.VERSION


def test_label_rules():
    assert label_view(0.1, 0.95) == "easy"
    assert label_view(0.5, 0.95) == "hard"
    assert label_view(0.2, 0.6) == "hard"
    assert label_view(0.2, 0.2) == "junk"
    assert label_view(0.95, 0.95) == "junk"
    assert label_view(0.8, 0.4) == "junk"


def test_landmarks_are_deterministic_and_distinct():
    a, b = synthetic.render_landmark(0, 5), synthetic.render_landmark(0, 5)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.points, b.points)
    prints = {synthetic.render_landmark(0, i).fingerprint for i in range(40)}
    assert len(prints) == 40
    assert synthetic.render_landmark(1, 5).fingerprint != a.fingerprint


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="images_per_landmark"):
        generate(tmp_path, **{**TINY, "images_per_landmark": (5, 3)})
    with pytest.raises(ValueError, match="image_size"):
        generate(tmp_path, **{**TINY, "image_size": (64, 80)})
    with pytest.raises(ValueError, match="scene"):
        generate(tmp_path, scene="busy", **TINY)
    assert not (tmp_path / MARKER).exists()


def test_module_entry_point_help():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "datasets.synthetic", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert done.returncode == 0 and "--root" in done.stdout and GLDV2_DIR in done.stdout
    assert "Warning" not in done.stderr


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--root", "--seed", "--train-landmarks", "--images-per-landmark", "--test-landmarks",
                 "--queries-per-landmark", "--db-views-per-landmark", "--distractors", "--image-size", "--workers",
                 "--scene", "--force", "--quiet"):
        assert flag in text
    args = ["--root", str(tmp_path / "cli"), "--seed", "2", "--train-landmarks", "3", "--images-per-landmark", "2-3",
            "--test-landmarks", "2", "--db-views-per-landmark", "4", "--distractors", "3", "--workers", "1",
            "--quiet"]
    assert main(args) == 0
    assert "generated" in capsys.readouterr().out
    assert main(args) == 0
    assert "already complete" in capsys.readouterr().out
    marker = json.loads((tmp_path / "cli" / MARKER).read_text())
    assert marker["params"]["images_per_landmark"] == [2, 3] and marker["params"]["seed"] == 2
    with pytest.raises(SystemExit) as exc:
        main([*args, "--scene", "busy"])
    assert exc.value.code == 2 and "invalid choice: 'busy'" in capsys.readouterr().err


def _ensure_in_child(args):
    root, queue = args
    queue.put(ensure_generated(root, seed=5, workers=1, **TINY).generated)


def test_concurrent_callers_generate_once(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=((tmp_path / "world", queue),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(queue.get(timeout=5) for _ in procs) == [False, True]


def test_the_world_loads_through_the_real_loaders(world, tmp_path):
    """The GLDv2 and revisitop loaders read the generated sets unchanged, with consistent labels and boxes."""
    from datasets.gldv2 import load_gldv2
    from datasets.revisitop import RevisitopImages, load_revisitop

    root = world.root
    split = load_gldv2(root, cache_dir=tmp_path)  # the data root
    assert split.root == world.gldv2_root
    clean = _read_csv(world.train_clean_csv)[1:]  # landmark_id,images
    assert split.num_classes == len(clean)
    landmark_of = {img: int(landmark) for landmark, images in clean for img in images.split()}
    assert len(split.train) + len(split.val) == len(landmark_of)
    for path, label in split.train + split.val:
        assert split.label_map[landmark_of[path.rsplit("/", 1)[1][:-4]]] == label
        assert (split.root / path).is_file()

    test = load_revisitop(root, "synthetic")
    test.check_images()
    queries = RevisitopImages(test.query_paths(), imsize=64, bbxs=test.bbxs())
    for i in range(len(queries)):
        assert queries[i][0].shape[0] == 3


def test_the_plain_scene_is_the_default_world_and_its_markers_have_no_scene(world, tmp_path):
    """``scene="plain"`` writes the bytes of the world written before scenes existed; its marker (like theirs) has
    no "scene", so those worlds are reused as they are."""
    plain = generate(tmp_path / "plain", seed=3, workers=1, scene="plain", **TINY)
    assert _files(plain.root) == _files(world.root)
    assert "scene" not in json.loads((world.root / MARKER).read_text())["params"]
    assert "scene" not in json.loads((world.root / synthetic.META).read_text())["params"]
    assert not ensure_generated(plain.root, seed=3, workers=1, scene="plain", **TINY).generated
    assert not ensure_generated(plain.root, seed=3, workers=1, **TINY).generated


def test_the_cluttered_world_keeps_the_queries_and_changes_every_other_photo(world, cluttered):
    plain, busy = _files(world.root), _files(cluttered.root)
    assert json.loads((cluttered.root / MARKER).read_text())["params"]["scene"] == "cluttered"
    assert json.loads((cluttered.root / synthetic.META).read_text())["params"]["scene"] == "cluttered"
    assert not ensure_generated(cluttered.root, seed=3, workers=1, scene="cluttered", **TINY).generated
    a, b = safe_load(world.gnd_path), safe_load(cluttered.gnd_path)
    assert a["qimlist"] == b["qimlist"] and [g["bbx"] for g in a["gnd"]] == [g["bbx"] for g in b["gnd"]]
    for g in b["gnd"]:
        assert set(g) == {"bbx", "easy", "hard", "junk"} and g["easy"] and g["hard"]
    jpg = f"test/{TEST_NAME}/jpg"
    assert all(plain[f"{jpg}/{name}.jpg"] == busy[f"{jpg}/{name}.jpg"] for name in a["qimlist"])
    assert plain[f"{GLDV2_DIR}/train.csv"] == busy[f"{GLDV2_DIR}/train.csv"]  # the same photos, drawn otherwise
    train = [name for name in plain if name.startswith(f"{GLDV2_DIR}/train/")]
    assert train and all(plain[name] != busy[name] for name in train)
    roles = {d["name"]: d["role"] for d in json.loads((world.root / synthetic.META).read_text())["database"]}
    assert {"test", "distractor", "background"} <= set(roles.values())
    shared = [name for name in roles if f"{jpg}/{name}.jpg" in busy]
    assert {roles[name] for name in shared} == {"test", "distractor", "background"}
    assert all(plain[f"{jpg}/{name}.jpg"] != busy[f"{jpg}/{name}.jpg"] for name in shared)


def test_cluttered_views_show_their_landmark_smaller(tmp_path):
    """The database views' landmark boxes cover less of the frame on average; the queries are the same views."""
    def views(scene):
        results = [tasks.test_photos(tmp_path / scene, 0, number, 1, 8, (128, 160), scene) for number in range(4)]
        area = [0.0 if v["bbx"] is None else (v["bbx"][2] - v["bbx"][0]) * (v["bbx"][3] - v["bbx"][1])
                for r in results for v in r["db"]]
        return [q for r in results for q in r["queries"]], np.mean(area)

    plain_queries, plain_area = views("plain")
    busy_queries, busy_area = views("cluttered")
    assert plain_queries == busy_queries
    assert busy_area < 0.75 * plain_area
