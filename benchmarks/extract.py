"""Extraction speed: our batched multi-scale extraction against the reference per-image loop.

    python -m benchmarks.extract            # 96 images of the synthetic world, two image sets
    python -m benchmarks.extract --quick    # 12 small images (CI)
    python -m benchmarks.extract --device cuda --amp   # on a GPU: also float16 autocast

The model is a Token checkpoint (``--checkpoint``, default the demo's trained model; without it, a freshly
initialised resnet18 Token, which the output says). The images are database images of the demo's synthetic
world, resized as the evaluation resizes them (``--imsize``), in two sets:

- ``as generated``: every image has its own size (the generator draws each), so no two can share a batch;
- ``two shapes``: the same images resized to one landscape or one portrait size (long side
  ``min(imsize, 160)``, aspect 4:3), as in ROxf / RPar / R1M, where nearly every database image is 1024 x 768
  or 768 x 1024 after the evaluation resizing: there, batching applies.

Methods, each over the same images with the same model, each timed end to end (reading and resizing the
images included), best of ``--repeats``:

- ``reference``: a plain loop, one image at a time (batch 1), three forward passes (scales 1, sqrt 2,
  1/sqrt 2), as the authors' evaluation does;
- ``ours, contiguous``: ``retrieval.extract.extract``: loader processes, images of equal size batched, the model
  as the reference holds it;
- ``ours``: test.py's extraction, the same with the model from ``prepare_model`` (channels-last memory format);
- with ``--amp`` on CUDA: ``ours, AMP``, float16 autocast.

Every method's descriptors are checked against the reference's (max abs difference below 1e-5; AMP, which
rounds to float16, is only reported). PyTorch runs on ``--threads`` threads (default 1): on a machine whose
cores other processes share, more intra-op threads than free cores slow PyTorch down.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import copy
import os
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_DIR,
    benchmark_model,
    machine,
    report_path,
    set_threads,
    synthetic_world,
    table,
    write_json,
)
from datasets.images import load_rgb
from datasets.revisitop import RevisitopImages, load_revisitop
from retrieval.extract import SCALES, extract, multiscale_descriptor, prepare_model
from utils import checks
from utils.errors import InputError, fail_cleanly

TOLERANCE = 1e-5


class TwoShapes(RevisitopImages):
    """Database images resized to ``long x 3/4 long`` (landscape) or ``3/4 long x long`` (portrait)."""

    def __init__(self, paths, imsize, long=160):
        super().__init__(paths, imsize)
        self.long = min(imsize, long)

    def __getitem__(self, index):
        img = load_rgb(self.paths[index])
        short = round(0.75 * self.long)
        size = (self.long, short) if img.width >= img.height else (short, self.long)
        return self.to_tensor(img.resize(size, Image.Resampling.LANCZOS)), index


@torch.no_grad()
def reference(model, images, device, scales=SCALES):
    """The reference loop: one image at a time, read in the loop, one forward pass per scale."""
    out = []
    for i in range(len(images)):
        image, _ = images[i]
        out.append(multiscale_descriptor(model, image[None].to(device), scales)[0].cpu().numpy())
    return np.stack(out)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats, device):
    best, result = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def methods(model, dim, device, args):
    """``{name: (function of the images, checked against the reference)}``; ``model`` in eval mode on ``device``."""
    def ours(m, amp=False):
        return lambda images: extract(m, images, dim, device, SCALES, args.batch_size, args.workers, amp)

    prepared = prepare_model(copy.deepcopy(model), device)
    found = {"reference": (lambda images: reference(model, images, device), True),
             "ours, contiguous": (ours(model), True),
             "ours": (ours(prepared), True)}
    if args.amp:
        found["ours, AMP"] = (ours(prepared, amp=True), False)
    return found


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="12 images at --imsize 64, one repeat (CI)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help="Token checkpoint; when missing, a freshly initialised resnet18 Token")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="the demo's synthetic world (generated with the demo's parameters when missing)")
    parser.add_argument("--images", type=checks.int_in(2, 10**5), default=None,
                        help="database images per set (default 96; 12 quick)")
    parser.add_argument("--imsize", type=checks.IMSIZE, default=None,
                        help="longer side of the evaluation resizing (default 1024, test.py's; 64 quick); the "
                             "synthetic images are 128-160 pixels and are never enlarged")
    parser.add_argument("--batch-size", type=checks.EXTRACT_BATCH, default=8,
                        help="ours: images of equal size per batch")
    parser.add_argument("--workers", type=checks.WORKERS, default=min(8, os.cpu_count() or 1),
                        help="ours: image-loading processes (test.py's default)")
    parser.add_argument("--threads", type=checks.THREADS, default=1, help="PyTorch intra-op threads")
    parser.add_argument("--repeats", type=checks.int_in(1, 100), default=None,
                        help="timed runs of each method, best kept (2; 1 quick)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    parser.add_argument("--amp", action="store_true", help="also time float16 autocast (CUDA only)")
    parser.add_argument("--seed", type=checks.SEED, default=0, help="seed of the fallback model")
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/extract[-quick].json)")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    report_file = report_path(args, "extract")
    count = args.images or (12 if args.quick else 96)
    imsize = args.imsize or (64 if args.quick else 1024)
    repeats = args.repeats or (1 if args.quick else 2)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device here")
    if args.amp and args.device != "cuda":
        raise InputError("--amp needs --device cuda")
    set_threads(args.threads)
    device = torch.device(args.device)
    model, info = benchmark_model(args.checkpoint, args.seed)  # a bad checkpoint stops here, before the world
    world = synthetic_world(args.data_dir, args.quick)
    print(info["note"])
    model = model.to(device).eval()
    dim = model.config.descriptor_dim
    paths = load_revisitop(world.test_root.parent, world.test_name).db_paths()[:count]
    sets = {"as generated": RevisitopImages(paths, imsize), "two shapes": TwoShapes(paths, imsize)}
    runs = methods(model, dim, device, args)

    reference(model, RevisitopImages(paths[:2], imsize), device)  # warm-up: allocator, kernel choices
    results, rows = {}, []
    for set_name, images in sets.items():
        sizes = len({tuple(images[i][0].shape[-2:]) for i in range(len(images))})
        results[set_name] = {"images": len(images), "distinct_sizes": sizes, "methods": {}}
        base = None
        for name, (run, checked) in runs.items():
            seconds, out = best_time(lambda run=run, images=images: run(images), repeats, device)
            base = out if base is None else base
            diff = float(np.abs(out - base).max())
            if checked and diff >= TOLERANCE:
                raise AssertionError(f"{set_name}, {name}: descriptors differ from the reference's by {diff}")
            entry = {"seconds": seconds, "ms_per_image": 1000 * seconds / len(images),
                     "images_per_s": len(images) / seconds, "max_abs_diff": diff}
            results[set_name]["methods"][name] = entry
            ratio = results[set_name]["methods"]["reference"]["seconds"] / seconds
            entry["speedup"] = ratio
            rows.append([f"{set_name} ({len(images)} images, {sizes} sizes)", name, f"{entry['ms_per_image']:.1f}",
                         f"{entry['images_per_s']:.2f}", f"{ratio:.2f}", f"{diff:.1e}"])
            print(f"{set_name}: {name} {entry['ms_per_image']:.1f} ms/image", flush=True)

    print(f"\n{args.device}, {args.threads} PyTorch thread(s), batch {args.batch_size}, {args.workers} loader "
          f"process(es), imsize {imsize}, best of {repeats}")
    print(table(["images", "method", "ms/image", "images/s", "speed-up", "max |diff|"], rows))
    if args.device == "cpu":
        print("GPU (AMP): not run here; python -m benchmarks.extract --device cuda --amp")
    report = {"benchmark": "extract", "quick": args.quick, "model": info, "device": args.device,
              "threads": args.threads, "batch_size": args.batch_size, "workers": args.workers, "imsize": imsize,
              "repeats": repeats, "scales": list(SCALES), "tolerance": TOLERANCE, "sets": results,
              "gpu_run": args.device == "cuda", "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(report_file, report)
    print(f"wrote {report_file}")
    return report


if __name__ == "__main__":
    main()
