import logging
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datasets import gldv2
from datasets.gldv2 import (
    GLDV2_DIR,
    LABEL_MAP,
    SPLIT_CACHE_FILES,
    TRAIN_CACHE,
    VAL_CACHE,
    LandmarkImages,
    collate_skip_bad,
    image_path,
    load_gldv2,
    resolve_gldv2_root,
)
from datasets.images import IMAGENET_MEAN
from datasets.transforms import train_transform, val_transform
from utils.errors import InputError
from utils.safe_pickle import safe_load

# landmark id -> number of images; ids deliberately not contiguous nor in CSV order
IMAGES_PER_LANDMARK = {1042: 20, 7: 10, 315: 5, 88: 2, 5: 1, 2001: 9}
EXPECTED_VAL = {1042: 4, 7: 2, 315: 1, 88: 1, 5: 0, 2001: 2}  # round(n / 5), >= 1 val and >= 1 train if n >= 2
EXTRA_LANDMARK = 4  # in train.csv only, as GLDv2's full list holds landmarks that the clean list drops


def _write_jpeg(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (int(rng.integers(12, 48)), int(rng.integers(12, 48)))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=80)


def _write_clean_csv(path, images_by_landmark, shuffle_seed=None):
    rows = [(lid, list(ids)) for lid, ids in images_by_landmark.items()]
    if shuffle_seed is not None:
        shuffler = random.Random(shuffle_seed)
        shuffler.shuffle(rows)
        for _, ids in rows:
            shuffler.shuffle(ids)
    pd.DataFrame({"landmark_id": [lid for lid, _ in rows],
                  "images": [" ".join(ids) for _, ids in rows]}).to_csv(path, index=False)


@pytest.fixture
def gldv2_root(tmp_path):
    """A GLDv2-format tree: train_clean.csv, train.csv and JPEGs of assorted sizes at train/a/b/c/<id>.jpg."""
    rng = np.random.default_rng(0)
    root = tmp_path / "gldv2"
    images, full_rows = {}, []
    for lid, n in {**IMAGES_PER_LANDMARK, EXTRA_LANDMARK: 3}.items():
        ids = [f"{rng.integers(0, 2**63):016x}" for _ in range(n)]
        for image_id in ids:
            _write_jpeg(root / image_path(image_id), rng)
            full_rows.append((image_id, f"http://upload.wikimedia.org/{image_id}.jpg", lid))
        images[lid] = ids
    _write_clean_csv(root / "train_clean.csv", {lid: images[lid] for lid in IMAGES_PER_LANDMARK})
    pd.DataFrame(full_rows, columns=["id", "url", "landmark_id"]).to_csv(root / "train.csv", index=False)
    return root


def _image_id(path):
    return Path(path).stem


def _ids(samples):
    return {_image_id(path) for path, _ in samples}


def _landmark_of(root):
    rows = pd.read_csv(root / "train.csv", dtype=str)
    return dict(zip(rows["id"], rows["landmark_id"].astype(int), strict=True))


# ---------------------------------------------------------------- split


def test_split_is_stratified_relabelled_and_complete(gldv2_root):
    split = load_gldv2(gldv2_root)
    landmark_of = _landmark_of(gldv2_root)
    assert split.num_classes == len(IMAGES_PER_LANDMARK)
    assert split.label_map == {lid: label for label, lid in enumerate(sorted(IMAGES_PER_LANDMARK))}
    for samples in (split.train, split.val):
        for path, label in samples:
            assert (gldv2_root / path).is_file()
            assert split.label_map[landmark_of[_image_id(path)]] == label

    val_counts = Counter(label for _, label in split.val)
    train_counts = Counter(label for _, label in split.train)
    for lid, n in IMAGES_PER_LANDMARK.items():
        label = split.label_map[lid]
        assert val_counts[label] == EXPECTED_VAL[lid]
        assert train_counts[label] == n - EXPECTED_VAL[lid]
    assert not _ids(split.train) & _ids(split.val)
    assert len(_ids(split.train) | _ids(split.val)) == sum(IMAGES_PER_LANDMARK.values())


def test_label_map_is_saved_as_csv(gldv2_root):
    split = load_gldv2(gldv2_root)
    saved = pd.read_csv(gldv2_root / LABEL_MAP)
    assert list(saved.columns) == ["landmark_id", "label"]
    assert dict(zip(saved["landmark_id"], saved["label"], strict=True)) == split.label_map
    assert list(saved["label"]) == list(range(split.num_classes))


