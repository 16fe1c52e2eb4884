"""Google Landmarks v2 (clean) for training: annotations, a cached train/val split, a dataset (whose transforms
are in datasets/transforms.py).

Layout (the authors'): the data root ``DIR`` holds the GLDv2 folder ``DIR/Google-landmark-v2`` (``GLDV2_DIR``),
which holds, as the CVDF download unpacks it::

    train_clean.csv   landmark_id,images        images = space-separated image ids
    train.csv         id,url,landmark_id        one image a row
    train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg

``resolve_gldv2_root`` accepts either the data root or the GLDv2 folder itself (the folder that holds the CSV)
and logs which it used. ``load_gldv2`` reads either CSV, drops images missing on disk, relabels the landmarks
to 0..C-1 (ascending original id), splits each landmark's images 80/20 into train/val and caches the result in
``cache_dir`` (default: the GLDv2 folder): ``GLDv2-clean-train-split.pkl``, ``GLDv2-clean-val-split.pkl`` and
the label map ``GLDv2-clean-label-map.csv`` (``SPLIT_CACHE_FILES``). A cache is reused only when it was made
from the same CSV (name, size, mtime) with the same seed and val fraction; delete it to rescan the image tree
after adding images.
"""

import hashlib
import itertools
import logging
import os
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from datasets.images import ImageReadError, load_rgb
from utils.atomic import atomic_write
from utils.errors import InputError
from utils.safe_pickle import safe_load

log = logging.getLogger(__name__)

GLDV2_DIR = "Google-landmark-v2"  # the GLDv2 folder's name under the data root
TRAIN_CLEAN_CSV = "train_clean.csv"
TRAIN_CSV = "train.csv"
IMAGES_DIR = "train"  # the image tree under the GLDv2 folder
LAYOUT = ("train_clean.csv (landmark_id,images) or train.csv (id,url,landmark_id) "
          "and images at train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg")
TRAIN_CACHE = "GLDv2-clean-train-split.pkl"
VAL_CACHE = "GLDv2-clean-val-split.pkl"
LABEL_MAP = "GLDv2-clean-label-map.csv"
SPLIT_CACHE_FILES = (TRAIN_CACHE, VAL_CACHE, LABEL_MAP)  # what load_gldv2 writes to its cache_dir
_IMAGE_ID = r"[\w-]{3,}"
_IMAGE_ID_RE = re.compile(_IMAGE_ID)
_LANDMARK_ID = r"\d{1,18}"
_FIRST_LINE = 2  # the CSV header is line 1


@dataclass
class GLDv2Split:
    """Train/val samples as (image path relative to ``root``, label), labels in 0..num_classes-1.

    ``root`` is the GLDv2 folder the split was read from (``resolve_gldv2_root``): read the images from there.
    """

    train: list
    val: list
    num_classes: int
    label_map: dict  # original landmark_id -> label
    root: Path | None = None


def image_path(image_id):
    """The image's path relative to the GLDv2 folder: ``train/a/b/c/abc....jpg``."""
    return f"{IMAGES_DIR}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def resolve_gldv2_root(data_root, csv=TRAIN_CLEAN_CSV):
    """The GLDv2 folder for ``data_root``: ``data_root/Google-landmark-v2`` when that holds ``csv`` (the authors'
    data root), else ``data_root`` itself when it holds ``csv`` (the GLDv2 folder given directly).

    Logs which was used. Raises ``InputError`` naming both paths tried when neither holds ``csv``.
    """
    data_root = Path(data_root)
    nested = data_root / GLDV2_DIR
    for folder, meaning in ((nested, "the data root"), (data_root, "the GLDv2 folder itself")):
        if (folder / csv).is_file():
            log.info("GLDv2 folder: %s (%s taken as %s)", folder, data_root, meaning)
            return folder
    expected = (f"expected the data root (holding {GLDV2_DIR}/{csv}) or the GLDv2 folder itself (holding {csv}), "
                f"with {LAYOUT}")
    if not data_root.is_dir():
        raise InputError(f"{data_root} not found: {expected}")
    raise InputError(f"{nested / csv} and {data_root / csv} not found: {expected}")


