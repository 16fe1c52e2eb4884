"""Multi-scale global descriptors, computed as the reference evaluation computes them, batched where shapes allow.

The protocol (docs/FACTS.md, "Evaluation protocol"; the authors' ``extract_vectors`` and cirtorch's ``extract_ms``):
for each scale ``s`` of 1, sqrt(2), 1/sqrt(2) the ImageNet-normalised image tensor is resized with
``F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)`` (scale 1: the tensor itself), its
descriptor is taken and L2-normalised; the mean over the scales is L2-normalised again.

Images of equal size (after the evaluation resizing) go through the model together: interpolation and every
layer of the model in eval mode treat the images of a batch independently, so a batch gives each image the
descriptor it gets alone, up to float rounding.
"""

import itertools
import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from utils.errors import InputError
from utils.interrupts import interrupts_deferred
from weights import load_model

SCALES = (1.0, 2 ** 0.5, 2 ** -0.5)


def rescale(images, scale):
    """``images`` (B, 3, H, W) resized by ``scale`` exactly as the reference resizes them.

    ``F.interpolate`` with ``scale_factor`` (not a size) and the scale factor not recomputed: the output is
    ``floor(H * s) x floor(W * s)`` and output pixel ``i`` samples the input at ``(i + 0.5) / s - 0.5``.
    A side that would shrink to 0 px (an image 1 px wide at s < 1, where the reference crashes) is kept at
    1 px instead, so every image gets a descriptor.
    """
    if scale == 1:
        return images
    h, w = (math.floor(n * scale) for n in images.shape[-2:])
    if h == 0 or w == 0:
        return F.interpolate(images, size=(max(1, h), max(1, w)), mode="bilinear", align_corners=False)
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)


@torch.no_grad()
def multiscale_descriptor(model, images, scales=SCALES):
    """L2-normalised mean of the L2-normalised descriptors of ``images`` (B, 3, H, W) at ``scales``: (B, d).

    With B = 1 this is the reference computation, one image and one forward pass per scale. Per-scale
    descriptors are summed in float32 whatever precision the model runs in.
    """
    total = 0
    for scale in scales:
        total = total + F.normalize(model.forward_test(rescale(images, scale)).float(), dim=-1)
    return F.normalize(total / len(scales), dim=-1)


def prepare_model(model, device):
    """``model`` in eval mode on ``device``, in channels-last memory format, which convolutions run faster in on
    GPUs and on the CPU (``python -m benchmarks.extract`` measures it: docs/benchmarks.md, "Extraction"); same
    results up to float rounding."""
    return model.to(device).eval().to(memory_format=torch.channels_last)


def load_for_extraction(checkpoint, device):
    """The model of ``checkpoint`` (a file that ``weights.load_model`` reads, or a released name, looked up in
    models/) ready for extraction on ``device``: the one place where test.py and index.py load their model."""
    return prepare_model(load_model(checkpoint), device)


def equal_size_batches(items, batch_size, max_pending=None):
    """Group ``(image, index)`` items into ``(images, indices)`` batches of images of one size.

    A batch is released as soon as ``batch_size`` images of its size have arrived; when ``max_pending`` images
    (default ``4 * batch_size``) wait in unfinished batches, the fullest is released, which bounds memory;
    the rest are released at the end. Every item comes out exactly once.
    """
    max_pending = max_pending or 4 * batch_size
    buckets = defaultdict(list)
    pending = 0

    def release(size):
        nonlocal pending
        bucket = buckets.pop(size)
        pending -= len(bucket)
        return torch.stack([image for image, _ in bucket]), [index for _, index in bucket]

    for image, index in items:
        size = tuple(image.shape[-2:])
        buckets[size].append((image, index))
        pending += 1
        if len(buckets[size]) == batch_size:
            yield release(size)
        elif pending >= max_pending:
            yield release(max(buckets, key=lambda key: len(buckets[key])))
    while buckets:
        yield release(next(iter(buckets)))


def _loader_error(err):
    """An ``InputError`` raised in a loader worker comes back with the worker's traceback: keep its last line,
    less the exception's class name, so that the user reads one line."""
    lines = str(err).strip().splitlines()
    return InputError(lines[-1].split(": ", 1)[-1] if len(lines) > 1 else lines[0])


def _readable(items, progress):
    """The ``(image, index)`` items whose image is not None; the others count as done on ``progress``."""
    for image, index in items:
        if image is not None:
            yield image, index
        elif progress is not None:
            progress.update(1)


def extract_spans(model, images, spans, dim, device, scales=SCALES, batch_size=8, workers=4, amp=False,
                  progress=None, describe=multiscale_descriptor):
    """Multi-scale descriptors of the images of each ``(start, stop)`` span of a dataset of ``(tensor 3 x H x W,
    index)`` items: yields one float32 (stop - start, dim) array per span, in order, each as soon as it is done.

    One loader (``workers`` processes, started once) reads the images of every span; they are batched by size
    (``equal_size_batches``) within a span. ``amp`` runs the model under float16 autocast (CUDA only).
    ``model`` must come from ``prepare_model``. ``progress`` (a tqdm bar) is advanced by the images done. An item
    whose tensor is None (an unreadable image of a user's collection, ``datasets.collection``) is skipped: its row
    is NaN. ``describe(model, images, scales)`` gives the (B, dim) rows of a batch: the multi-scale descriptor, or
    the local features of ``retrieval.local_features``.
    """
    loader = DataLoader(Subset(images, [i for start, stop in spans for i in range(start, stop)]), batch_size=None,
                        shuffle=False, num_workers=workers)
    with interrupts_deferred():  # a Ctrl-C while the workers are forked is raised once they are, not lost
        items = iter(loader)
    try:
        for start, stop in spans:
            yield _descriptors(model, itertools.islice(items, stop - start), start, stop - start, dim, device,
                               scales, batch_size, amp, progress, describe)
        # the loader's end, read here, shuts its workers down in this code rather than in the iterator's
        # destructor, where Python ignores a KeyboardInterrupt (Ctrl-C) that lands meanwhile
        next(items, None)
    except InputError as err:
        raise _loader_error(err) from None


@torch.no_grad()
def _descriptors(model, items, start, count, dim, device, scales, batch_size, amp, progress, describe):
    """Rows ``start .. start + count`` of the descriptors, from the ``(image, index)`` items of those rows."""
    out = np.full((count, dim), np.nan, dtype=np.float32)
    for batch, indices in equal_size_batches(_readable(items, progress), batch_size):
        batch = batch.to(device)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out[np.asarray(indices) - start] = describe(model, batch, scales).cpu().numpy()
        if progress is not None:
            progress.update(len(indices))
    return out


def extract(model, images, dim, device, scales=SCALES, batch_size=8, workers=4, amp=False, progress=None):
    """Multi-scale descriptors of a whole dataset of ``(tensor 3 x H x W, index)`` items: float32 (len, dim), rows
    in dataset order (``extract_spans`` with one span)."""
    (out,) = extract_spans(model, images, [(0, len(images))], dim, device, scales, batch_size, workers, amp, progress)
    return out
