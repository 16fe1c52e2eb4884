"""Training data pipeline speed per CPU core: the released transforms against ``--pipeline fast``, side by side.

    taskset -c 1 python -m benchmarks.loader          # 32 JPEGs of GLDv2-like sizes, crops of 512, 3 rounds
    python -m benchmarks.loader --quick               # 4 small JPEGs, crops of 64, one round (CI)

Images: JPEGs generated once into ``--data-dir`` (smooth noise, hard-edged blocks and lines and fine grain, so that
decoding costs what a photo's does), long side drawn uniformly from ``--long-side`` (default 800 to 1600), aspect
4:3 or 3:2, 3 in 4 landscape, quality ``--quality`` (default 90). The GLDv2 train images are Wikimedia Commons
photos as the CVDF download serves them; we found no published statistics of their sizes or JPEG quality, so
these defaults are an assumption (flags to match your copy: ``python -c "from PIL import Image; print(Image.open(
'x.jpg').size)"`` on a sample).

Methods, each over the same images, one process on one thread (``torch.set_num_threads(1)``; pin it to one core with
``taskset``), timed in interleaved rounds as the process's CPU time per image (median kept; wall time is reported
too, it also counts other processes' turns on a shared core):

- ``released``: ``load_rgb`` (full decode) and ``train_transform`` (RandomResizedCrop, flip, ColorJitter p=0.8,
  ToTensor, Normalize), all in the loader process;
- ``fast, full decode``: ``FastTrainCrop(draft=False)``: the crop box drawn from the header size, one resample of
  the box to the output, flip, uint8 tensor;
- ``fast``: ``FastTrainCrop``: the same, with boxes at least twice the output decoded at a reduced DCT scale;
- ``device step``: what ``--pipeline fast`` does on a GPU per batch (uint8 to float, colour jitter, normalisation),
  timed here on this CPU on batches of ``--batch`` images; on a GPU it runs beside the model;
- ``fast, jitter in the loader``: ``--pipeline fast`` when training on the CPU: ``fast`` and the released (PIL)
  colour jitter in the loader process, only the normalisation left to the batch.

Checks that ``fast`` gives the released output distribution: (1) crop boxes: ``crop_box`` and torchvision's
``RandomResizedCrop.get_params`` with different seeds, histograms of the box's area share and log aspect ratio
(total variation distance at most ``BOX_TV`` x sqrt(bins / boxes)); (2) pixels: for each image, one seed drives
both pipelines (so both draw the same box, flip and jitter factors), and the outputs (normalised tensors) must
agree in per-channel mean and std over the sample within ``STAT_TOL`` and in mean absolute difference within
``PIXEL_TOL`` grey levels.

Also reported: JPEG decoding alone (PIL full, PIL at half scale, ``torchvision.io.decode_jpeg``), and the evaluation
resizing (long side ``--eval-imsize``): ``load_rgb`` + ``resize_database`` against the thumbnail taken on the
not-yet-decoded image, where PIL may decode at a reduced scale (only for images at least twice the target).
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.io import decode_jpeg

from benchmarks.common import OUT_DIR, machine, report_path, set_threads, table, write_json
from datasets.images import load_rgb, open_image, to_rgb
from datasets.revisitop import resize_database
from datasets.transforms import (
    RATIO,
    BatchColorJitter,
    FastTrainCrop,
    color_jitter,
    crop_box,
    jitter_params,
    normalize,
    to_unit,
    train_transform,
)
from utils import checks
from utils.errors import fail_cleanly

SCALE = (0.2, 1.0)
JITTER = (0.4, 0.4, 0.2, 0.1)
JITTER_P = 0.8
BOX_TV = 2.0  # the two box histograms' total variation distance may reach BOX_TV * sqrt(BINS / boxes drawn)
# Per-channel mean and std of the normalised outputs (1 unit: ImageNet's std, ~57 grey levels). 0.035 is ~2 grey
# levels: the released 8-bit colour jitter comes out ~1 grey level darker than the float one on every channel.
STAT_TOL = 0.035
PIXEL_TOL = 3.0  # mean absolute difference, grey levels (0-255)
BINS = 20


# ---------------------------------------------------------------- images


def synthetic_jpeg(width, height, rng):
    """A photo-like RGB array: smooth colour noise, hard-edged blocks and lines, fine grain."""
    small = rng.random((height // 24 + 2, width // 24 + 2, 3))
    base = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC),
                      dtype=np.float32)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(20, width // 3), y0 + rng.integers(20, height // 3)
        base[y0:y1, x0:x1] = base[y0:y1, x0:x1] * 0.5 + rng.random(3) * 128
    base[:, :: rng.integers(17, 41)] *= 0.6  # vertical lines
    base += rng.normal(0, 4, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def generate(folder, count, long_side, quality, seed):
    """``count`` JPEGs in ``folder`` (reused when there), as described in the module docstring; their paths."""
    folder = Path(folder) / f"n{count}-long{long_side[0]}-{long_side[1]}-q{quality}-seed{seed}"
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        long = int(rng.integers(long_side[0], long_side[1] + 1))
        short = round(long * (3 / 4 if rng.random() < 0.5 else 2 / 3))
        width, height = (long, short) if rng.random() < 0.75 else (short, long)
        path = folder / f"{k:04d}.jpg"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            Image.fromarray(synthetic_jpeg(width, height, rng)).save(tmp, "JPEG", quality=quality)
            os.replace(tmp, path)
        else:
            rng.random((3,))  # keep the draws of the next sizes independent of what exists
        paths.append(path)
    return paths


# ---------------------------------------------------------------- timing


def time_methods(methods, paths, rounds):
    """Median CPU seconds per image of each method over ``rounds`` interleaved rounds (one pass over ``paths``
    each), and the wall seconds. The process runs on one thread, so its CPU time is the core time the work takes;
    on a shared machine wall time also counts the other processes' turns on the core."""
    times = {name: ([], []) for name in methods}
    for run in methods.values():  # warm-up: file cache, allocator
        run(paths[:2])
    for _ in range(rounds):
        for name, run in methods.items():
            torch.manual_seed(0)
            cpu, wall = time.process_time(), time.perf_counter()
            run(paths)
            times[name][0].append((time.process_time() - cpu) / len(paths))
            times[name][1].append((time.perf_counter() - wall) / len(paths))
    return {name: {"s_per_image": statistics.median(cpu), "rounds_s_per_image": cpu,
                   "wall_s_per_image": statistics.median(wall)} for name, (cpu, wall) in times.items()}