def load_gldv2(root, csv=TRAIN_CLEAN_CSV, seed=0, val_fraction=0.2, cache_dir=None):
    """Load the GLDv2 train/val split of ``csv``, building and caching it in ``cache_dir`` (default: the GLDv2
    folder). ``root``: the data root or the GLDv2 folder itself (see ``resolve_gldv2_root``)."""
    root = resolve_gldv2_root(root, csv)
    csv_path = root / csv
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    cache_dir = Path(cache_dir) if cache_dir is not None else root
    stat = csv_path.stat()
    settings = {"csv": str(csv), "csv_size": stat.st_size, "csv_mtime_ns": stat.st_mtime_ns,
                "seed": int(seed), "val_fraction": float(val_fraction)}

    cached = _read_cache(cache_dir, settings)
    if cached is None:
        cached = _build_split(root, csv_path, int(seed), float(val_fraction))
        _write_cache(cache_dir, settings, *cached)
    landmark_ids, train, val = cached
    return GLDv2Split(train=[(image_path(i), label) for i, label in train],
                      val=[(image_path(i), label) for i, label in val],
                      num_classes=len(landmark_ids),
                      label_map={lid: label for label, lid in enumerate(landmark_ids)},
                      root=root)


# ---------------------------------------------------------------- annotations


def _read_csv(path, **kwargs):
    """Every field as a string ('' when empty), blank lines kept so that row i sits on line i + 2.

    Fields beyond the header's are ignored (``index_col=False`` stops pandas taking the first as an index).
    """
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, index_col=False,
                           **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV ({err})") from None


def read_annotations(csv_path):
    """One row per listed image, columns ``id`` (str) and ``landmark_id`` (int), index = its CSV line.

    The format is told by the header: ``landmark_id,images`` (train_clean.csv) or ``id,...,landmark_id``
    (train.csv). Blank lines are skipped; any other malformed row raises ``InputError`` naming its line.
    """
    columns = set(_read_csv(csv_path, nrows=0).columns)
    if {"landmark_id", "images"} <= columns:
        rows = _without_blank_lines(_read_csv(csv_path, usecols=["landmark_id", "images"]))
        rows = rows.assign(id=rows.pop("images").str.split()).explode("id")
    elif {"id", "landmark_id"} <= columns:
        rows = _without_blank_lines(_read_csv(csv_path, usecols=["id", "landmark_id"]))
    else:
        raise InputError(f"{csv_path}: expected columns landmark_id,images (train_clean.csv) or "
                         f"id,url,landmark_id (train.csv), found {','.join(sorted(columns)) or 'none'}")

    _fail_at_first(csv_path, rows, ~rows["landmark_id"].str.fullmatch(_LANDMARK_ID),
                   lambda row: f"landmark_id {row.landmark_id!r} is not a non-negative integer")
    _fail_at_first(csv_path, rows, rows["id"].isna(), lambda row: "lists no image ids")
    _fail_at_first(csv_path, rows, ~rows["id"].str.fullmatch(_IMAGE_ID),
                   lambda row: f"image id {row.id!r} is not an id (at least 3 letters, digits, '_' or '-')")
    _fail_at_first(csv_path, rows, rows["id"].duplicated(),
                   lambda row: f"image id {row.id} is already listed on line {_first_line(rows, row.id)}")
    return rows.astype({"landmark_id": "int64"})[["id", "landmark_id"]]


def _without_blank_lines(rows):
    """Index rows by their 1-based line in the file and drop the blank ones."""
    rows.index += _FIRST_LINE
    return rows[~rows.eq("").all(axis=1)]


