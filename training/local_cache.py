"""The training data of ``train.py --model aggregator``: the local features of a frozen extractor, extracted once.

Every train and val image is resized as HOW's evaluation resizes a database image (thumbnail to ``--imsize``), and the
extractor's ``forward_local`` keeps its ``--num-features`` best local features over HOW's 7 scales
(``retrieval.local_features``: the same extraction as test.py --local-features). They are kept in float16 shards of
the local-feature store (``retrieval.local_features.LocalFeatureStore``) under ``<output-dir>/features/train_local/``
and ``val_local/``: shared by the ranks, resumed after an interruption, reused by a later run while the extractor file,
``--imsize``, ``--num-features`` and the image files are the same. The shards are not merged (the full GLDv2 at 1,000
features would be 405 GB): every rank reads their rows through memory maps (``ShardRows``).

Augmentation (``--keep-min``): each training set keeps a random subset of its features, a fraction drawn uniformly in
[keep_min, 1] (at least one feature), in their order; val sets keep all.
"""

import logging
import math
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from datasets.collection import CollectionImages
from retrieval.extract import extract_spans, load_for_extraction
from retrieval.features import SHARD_SIZE, feature_key
from retrieval.local_features import LOCAL_DIM, LOCAL_SCALES, LocalFeatureStore, local_key, local_rows, local_shard_size
from utils.errors import InputError

log = logging.getLogger("train")

FLOAT16_BYTES = 2


class TrainingFeatureStore(LocalFeatureStore):
    """The local-feature store, whose sets every rank reads (``rows``) once rank 0 has written them."""

    def rows(self, name, count, dim):
        """Set ``name``'s ``count`` rows of ``dim`` values, its shards memory-mapped (``ShardRows``)."""
        return self._read(name, count, dim, merge=False)[0]


class CachedLocalFeatures(Dataset):
    """``(features (num_features, 128) float32, NaN after the kept ones, label)`` for each image of ``rows``; None
    for an image without features (unreadable when cached), which the loader skips. ``keep_min`` < 1: a random
    subset of each set (the module's augmentation), drawn with torch's generator."""

    def __init__(self, rows, labels, keep_min=1.0):
        self.rows = rows
        self.labels = np.asarray(labels, dtype=np.int64)
        self.keep_min = keep_min

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        x = torch.from_numpy(np.asarray(self.rows[index], dtype=np.float32).reshape(-1, LOCAL_DIM))
        count = int((~x[:, 0].isnan()).sum())  # the store keeps an image's features first, then NaN rows
        if not count:
            return None
        if self.keep_min < 1:
            fraction = self.keep_min + (1 - self.keep_min) * torch.rand(()).item()
            keep = torch.randperm(count)[:max(1, math.ceil(fraction * count))].sort().values
            x = torch.cat([x[keep], x.new_full((len(x) - len(keep), LOCAL_DIM), float("nan"))])
        return x, int(self.labels[index])


def local_feature_sets(args, env, split, output_dir):
    """The train and val ``CachedLocalFeatures`` of ``split`` by the extractor ``args.extractor``, extracted first
    when they are not cached under ``output_dir/features``."""
    if args.local_dim != LOCAL_DIM:
        raise InputError(f"--local-dim {args.local_dim}: the cached local features are {LOCAL_DIM}-d")
    sets = {"train_local": split.train, "val_local": split.val}
    width = args.num_features * LOCAL_DIM
    size = sum(map(len, sets.values())) * width * FLOAT16_BYTES
    log.info("local features of %d train and %d val images (the best %d of each over %d scales, --imsize %d) by "
             "%s: %s in float16 under %s", len(split.train), len(split.val), args.num_features, len(LOCAL_SCALES),
             args.imsize, args.extractor, f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB",
             output_dir / "features")
    extractor = load_for_extraction(args.extractor, env.device)
    if not callable(getattr(extractor, "forward_local", None)):
        raise InputError(f"--extractor {args.extractor}: a {extractor.config.model!r} model has no local features; "
                         "pass a HOW or DELG checkpoint")
    store = TrainingFeatureStore(output_dir / "features", env, args.progress)
    data = {}
    for name, samples in sets.items():
        paths = [str(split.root / path) for path, _ in samples]
        key = local_key(feature_key(args.extractor, args.imsize, LOCAL_SCALES, False, paths), args.num_features)
        compute = partial(_extract, extractor, CollectionImages(paths, args.imsize), width, env, args)
        _, ms = store.load(name, key, len(paths), width, compute, local_shard_size(SHARD_SIZE, args.num_features),
                           merge=False)
        if ms is not None:
            log.info("%s: %.1f ms an image on %s", name, ms, env.device.type)
        if env.distributed:
            dist.barrier()  # rank 0 has written the set's meta.json
        data[name] = store.rows(name, len(paths), width)
    del extractor
    return (CachedLocalFeatures(data["train_local"], [label for _, label in split.train], args.keep_min),
            CachedLocalFeatures(data["val_local"], [label for _, label in split.val]))


def _extract(extractor, images, width, env, args, spans, progress):
    return extract_spans(extractor, images, spans, width, env.device, LOCAL_SCALES, 1, args.workers, False, progress,
                         partial(local_rows, num_features=args.num_features))