def each(transform):
    return lambda paths: [transform(path) for path in paths]


def device_step(imsize, batch):
    """The fast pipeline's device work on as many uint8 images of ``imsize`` (random pixels) as ``paths``
    holds, in batches of ``batch``."""
    jitter = BatchColorJitter(JITTER, JITTER_P)
    images = torch.randint(0, 256, (batch, 3, imsize, imsize), dtype=torch.uint8)
    return lambda paths: [normalize(jitter(to_unit(images[: len(paths) - start])))
                          for start in range(0, len(paths), batch)]


# ---------------------------------------------------------------- distribution checks


def box_histograms(sizes, draws, seed):
    """Histograms (area share, log aspect) of ``draws`` boxes per image size, ``crop_box`` vs torchvision's."""
    def hist(boxes):
        share = np.array([h * w / (width * height) for (width, height), (_, _, h, w) in boxes])
        log_aspect = np.array([np.log(w / h) for _, (_, _, h, w) in boxes])
        edges = np.log(RATIO[1]) * 1.05
        return (np.histogram(share, BINS, (0, 1))[0] / len(boxes),
                np.histogram(log_aspect, BINS, (-edges, edges))[0] / len(boxes))

    generator = torch.Generator().manual_seed(seed)
    ours = [((w, h), crop_box(w, h, SCALE, generator=generator)) for w, h in sizes for _ in range(draws)]
    torch.manual_seed(seed + 1)
    theirs = [((w, h), tuple(T.RandomResizedCrop.get_params(Image.new("L", (w, h)), SCALE, RATIO)))
              for w, h in sizes for _ in range(draws)]
    (share_a, aspect_a), (share_b, aspect_b) = hist(ours), hist(theirs)
    tv = {"area_share": 0.5 * float(np.abs(share_a - share_b).sum()),
          "log_aspect": 0.5 * float(np.abs(aspect_a - aspect_b).sum())}
    tolerance = BOX_TV * np.sqrt(BINS / len(ours))  # ~4x the distance of two samples of one distribution
    return {"boxes_per_pipeline": len(ours), "total_variation": tv, "tolerance": tolerance,
            "histograms": {"fast": {"area_share": share_a, "log_aspect": aspect_a},
                           "released": {"area_share": share_b, "log_aspect": aspect_b}},
            "ok": max(tv.values()) <= tolerance}