def _first_line(rows, image_id):
    """The line on which ``image_id`` is first listed."""
    return rows.index[(rows["id"] == image_id).to_numpy().argmax()]


def _fail_at_first(csv_path, rows, bad, describe):
    """Raise an ``InputError`` naming the file, line and ``describe(row)`` for the first row where ``bad``."""
    bad = bad.to_numpy(dtype=bool, na_value=False)
    if bad.any():
        pos = int(bad.argmax())
        row = rows.iloc[pos]
        raise InputError(f"{csv_path}, line {rows.index[pos]}: {describe(row)}")


# ---------------------------------------------------------------- split


def _build_split(root, csv_path, seed, val_fraction):
    """Read the annotations, leave out missing images, relabel and split: (landmark_ids, train, val)."""
    rows = read_annotations(csv_path)
    log.info("building the GLDv2 split of %s (%d images): checking the image files", csv_path, len(rows))
    missing = find_missing(root, rows["id"])
    if missing:
        examples = ", ".join(str(root / image_path(i)) for i in missing[:3])
        log.warning("%d of %d images listed in %s are missing on disk and left out, e.g. %s",
                    len(missing), len(rows), csv_path, examples)
        rows = rows[~rows["id"].isin(missing)]
    images_by_landmark = rows.groupby("landmark_id", sort=True)["id"].agg(list)
    train, val = [], []
    for label, image_ids in enumerate(images_by_landmark):
        landmark_train, landmark_val = split_landmark(image_ids, seed, val_fraction)
        train += [(i, label) for i in landmark_train]
        val += [(i, label) for i in landmark_val]
    landmark_ids = [int(lid) for lid in images_by_landmark.index]
    check_split(csv_path, landmark_ids, train + val)
    return landmark_ids, train, val


def check_split(source, landmark_ids, samples):
    """Raise an ``InputError`` naming ``source`` unless ``landmark_ids`` are distinct ascending non-negative ints
    and ``samples`` are distinct ``(image id, label)`` pairs, each id an id (no path: it is joined under the
    GLDv2 folder by ``image_path``) and each label in 0..len(landmark_ids)-1. The one rule for a split, whether
    it was built from the CSV or read from a cache."""
    def fail(what):
        raise InputError(f"{source}: {what}; delete the split cache files ({', '.join(SPLIT_CACHE_FILES)}) "
                         "to rebuild them from the CSV")

    if not isinstance(landmark_ids, list) or not all(type(lid) is int and lid >= 0 for lid in landmark_ids):
        fail("the landmark ids are not a list of non-negative integers")
    if any(a >= b for a, b in itertools.pairwise(landmark_ids)):
        fail("the landmark ids are not distinct and ascending")
    if not isinstance(samples, list):
        fail(f"the samples are a {type(samples).__name__}, not a list")
    seen = set()
    for k, sample in enumerate(samples):
        if not (isinstance(sample, tuple) and len(sample) == 2):
            fail(f"sample {k} is not an (image id, label) pair")
        image_id, label = sample
        if not (isinstance(image_id, str) and _IMAGE_ID_RE.fullmatch(image_id)):
            fail(f"sample {k}: image id {image_id!r} is not an id (at least 3 letters, digits, '_' or '-')")
        if type(label) is not int or not 0 <= label < len(landmark_ids):
            fail(f"sample {k}: label {label!r} is not in 0..{len(landmark_ids) - 1}")
        if image_id in seen:
            fail(f"sample {k}: image id {image_id} is listed twice")
        seen.add(image_id)


def find_missing(root, image_ids):
    """The ids in ``image_ids`` with no file under ``root``, listing each leaf directory once, not one stat each."""
    ids_by_dir = defaultdict(list)
    for image_id in image_ids:
        ids_by_dir[image_id[:3]].append(image_id)
    missing = []
    for prefix, ids in ids_by_dir.items():
        present = _file_names(Path(root, IMAGES_DIR, *prefix))
        missing += [i for i in ids if f"{i}.jpg" not in present]
    return missing


