"""Local features of an image set (test.py --local-features asmk|vlad), kept in the feature store like global
descriptors.

A model with local features (``HOW``: ``forward_local(image, scales, num_features)``, docs/FACTS.md, "Local
features") gives each image at most ``num_features`` 128-d descriptors, taken over ``scales`` and ranked by
attention. They are stored one image a row: the descriptors, in their order, flattened into ``num_features *
128`` float16 values, the rows after the last descriptor NaN (``pack``; ``unpack`` gives them back). An image
with no feature, or one that could not be read, is a row of NaN. The store (``retrieval.features.FeatureStore``
with float16) shards, resumes and reuses these rows exactly as it does global descriptors, under the same key
(``feature_key``) plus the feature count; a local shard holds at most ``LOCAL_SHARD_BYTES`` of rows (1,000
descriptors an image make a row of 256 kB: 524 images), and a set kept in shards (R1M) is read from them memory-mapped
(``LocalFeatureStore``, ``ShardRows``), so that the evaluation holds a slice of it at a time.

Images are resized as HOW resizes them, which is the evaluation's resizing (``datasets.revisitop.resize_database``
and ``resize_query``): thumbnail to ``imsize``, queries cropped to their box first, keeping their scale; one
image goes through the model at a time.
"""

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch

from networks.how import SCALES
from retrieval.extract import extract_spans
from retrieval.features import FeatureStore
from utils.errors import InputError

LOCAL_DIM = 128  # the width of HOW's local descriptors (its reduction layer), and of every codebook
NUM_FEATURES = 1000  # local features kept per image (HOW's n = 1000)
LOCAL_SCALES = SCALES  # HOW's test scales, the default of --scales under --local-features
LOCAL_SHARD_BYTES = 2 ** 27  # float16 rows a local-feature shard holds at most (128 MiB), whatever --shard-size


def local_shard_size(shard_size, num_features):
    """Images per local-feature shard: ``shard_size``, at most ``LOCAL_SHARD_BYTES`` of rows, at least 1."""
    return max(1, min(shard_size, LOCAL_SHARD_BYTES // (2 * LOCAL_DIM * num_features)))


def pack(descriptors, num_features):
    """One store row: ``descriptors`` (n <= num_features, LOCAL_DIM) flattened, NaN after them."""
    row = np.full(num_features * LOCAL_DIM, np.nan, dtype=np.float32)
    row[:descriptors.size] = np.asarray(descriptors, dtype=np.float32).ravel()
    return row


def unpack(row):
    """The descriptors of one store row as float32 (n, LOCAL_DIM): the rows before the first NaN row."""
    features = np.asarray(row, dtype=np.float32).reshape(-1, LOCAL_DIM)
    return features[:int(np.argmax(np.isnan(features[:, 0])))] if np.isnan(features[-1, 0]) else features


class LocalImages(Sequence):
    """The images of a store array (images x num_features * LOCAL_DIM) as a sequence of float32 (n_i, 128)
    arrays, each unpacked when it is read (an index: one array; a slice: a list), so that only the float16 rows
    stay in memory."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [unpack(row) for row in self.rows[index]]
        return unpack(self.rows[index])


class ShardRows:
    """The rows of a set's shards, memory-mapped, as one read-only array-like (length, an index or a slice of rows,
    ``np.asarray``): a set kept in shards (R1M) is read a slice at a time instead of whole."""

    def __init__(self, shards):
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(shard) for shard in shards])
        self.dtype = shards[0].dtype if shards else np.dtype(np.float16)

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            rows = range(len(self))[index]
            return np.stack([self[i] for i in rows]) if len(rows) else np.zeros((0,) + self.shards[0].shape[1:])
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.shards[k][index - self.offsets[k]]

    def __array__(self, dtype=None, copy=None):
        return np.concatenate(self.shards).astype(dtype or self.dtype, copy=False)


class LocalFeatureStore(FeatureStore):
    """The float16 feature store of local features; a set's shards are read memory-mapped (``ShardRows``)."""

    def __init__(self, root, env, progress=True):
        super().__init__(root, env, progress, np.float16)

    def _merge(self, name, count, dim, size):
        return ShardRows([np.load(self._shard(name, k), mmap_mode="r") for k in range(math.ceil(count / size))])


def check_local_model(model):
    """Raise ``InputError`` when ``model`` has no local features."""
    if not callable(getattr(model, "forward_local", None)):
        raise InputError(f"--local-features needs a model with local features (HOW); {model.__class__.__name__} has "
                         "none")


def local_rows(model, images, scales, num_features):
    """``describe`` for ``retrieval.extract.extract_spans``: the packed local features of each image of the batch
    ``images`` (B, 3, H, W), one forward_local call per image, as a float32 tensor (B, num_features * 128)."""
    rows = []
    for image in images:
        descriptors = model.forward_local(image[None], list(scales), num_features).descriptors
        if descriptors.ndim != 2 or descriptors.shape[1] != LOCAL_DIM or len(descriptors) > num_features:
            raise InputError(f"{model.__class__.__name__}.forward_local gave descriptors of shape "
                             f"{tuple(descriptors.shape)}, expected at most {num_features} x {LOCAL_DIM}")
        rows.append(pack(descriptors.float().cpu().numpy(), num_features))
    return torch.from_numpy(np.stack(rows))


def local_key(key, num_features):
    """The store key of a local-feature set: the global key (``retrieval.features.feature_key``) and the count."""
    return {**key, "local_features": int(num_features)}


def load_local(store, model, name, key, images, settings, env, scales, merge=True):
    """Packed local features by ``model`` of the ``images`` (a dataset of ``(tensor, index)``, e.g.
    ``RevisitopImages``) as set ``name`` of ``store`` (a float16 ``FeatureStore``): ``(array images x
    num_features * 128, ms per image)`` on rank 0, ``(None, None)`` elsewhere. ``settings``: the evaluation's
    (``num_features``, ``workers``, ``amp``, ``shard_size``)."""
    width = settings.num_features * LOCAL_DIM

    def compute(spans, progress):
        return extract_spans(model, images, spans, width, env.device, scales, 1, settings.workers, settings.amp,
                             progress, partial(local_rows, num_features=settings.num_features))

    return store.load(name, local_key(key, settings.num_features), len(images), width, compute,
                      local_shard_size(settings.shard_size, settings.num_features), merge)