def pixel_check(paths, imsize):
    """Both pipelines on each image with one seed: per-channel mean/std of the outputs, mean |difference|."""
    released, fast = train_transform(imsize, SCALE, True, JITTER, JITTER_P), FastTrainCrop(imsize, SCALE, True)
    outs_r, outs_f = [], []
    for k, path in enumerate(paths):
        torch.manual_seed(k)
        outs_r.append(released(load_rgb(path)))
        torch.manual_seed(k)
        crop = fast(path)  # box and flip: the released draws; the jitter factors are the next ones
        outs_f.append(normalize(color_jitter(to_unit(crop[None]), *jitter_params(1, JITTER, JITTER_P)))[0])
    r, f = torch.stack(outs_r), torch.stack(outs_f)
    crops_drafted = sum(min(_box_of(k, Image.open(path).size)[2:]) >= 2 * imsize for k, path in enumerate(paths))
    stats = {name: {"mean": x.mean(dim=(0, 2, 3)).tolist(), "std": x.std(dim=(0, 2, 3)).tolist()}
             for name, x in (("released", r), ("fast", f))}
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    mad = float(((r - f) * std).abs().mean() * 255)
    worst = max(max(abs(a - b) for a, b in zip(stats["released"][k], stats["fast"][k], strict=True))
                for k in ("mean", "std"))
    return {"images": len(paths), "crops_decoded_reduced": crops_drafted, "stats": stats,
            "max_stat_difference": worst, "stat_tolerance": STAT_TOL, "mean_abs_diff_levels": mad,
            "pixel_tolerance_levels": PIXEL_TOL, "ok": worst <= STAT_TOL and mad <= PIXEL_TOL}


def _box_of(seed, size):
    torch.manual_seed(seed)
    return crop_box(*size, SCALE)


# ---------------------------------------------------------------- decoding and the evaluation resizing