def _file_names(directory):
    """Names of the files in ``directory``; none when it does not exist."""
    try:
        with os.scandir(directory) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def split_landmark(image_ids, seed, val_fraction):
    """Split one landmark's images into (train, val), the val share rounded, at least one each when n >= 2.

    Images are ordered by a hash of (seed, image id), so the split depends on neither the CSV order nor
    on the other landmarks.
    """
    order = sorted(image_ids, key=lambda i: hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=8).digest())
    n_val = min(len(order) - 1, max(1, int(len(order) * val_fraction + 0.5)))
    return order[n_val:], order[:n_val]


# ---------------------------------------------------------------- cache


def _read_cache(cache_dir, settings):
    """(landmark_ids, train, val) from a cache made with ``settings``, or None to build it afresh."""
    paths = [cache_dir / TRAIN_CACHE, cache_dir / VAL_CACHE]
    if not all(path.is_file() for path in paths):
        return None
    payloads = [safe_load(path) for path in paths]
    for path, payload in zip(paths, payloads, strict=True):
        made_with = payload.get("settings") if isinstance(payload, dict) else None
        if made_with != settings:
            log.warning("%s was made with other settings (%s), not %s: rebuilding the split",
                        path, made_with, settings)
            return None
    train, val = payloads
    for path, payload in zip(paths, payloads, strict=True):
        check_split(path, payload.get("landmark_ids"), payload.get("samples"))
        if payload["landmark_ids"] != train["landmark_ids"]:
            raise InputError(f"{path}: its landmark ids are not those of {paths[0]}; delete the split cache files "
                             f"({', '.join(SPLIT_CACHE_FILES)}) to rebuild them from the CSV")
    return train["landmark_ids"], train["samples"], val["samples"]


def _write_cache(cache_dir, settings, landmark_ids, train, val):
    """Save the label map as CSV and both splits as pickles of plain data, each file replaced atomically."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        label_map = pd.DataFrame({"landmark_id": landmark_ids, "label": range(len(landmark_ids))})
        atomic_write(cache_dir / LABEL_MAP, lambda f: f.write(label_map.to_csv(index=False).encode()))
        for name, samples in ((VAL_CACHE, val), (TRAIN_CACHE, train)):
            payload = {"settings": settings, "landmark_ids": landmark_ids, "samples": samples}
            atomic_write(cache_dir / name, lambda f, p=payload: pickle.dump(p, f, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else err
        raise InputError(f"cannot write the GLDv2 split cache to {cache_dir} ({reason}): "
                         "pass a writable cache_dir") from None


# ---------------------------------------------------------------- dataset


class LandmarkImages(Dataset):
    """(image tensor, label) for (path, label) samples, paths relative to ``root``; None for an unreadable image.

    ``transform`` is called with the image read by ``load_rgb``, or, when it has ``reads_path = True``
    (``datasets.transforms.FastTrainCrop``), with the file path, to read the file itself.

    Paths and labels are held in numpy arrays rather than a list of tuples: DataLoader workers then share
    them without the copy-on-read growth that reference counts cause on Python objects.
    """

    def __init__(self, samples, root, transform):
        self.root = Path(root)
        self.paths = np.array([str(path) for path, _ in samples], dtype=np.str_)
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        path = self.root / self.paths[index]
        reads_path = getattr(self.transform, "reads_path", False)
        try:
            image = self.transform(path if reads_path else load_rgb(path))
        except ImageReadError as err:
            log.warning("skipping an unreadable image: %s", err)
            return None
        return image, int(self.labels[index])


def collate_skip_bad(batch):
    """Collate the readable samples: (images, labels, n_skipped); empty tensors when none was readable."""
    good = [sample for sample in batch if sample is not None]
    n_skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), n_skipped
    images, labels = default_collate(good)
    return images, labels, n_skipped