def test_split_depends_on_the_seed_only(gldv2_root, tmp_path):
    _write_clean_csv(gldv2_root / "shuffled.csv", _clean_rows(gldv2_root), shuffle_seed=3)
    first = load_gldv2(gldv2_root, cache_dir=tmp_path / "a")
    again = load_gldv2(gldv2_root, cache_dir=tmp_path / "b")
    shuffled = load_gldv2(gldv2_root, csv="shuffled.csv", cache_dir=tmp_path / "c")
    other_seed = load_gldv2(gldv2_root, seed=1, cache_dir=tmp_path / "d")
    assert first == again
    assert sorted(first.train) == sorted(shuffled.train) and sorted(first.val) == sorted(shuffled.val)
    assert _ids(first.val) != _ids(other_seed.val)
    assert Counter(label for _, label in first.val) == Counter(label for _, label in other_seed.val)


def _clean_rows(root):
    rows = pd.read_csv(root / "train_clean.csv", dtype=str)
    return {int(lid): images.split() for lid, images in zip(rows["landmark_id"], rows["images"], strict=True)}


def test_train_csv_format_is_detected(gldv2_root, tmp_path):
    clean = load_gldv2(gldv2_root, cache_dir=tmp_path / "clean")
    full = load_gldv2(gldv2_root, csv="train.csv", cache_dir=tmp_path / "full")
    assert full.num_classes == clean.num_classes + 1
    assert full.label_map[EXTRA_LANDMARK] == 0  # the smallest id takes label 0, shifting the others
    assert _ids(full.train + full.val) == _ids(clean.train + clean.val) | set(
        i for i, lid in _landmark_of(gldv2_root).items() if lid == EXTRA_LANDMARK)


def test_cache_is_reused(gldv2_root, monkeypatch):
    first = load_gldv2(gldv2_root)
    monkeypatch.setattr(gldv2, "_build_split", lambda *args: pytest.fail("the cached split was rebuilt"))
    assert load_gldv2(gldv2_root) == first
    cached = safe_load(gldv2_root / TRAIN_CACHE)
    assert cached["settings"]["seed"] == 0 and cached["settings"]["csv"] == "train_clean.csv"
    assert all(type(sample) is tuple and len(sample) == 2 for sample in cached["samples"])


@pytest.mark.parametrize("change", [{"seed": 5}, {"val_fraction": 0.5}, {"csv": "train.csv"}])
def test_cache_made_with_other_settings_is_rebuilt(gldv2_root, tmp_path, caplog, change):
    load_gldv2(gldv2_root)
    with caplog.at_level(logging.WARNING):
        rebuilt = load_gldv2(gldv2_root, **change)
    assert "other settings" in caplog.text
    assert rebuilt == load_gldv2(gldv2_root, cache_dir=tmp_path / "fresh", **change)
    assert safe_load(gldv2_root / VAL_CACHE)["settings"] == safe_load(gldv2_root / TRAIN_CACHE)["settings"]


def test_cache_of_an_edited_csv_or_foreign_format_is_rebuilt(gldv2_root):
    before = load_gldv2(gldv2_root)
    rows = _clean_rows(gldv2_root)
    del rows[2001]
    _write_clean_csv(gldv2_root / "train_clean.csv", rows)
    assert load_gldv2(gldv2_root).num_classes == before.num_classes - 1

    foreign = {"total_class": 1, "image_paths": ["x.jpg"], "file_ids": ["x"], "labels": [0]}
    (gldv2_root / TRAIN_CACHE).write_bytes(pickle.dumps(foreign))
    assert load_gldv2(gldv2_root).num_classes == before.num_classes - 1