def decode_methods(draft_scale=2):
    def pil_full(paths):
        return [load_rgb(p) for p in paths]

    def pil_reduced(paths):
        out = []
        for p in paths:
            with open_image(p) as img:
                img.draft(None, (img.width // draft_scale, img.height // draft_scale))
                out.append(to_rgb(img))
        return out

    def torchvision_full(paths):
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image decoding for TorchCodec's
            warnings.simplefilter("ignore", DeprecationWarning)
            return [decode_jpeg(torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8)) for p in paths]

    return {"PIL, full": pil_full, f"PIL, 1/{draft_scale} scale (draft)": pil_reduced,
            "torchvision.io.decode_jpeg, full": torchvision_full}


def thumbnail_lazily(path, imsize):
    """The evaluation resizing with PIL's thumbnail on the image before decoding (PIL may then draft)."""
    with open_image(path) as img:
        if img.format == "JPEG" and img.mode == "RGB":
            img.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
            return to_rgb(img)
        return resize_database(to_rgb(img), imsize)


def eval_check(paths, imsize):
    diffs = []
    for path in paths:
        a = np.asarray(resize_database(load_rgb(path), imsize), dtype=np.float32)
        b = np.asarray(thumbnail_lazily(path, imsize), dtype=np.float32)
        diffs.append(float(np.abs(a - b).mean()) if a.shape == b.shape else float("inf"))
    return {"mean_abs_diff_levels": max(diffs), "same_sizes": all(np.isfinite(diffs))}


# ---------------------------------------------------------------- main


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 images of long side 160-240, crops of 64, one round")
    parser.add_argument("--images", type=checks.int_in(1, 10**5), default=None,
                        help="JPEGs timed (default 32; 4 quick)")
    parser.add_argument("--imsize", type=checks.IMSIZE, default=None,
                        help="training crop (default 512, train.py's; 64 quick)")
    parser.add_argument("--long-side", type=checks.int_in(16, 10000), nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="range of the images' long side (default 800 1600; 160 240 quick)")
    parser.add_argument("--quality", type=checks.int_in(1, 100), default=90,
                        help="JPEG quality of the generated images")
    parser.add_argument("--rounds", type=checks.int_in(1, 100), default=None,
                        help="interleaved timing rounds, median kept (3; 1 quick)")
    parser.add_argument("--batch", type=checks.int_in(1, 1024), default=8,
                        help="images per batch of the timed device step")
    parser.add_argument("--eval-imsize", type=checks.IMSIZE, default=None,
                        help="long side of the evaluation resizing (default 1024, test.py's; 96 quick)")
    parser.add_argument("--box-draws", type=checks.int_in(1, 10**6), default=None,
                        help="crop boxes drawn per image size and pipeline for the box check (500; 1000 quick)")
    parser.add_argument("--data-dir", default=str(OUT_DIR / "loader-images"),
                        help="where the generated JPEGs are kept (reused by later runs)")
    parser.add_argument("--seed", type=checks.SEED, default=0, help="seed of the generated images")
    parser.add_argument("--out", default=None, help="JSON report (default runs/benchmarks/loader[-quick].json)")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    out = report_path(args, "loader")
    count = args.images or (4 if args.quick else 32)
    imsize = args.imsize or (64 if args.quick else 512)
    long_side = checks.ordered_pair("--long-side", args.long_side, 0, 10000) if args.long_side else \
        ((160, 240) if args.quick else (800, 1600))
    rounds = args.rounds or (1 if args.quick else 3)
    eval_imsize = args.eval_imsize or (96 if args.quick else 1024)
    box_draws = args.box_draws or (1000 if args.quick else 500)
    set_threads(1)
    paths = generate(args.data_dir, count, long_side, args.quality, args.seed)
    sizes = [Image.open(p).size for p in paths]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

    train = {"released": each(lambda p: train_transform(imsize, SCALE, True, JITTER, JITTER_P)(load_rgb(p))),
             "fast, full decode": each(FastTrainCrop(imsize, SCALE, True, draft=False)),
             "fast": each(FastTrainCrop(imsize, SCALE, True)),
             "device step (on this CPU)": device_step(imsize, args.batch),
             "fast, jitter in the loader": each(FastTrainCrop(imsize, SCALE, True, color_jitter=JITTER,
                                                              jitter_p=JITTER_P))}
    timing = time_methods(train, paths, rounds)
    base = timing["released"]["s_per_image"]
    for entry in timing.values():
        entry["images_per_s"] = 1 / entry["s_per_image"]
        entry["speedup"] = base / entry["s_per_image"]
    device = timing["device step (on this CPU)"]["s_per_image"]
    ratio = timing["fast"]["speedup"]
    ratio_with_device = base / (timing["fast"]["s_per_image"] + device)
    ratio_cpu_training = timing["fast, jitter in the loader"]["speedup"]
    boxes, pixels = box_histograms(sorted(set(sizes)), box_draws, args.seed), pixel_check(paths, imsize)

    decoding = time_methods(decode_methods(), paths, rounds)
    resizing = time_methods({"released (decode, then thumbnail)": each(lambda p: resize_database(load_rgb(p),
                                                                                                eval_imsize)),
                             "thumbnail before decoding": each(lambda p: thumbnail_lazily(p, eval_imsize))},
                            paths, rounds)
    eval_diff = eval_check(paths[: min(8, count)], eval_imsize)

    rows = [[name, f"{1000 * e['s_per_image']:.2f}", f"{e['images_per_s']:.1f}", f"{e['speedup']:.2f}",
             " / ".join(f"{1000 * t:.2f}" for t in e["rounds_s_per_image"])] for name, e in timing.items()]
    print(f"\n{count} JPEGs, long side {long_side[0]}-{long_side[1]}, quality {args.quality}; crops of {imsize}; "
          f"1 thread, cores {cores}; median of {rounds} rounds")
    print(table(["training pipeline", "ms/image", "images/s per core", "vs released", "rounds (ms)"], rows))
    print(f"fast vs released, loader work per core: {ratio:.2f}x (GPU training: the jitter on the device); counting "
          f"the device step as run on this CPU: {ratio_with_device:.2f}x; with the jitter in the loader (CPU "
          f"training): {ratio_cpu_training:.2f}x")
    print(f"box check: total variation area share {boxes['total_variation']['area_share']:.3f}, log aspect "
          f"{boxes['total_variation']['log_aspect']:.3f} (tolerance {boxes['tolerance']:.3f}) -> "
          f"{'ok' if boxes['ok'] else 'FAILED'}")
    print(f"pixel check over {count} images ({pixels['crops_decoded_reduced']} crops decoded reduced): per-channel "
          f"mean/std differ by at most {pixels['max_stat_difference']:.4f} (tolerance {STAT_TOL}), mean |diff| "
          f"{pixels['mean_abs_diff_levels']:.2f} grey levels (tolerance {PIXEL_TOL}) -> "
          f"{'ok' if pixels['ok'] else 'FAILED'}")
    print(table(["JPEG decoding", "ms/image"], [[n, f"{1000 * e['s_per_image']:.2f}"] for n, e in decoding.items()]))
    print(table([f"evaluation resizing to {eval_imsize}", "ms/image"],
                [[n, f"{1000 * e['s_per_image']:.2f}"] for n, e in resizing.items()]))
    print(f"evaluation resizing: thumbnail before decoding differs from the released by at most "
          f"{eval_diff['mean_abs_diff_levels']:.3f} grey levels (mean |diff| per image)")

    report = {"benchmark": "loader", "quick": args.quick, "images": count, "image_sizes": sizes,
              "long_side": list(long_side), "quality": args.quality, "imsize": imsize, "rounds": rounds,
              "batch": args.batch, "cores": cores, "threads": 1, "training": timing, "ratio": ratio,
              "ratio_with_device_step_on_cpu": ratio_with_device, "ratio_jitter_in_loader": ratio_cpu_training,
              "box_check": boxes, "pixel_check": pixels,
              "distribution_ok": boxes["ok"] and pixels["ok"], "decoding": decoding,
              "eval_resizing": {"imsize": eval_imsize, "methods": resizing, **eval_diff},
              "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
