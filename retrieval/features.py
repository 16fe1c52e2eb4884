"""Descriptors on disk: extracted in shards that any number of processes share, resumed after an interruption,
reused by a later run with the same checkpoint, settings and image files (``feature_key``).

Layout under ``<output_dir>/features/``::

    <set>.npy, <set>.json       float32 (images x dim), rows in image-list order; the JSON sidecar holds the key
                                (``feature_key``), the shape and the extraction time per image
    <set>/shard_00000.npy ...   rows [k * size, (k + 1) * size) while <set> is extracted, and <set>/meta.json
                                (key, image count, shard size); merged into <set>.npy at the end, then removed
    revisitop1m/shard_*.npy     the R1M distractors stay in shards (no second 4 GB copy); meta.json records the
                                extraction time once every shard is there

``<set>`` is ``<dataset>_db``, ``<dataset>_query`` or ``revisitop1m``; local features (test.py --local-features,
``retrieval.local_features``) are stored alike, in float16, as ``<set>_local`` and ``codebook_images``. Every file
is written to a temporary name and renamed into place, so a file that exists is complete. A sidecar is removed
before its ``.npy`` is replaced and written after it: a run killed in between leaves no sidecar, hence no reuse of a
half-updated set. A shard folder whose ``meta.json`` does not match the current key is emptied; shards that are
there and of the right length are kept, the missing ones extracted.

A set is written by one run at a time: ``load`` holds ``<set>.lock`` (``utils.locking``), and a second run that
would write the same set in the same folder (two test.py runs with one ``--output-dir``) stops at once, naming the
first, instead of emptying and refilling its shards.

Under ``torchrun`` rank 0 decides what to extract and broadcasts it; the missing shards are dealt round-robin
to the ranks, each writes its own, and rank 0 merges once all have finished (``output_dir`` must then be on a
file system every rank sees).
"""

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch.distributed as dist
from tqdm import tqdm

from utils.atomic import atomic_write, read_json, save_json
from utils.locking import exclusive

SHARD_SIZE = 10_000


KEY_CHECKS = "same checkpoint file, imsize, scales and amp; same image paths, sizes, modification times and boxes"


def _file_stamp(path):
    """``[bytes, mtime_ns]`` of a file (None when it cannot be stat'ed): a cheap sign that it was rewritten."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def feature_key(checkpoint, imsize, scales, amp, paths, bbxs=None):
    """What the descriptors of an image list depend on (``KEY_CHECKS``): the checkpoint file (path, size,
    modification time), the resizing, the scales, mixed precision and the images (absolute paths, the size and
    modification time of each file, query boxes; hashed). Image contents are not read: a file rewritten with
    its old size and modification time restored would go unnoticed."""
    stat = os.stat(checkpoint)
    images = json.dumps([[os.path.abspath(path) for path in paths],
                         None if bbxs is None else [list(map(float, box)) for box in bbxs],
                         [_file_stamp(path) for path in paths]])
    return {"checkpoint": {"path": os.path.abspath(checkpoint), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "imsize": imsize, "scales": [float(s) for s in scales], "amp": bool(amp),
            "images": {"count": len(paths), "sha256": hashlib.sha256(images.encode()).hexdigest()}}


def save_array(path, array):
    """``array`` as an .npy of float32, or of float16 when it is float16 (local features), written atomically."""
    dtype = np.float16 if array.dtype == np.float16 else np.float32
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=dtype)))


def _shape(path):
    """Shape of the .npy at ``path`` (its header only), or None when missing or unreadable: truncated,
    0 bytes (numpy's ``EOFError``) or not an .npy."""
    try:
        return np.load(path, mmap_mode="r").shape
    except (OSError, ValueError, EOFError):
        return None


def _broadcast(obj, env):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj, env):
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


