"""Figures for any checkpoint and data set: training curves, top-k retrievals, token attention maps.

    python -m utils.visualize curves     --metrics RUN/metrics.csv --out curves.png
    python -m utils.visualize retrievals --data-root DATA --dataset roxford5k --features RUN/features --out top.png
    python -m utils.visualize attention  --checkpoint CKPT --images a.jpg b.jpg --out attention.png

``retrievals`` reads the descriptors test.py wrote (``<dataset>_db.npy``, ``<dataset>_query.npy``) and draws,
per query, the query with its box and the top-k database images framed green (easy or hard positive), red
(negative) or grey (junk), as in the paper's qualitative figure. ``attention`` overlays each token's spatial
attention (paper, Fig. 3a): the tokenizer's assignment and the last refinement block's cross-attention.
Figure sizes are fixed by ``--width`` (pixels) so every PNG has a known size.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from datasets.images import load_rgb, to_normalized_tensor  # noqa: E402
from datasets.revisitop import load_revisitop, resize_database  # noqa: E402
from utils.errors import InputError, fail_cleanly, require_path  # noqa: E402

DPI = 100
FRAME = {"positive": "#1a9850", "negative": "#d73027", "junk": "#999999"}


def _save(fig, out):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def _figure(rows, cols, width):
    """A grid of square-ish panels ``width`` pixels wide."""
    panel = width / cols / DPI
    fig, axes = plt.subplots(rows, cols, figsize=(width / DPI, panel * rows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def relevance(gnd_query, index):
    """'positive' (easy or hard), 'junk' or 'negative' for database ``index`` under one query's ground truth."""
    if index in gnd_query["easy"] or index in gnd_query["hard"]:
        return "positive"
    return "junk" if index in gnd_query["junk"] else "negative"


def plot_retrievals(data_root, dataset, features_dir, out, queries=(0, 1, 2, 3), topk=8, width=1200):
    """Top-``topk`` database images for each of ``queries``, framed by their relevance."""
    ds = load_revisitop(data_root, dataset)
    features_dir = Path(features_dir)
    db = np.load(require_path(features_dir / f"{dataset}_db.npy", "database descriptors written by test.py"))
    qv = np.load(require_path(features_dir / f"{dataset}_query.npy", "query descriptors written by test.py"))
    if len(db) < len(ds.imlist) or len(qv) != len(ds.qimlist):
        raise InputError(f"{features_dir}: {len(db)} database / {len(qv)} query descriptors for {dataset}'s "
                         f"{len(ds.imlist)} / {len(ds.qimlist)} images")
    queries = [q for q in queries if q < len(ds.qimlist)]
    scores = db[: len(ds.imlist)] @ qv[queries].T
    fig, axes = _figure(len(queries), topk + 1, width)
    db_paths, q_paths = ds.db_paths(), ds.query_paths()
    for row, q in enumerate(queries):
        query = load_rgb(q_paths[q])
        axes[row, 0].imshow(query)
        x0, y0, x1, y1 = ds.gnd[q]["bbx"]
        axes[row, 0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=2))
        axes[row, 0].set_title(f"query {q}", fontsize=8)
        for col, index in enumerate(np.argsort(-scores[:, row], kind="stable")[:topk], start=1):
            kind = relevance(ds.gnd[q], index)
            ax = axes[row, col]
            ax.imshow(load_rgb(db_paths[index]))
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(FRAME[kind])
                spine.set_linewidth(4)
            ax.set_title(f"{col}: {scores[index, row]:.2f}", fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def overlay(image, attention):
    """Upsample an (h, w) attention map bilinearly to the image's size and scale it to [0, 1]."""
    att = torch.as_tensor(attention, dtype=torch.float32)[None, None]
    att = F.interpolate(att, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]
    att = att - att.min()
    return (att / att.max().clamp_min(1e-12)).numpy()


def plot_attention(model, image_paths, out, imsize=512, width=1200):
    """Per image: the image, then one panel per token for each attention source the model has."""
    to_tensor = to_normalized_tensor()
    images = [resize_database(load_rgb(path), imsize) for path in image_paths]
    maps = [model.attention_maps(to_tensor(img)[None]) for img in images]
    sources = list(maps[0])
    if not sources:
        raise InputError("this model has no tokens (a pooling baseline): no attention maps to draw")
    tokens = maps[0][sources[0]].shape[1]
    fig, axes = _figure(len(images), 1 + tokens * len(sources), width)
    for row, (img, per_source) in enumerate(zip(images, maps, strict=True)):
        axes[row, 0].imshow(img)
        for s, source in enumerate(sources):
            for t in range(tokens):
                ax = axes[row, 1 + s * tokens + t]
                ax.imshow(img)
                ax.imshow(overlay(img, per_source[source][0, t]), cmap="jet", alpha=0.5)
                if row == 0:
                    ax.set_title(f"{source} token {t + 1}", fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="figure", required=True)
    curves = sub.add_parser("curves", help="loss, top-1/top-5 error and lr from a training run's metrics.csv")
    curves.add_argument("--metrics", required=True, help="metrics.csv written by train.py")
    curves.add_argument("--out", required=True, help="PNG to write")
    ret = sub.add_parser("retrievals", help="top-k retrievals of a few queries, framed by relevance")
    ret.add_argument("--data-root", required=True, help="folder holding test/<dataset>/ (revisitop layout)")
    ret.add_argument("--dataset", required=True, help="test set name, e.g. roxford5k or synthetic")
    ret.add_argument("--features", required=True, help="features folder written by test.py --output-dir")
    ret.add_argument("--queries", type=int, nargs="+", default=[0, 1, 2, 3], help="query indices to show")
    ret.add_argument("--topk", type=int, default=8, help="retrieved images shown per query")
    ret.add_argument("--out", required=True, help="PNG to write")
    ret.add_argument("--width", type=int, default=1200, help="figure width in pixels")
    att = sub.add_parser("attention", help="each token's spatial attention overlaid on images (paper Fig. 3a)")
    att.add_argument("--checkpoint", required=True, help="a released or train.py checkpoint")
    att.add_argument("--images", nargs="+", required=True, help="image files to draw")
    att.add_argument("--imsize", type=int, default=512, help="longer side the images are resized to")
    att.add_argument("--out", required=True, help="PNG to write")
    att.add_argument("--width", type=int, default=1200, help="figure width in pixels")
    return parser.parse_args(argv)


@fail_cleanly
def main(argv=None):
    args = parse_args(argv)
    if args.figure == "curves":
        from utils.metrics import plot_training_curves

        out = plot_training_curves(require_path(args.metrics, "metrics.csv written by train.py"), args.out)
    elif args.figure == "retrievals":
        out = plot_retrievals(args.data_root, args.dataset, args.features, args.out, args.queries, args.topk,
                              args.width)
    else:
        from networks import load_token

        out = plot_attention(load_token(args.checkpoint), args.images, args.out, args.imsize, args.width)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