@pytest.mark.parametrize("tamper, message", [
    (lambda samples: samples.__setitem__(0, ("../../../outside/secret", 0)), "image id '../../../outside/secret'"),
    (lambda samples: samples.__setitem__(0, ("/etc/passwd", 0)), "image id '/etc/passwd' is not an id"),
    (lambda samples: samples.__setitem__(0, (samples[0][0], 10**6)), "label 1000000 is not in 0.."),
    (lambda samples: samples.__setitem__(0, (samples[0][0], -1)), "label -1 is not in 0.."),
    (lambda samples: samples.__setitem__(0, (samples[0][0], True)), "label True is not in 0.."),
    (lambda samples: samples.__setitem__(1, samples[0]), "is listed twice"),
], ids=["dotdot", "absolute", "label-too-big", "label-negative", "label-bool", "duplicate"])
def test_tampered_split_cache_is_checked_like_the_csv(gldv2_root, tamper, message):
    """A cache whose settings match is still checked sample by sample, by the rule the CSV's split passes
    (``check_split``): an id that is a path would be opened outside the GLDv2 folder, a label out of range
    would fail in the loss after the model was built."""
    outside = gldv2_root.parent / "outside"
    outside.mkdir()
    _write_jpeg(outside / "secret.jpg", np.random.default_rng(0))
    load_gldv2(gldv2_root)
    for name in (VAL_CACHE, TRAIN_CACHE):
        payload = safe_load(gldv2_root / name)
        tamper(payload["samples"])
        (gldv2_root / name).write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError, match=f"{VAL_CACHE}|{TRAIN_CACHE}") as err:
        load_gldv2(gldv2_root)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tampered_cache_landmark_ids_are_refused(gldv2_root):
    load_gldv2(gldv2_root)
    payload = safe_load(gldv2_root / TRAIN_CACHE)
    payload["landmark_ids"] = payload["landmark_ids"][::-1]
    (gldv2_root / TRAIN_CACHE).write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError, match=f"{TRAIN_CACHE}: the landmark ids are not distinct and ascending"):
        load_gldv2(gldv2_root)


def test_missing_images_are_reported_and_left_out(gldv2_root, caplog):
    rows = _clean_rows(gldv2_root)
    gone = [rows[7][0], rows[7][1], *rows[88]]  # landmark 88 loses every image, so it is no class
    for image_id in gone:
        (gldv2_root / image_path(image_id)).unlink()
    with caplog.at_level(logging.WARNING):
        split = load_gldv2(gldv2_root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"4 of {sum(IMAGES_PER_LANDMARK.values())} images")
    assert str(gldv2_root / image_path(gone[0])) in warnings[0]
    assert not _ids(split.train + split.val) & set(gone)
    assert 88 not in split.label_map and split.num_classes == len(IMAGES_PER_LANDMARK) - 1
    assert sorted(split.label_map.values()) == list(range(split.num_classes))


def test_find_missing_handles_absent_directories(tmp_path):
    (tmp_path / "train/a/b/c").mkdir(parents=True)
    (tmp_path / "train/a/b/c/abc1.jpg").write_bytes(b"")
    (tmp_path / "train/a/b/c/abc2.jpg").mkdir()  # a directory is not an image
    assert gldv2.find_missing(tmp_path, ["abc1", "abc2", "abd1", "xyz9"]) == ["abc2", "abd1", "xyz9"]


def test_split_landmark_keeps_a_single_image_for_training():
    assert gldv2.split_landmark(["abc"], 0, 0.2) == (["abc"], [])
    train, val = gldv2.split_landmark(["abc", "abd"], 0, 0.2)
    assert len(train) == len(val) == 1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("text,message", [
    ("landmark_id,imgs\n1,abc\n", "expected columns landmark_id,images"),
    ("landmark_id,images\n1,abc abd\n\n2,abe\nx7,abf\n", "line 5: landmark_id 'x7' is not a non-negative integer"),
    ("landmark_id,images\n1,abc abd\n2,abe abc\n", "line 3: image id abc is already listed on line 2"),
    ("landmark_id,images\n1,abc\n2,\n", "line 3: lists no image ids"),
    ("landmark_id,images\n1,abc ../../etc\n", "line 2: image id '../../etc' is not an id"),
    ("id,url,landmark_id\nabc,u,1\nabd,u,\n", "line 3: landmark_id '' is not a non-negative integer"),
    ("id,url,landmark_id\nabc,u,1\nabd,u,2\nabc,u,3\n", "line 4: image id abc is already listed on line 2"),
    ("id,url,landmark_id\nabc,u,1,extra\nabd,u,x\n", "line 3: landmark_id 'x' is not"),
    ('id,url,landmark_id\n"abc,u,1\n', "not a readable CSV"),
    ("", "not a readable CSV"),
])
def test_bad_csv_names_the_file_and_row(tmp_path, text, message):
    (tmp_path / "train_clean.csv").write_text(text)
    with pytest.raises(InputError, match="train_clean.csv") as err:
        load_gldv2(tmp_path)
    assert message in str(err.value)


def test_missing_root_or_csv_names_the_path_and_layout(tmp_path):
    with pytest.raises(InputError, match=r"nowhere not found: .*train/<id\[0\]>"):
        load_gldv2(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"train_clean.csv not found: .*landmark_id,images"):
        load_gldv2(tmp_path)