class FeatureStore:
    """The feature sets under ``root`` (``<output_dir>/features``), shared by the ranks of ``env``, stored as
    ``dtype`` (float32; the local features of ``retrieval.local_features`` in float16)."""

    def __init__(self, root, env, progress=True, dtype=np.float32):
        self.root = Path(root)
        self.dtype = dtype
        self.env = env
        self.progress = progress  # progress bars (rank 0 only)
        if env.is_main:
            self.root.mkdir(parents=True, exist_ok=True)

    def _say(self, message):
        if self.env.is_main:
            print(message, flush=True)

    def load(self, name, key, count, dim, compute, shard_size=SHARD_SIZE, merge=True):
        """The features of set ``name``: on rank 0 ``(array count x dim, extraction ms per image or None)``,
        on the other ranks ``(None, None)``.

        Reused from disk when the key matches; otherwise the missing shards are extracted by all ranks with
        ``compute(spans, progress)``: for the ``(start, stop)`` spans of a rank's shards, one float32 array of
        rows ``start:stop`` of the set per span, in order, each written as a shard as soon as it comes.
        ``merge``: write ``<name>.npy`` and drop the shards (else keep them, as for R1M).
        """
        with exclusive(self.root / f"{name}.lock", f"{self.root / name}", self.env):
            return self._load(name, key, count, dim, compute, shard_size, merge)

    def _load(self, name, key, count, dim, compute, shard_size, merge):
        plan = _broadcast(self._plan(name, key, (count, dim), shard_size, merge) if self.env.is_main else None,
                          self.env)
        if plan["reuse"]:
            self._say(f">> {name}: reusing {plan['reuse']} ({KEY_CHECKS})")
            return self._read(name, count, dim, merge) if self.env.is_main else (None, None)
        seconds, done = self._extract(name, count, plan, compute)
        stats = _gather((seconds, done), self.env)  # also waits until every rank has written its shards
        if not self.env.is_main:
            return None, None
        images = sum(n for _, n in stats)
        ms = 1000 * sum(s for s, _ in stats) / images if images else None
        features = self._merge(name, count, dim, plan["shard_size"])
        if merge:
            self._sidecar(name).unlink(missing_ok=True)
            save_array(self._file(name), features)
            save_json(self._sidecar(name), {"key": key, "shape": [count, dim], "extraction_ms_per_image": ms})
            shutil.rmtree(self._shards(name))
        else:
            save_json(self._shards(name) / "meta.json", {**plan["meta"], "extraction_ms_per_image": ms})
        return features, ms

    def _file(self, name):
        return self.root / f"{name}.npy"

    def _sidecar(self, name):
        return self.root / f"{name}.json"

    def _shards(self, name):
        return self.root / name

    def _shard(self, name, k):
        return self._shards(name) / f"shard_{k:05d}.npy"

    def _plan(self, name, key, shape, shard_size, merge):
        """Rank 0: ``{"reuse": path}`` when the set is complete on disk, else the shard size, the metadata and
        the shards still missing (the shard folder emptied first if it holds another key's shards)."""
        count, dim = shape
        if merge and (read_json(self._sidecar(name)) or {}).get("key") == key and _shape(self._file(name)) == shape:
            return {"reuse": str(self._file(name))}
        size = max(1, min(shard_size, math.ceil(count / self.env.world_size)))
        meta = {"key": key, "count": count, "shard_size": size}
        folder = self._shards(name)
        found = read_json(folder / "meta.json") or {}
        if {k: found.get(k) for k in meta} != meta:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            save_json(folder / "meta.json", meta)
        shards = range(math.ceil(count / size))
        missing = [k for k in shards if _shape(self._shard(name, k)) != (min(size, count - k * size), dim)]
        if not merge and not missing:
            return {"reuse": str(folder)}
        done = len(shards) - len(missing)
        self._say(f">> {name}: extracting {count} images" if not done else
                  f">> {name}: {done} of {len(shards)} shards found, extracting the other {len(missing)}")
        return {"reuse": None, "shard_size": size, "meta": meta, "missing": missing}

    def _extract(self, name, count, plan, compute):
        """This rank's share of the missing shards (round-robin), each written as soon as it is done."""
        size = plan["shard_size"]
        mine = plan["missing"][self.env.rank::self.env.world_size]
        spans = [(k * size, min(count, (k + 1) * size)) for k in mine]
        images = sum(stop - start for start, stop in spans)
        start_time = time.perf_counter()
        with tqdm(total=images, unit="img", desc=name, disable=not (self.env.is_main and self.progress),
                  mininterval=1.0, dynamic_ncols=True) as progress:
            for k, rows in zip(mine, compute(spans, progress) if spans else (), strict=True):
                save_array(self._shard(name, k), rows.astype(self.dtype, copy=False))
        return time.perf_counter() - start_time, images

    def _merge(self, name, count, dim, size):
        """All shards of ``name`` in one array; every shard must be there (the ranks have finished)."""
        features = np.empty((count, dim), dtype=self.dtype)
        for k in range(math.ceil(count / size)):
            features[k * size:(k + 1) * size] = np.load(self._shard(name, k))
        return features

    def _read(self, name, count, dim, merge):
        if merge:
            return np.load(self._file(name)), read_json(self._sidecar(name)).get("extraction_ms_per_image")
        info = read_json(self._shards(name) / "meta.json")
        return self._merge(name, count, dim, info["shard_size"]), info.get("extraction_ms_per_image")