def test_the_data_root_or_the_gldv2_folder_itself_is_resolved_and_logged(tmp_path, caplog):
    data_root = tmp_path / "data"
    gldv2_root = data_root / GLDV2_DIR
    assert GLDV2_DIR == "Google-landmark-v2"
    gldv2_root.mkdir(parents=True)
    (gldv2_root / "train_clean.csv").write_text("landmark_id,images\n")
    with caplog.at_level(logging.INFO, logger="datasets.gldv2"):
        assert resolve_gldv2_root(data_root) == gldv2_root
        assert f"GLDv2 folder: {gldv2_root} ({data_root} taken as the data root)" in caplog.text
        caplog.clear()
        assert resolve_gldv2_root(gldv2_root) == gldv2_root
        assert f"({gldv2_root} taken as the GLDv2 folder itself)" in caplog.text
    (gldv2_root / "train.csv").write_text("id,url,landmark_id\n")
    assert resolve_gldv2_root(str(data_root), "train.csv") == gldv2_root


def test_load_gldv2_reads_the_images_from_the_resolved_folder(gldv2_root, tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()
    (gldv2_root).rename(data_root / GLDV2_DIR)
    split = load_gldv2(data_root, cache_dir=tmp_path / "cache")
    assert split.root == data_root / GLDV2_DIR
    assert load_gldv2(data_root / GLDV2_DIR, cache_dir=tmp_path / "cache").train == split.train
    assert split.train and all((split.root / path).is_file() for path, _ in split.train + split.val)
    default_cache = load_gldv2(data_root)  # the cache defaults to the GLDv2 folder, not the data root
    assert default_cache.root == split.root
    assert all((split.root / name).is_file() for name in SPLIT_CACHE_FILES)
    assert not any((data_root / name).exists() for name in SPLIT_CACHE_FILES)


def test_neither_folder_holding_the_csv_is_one_clear_error(tmp_path):
    (tmp_path / GLDV2_DIR).mkdir()
    with pytest.raises(InputError) as err:
        resolve_gldv2_root(tmp_path, "train.csv")
    message = str(err.value)
    assert "\n" not in message
    assert f"{tmp_path / GLDV2_DIR / 'train.csv'} and {tmp_path / 'train.csv'} not found" in message
    assert "data root" in message and "GLDv2 folder itself" in message and "landmark_id" in message


def test_bad_val_fraction_and_unwritable_cache(gldv2_root, tmp_path):
    with pytest.raises(InputError, match="val_fraction"):
        load_gldv2(gldv2_root, val_fraction=1.0)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the GLDv2 split cache"):
        load_gldv2(gldv2_root, cache_dir=blocker / "cache")


# ---------------------------------------------------------------- transforms and dataset


def test_transforms_give_square_normalised_tensors():
    image = Image.new("RGB", (90, 50), tuple(round(m * 255) for m in IMAGENET_MEAN))
    out = val_transform(56)(image)
    assert out.shape == (3, 56, 56) and out.abs().max() < 0.02  # the mean colour normalises to ~0
    assert train_transform(64)(image).shape == (3, 64, 64)

    textured = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8))
    plain = train_transform(64, crop_scale=None, hflip=False, color_jitter=None)
    assert plain(textured).shape == (3, 64, 64)
    assert torch.equal(plain(textured), plain(textured))  # nothing random is left
    assert not torch.equal(train_transform(64)(textured), train_transform(64)(textured))


def test_val_transform_resizes_the_short_side_by_8_over_7():
    steps = val_transform(512).transforms
    assert steps[0].size == 585 and steps[1].size == (512, 512)


def test_dataset_and_collate_skip_a_corrupt_image(gldv2_root, caplog):
    split = load_gldv2(gldv2_root)
    samples = split.train[:6]
    corrupt = gldv2_root / samples[2][0]
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = LandmarkImages(samples, gldv2_root, val_transform(32))
    with caplog.at_level(logging.WARNING):
        assert dataset[2] is None
    assert corrupt.name in caplog.text

    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and label == samples[0][1]
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_skip_bad))
    assert [n_skipped for _, _, n_skipped in batches] == [1, 0]
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (5, 3, 32, 32) and labels.dtype == torch.int64
    assert labels.tolist() == [label for i, (_, label) in enumerate(samples) if i != 2]


def test_collate_of_an_all_bad_batch_is_empty():
    images, labels, n_skipped = collate_skip_bad([None, None, None])
    assert images.numel() == 0 and labels.numel() == 0 and labels.dtype == torch.int64 and n_skipped == 3
