"""Figures for any checkpoint and data set: training curves, top-k retrievals, token attention maps.

    python visualize.py curves     --metrics RUN/metrics.csv --out curves.png
    python visualize.py retrievals --data-root DATA --dataset roxford5k --features RUN/features --out top.png
    python visualize.py attention  --checkpoint CKPT --images a.jpg b.jpg --out attention.png

``retrievals`` reads the descriptors test.py wrote (``<dataset>_db.npy``, ``<dataset>_query.npy``) and draws,
per query, the query with its box and the top-k database images framed green (easy or hard positive), red
(negative) or grey (junk), as in the paper's qualitative figure. ``attention`` overlays each token's spatial
attention (paper, Fig. 3a): the tokenizer's assignment and the last refinement block's cross-attention; for an
aggregator over local features (train.py --model aggregator), each feature's weight at the place of its centre.
Figure sizes are fixed by ``--width`` (pixels) so every PNG has a known size. The plotting lives in
``retrieval.figures`` and ``utils.training_log``.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse

from retrieval.figures import plot_attention, plot_retrievals
from utils import checks
from utils.errors import fail_cleanly, require_path
from utils.paths import writable_file
from utils.training_log import plot_training_curves
from weights import load_model

WIDTH = checks.int_in(100, 10000)  # pixels of the figure


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
    ret.add_argument("--queries", type=checks.int_in(0, 10**6), nargs="+", default=None,
                     help="query indices to show, from 0 (default: the first four)")
    ret.add_argument("--topk", type=checks.int_in(1, 100), default=8, help="retrieved images shown per query")
    ret.add_argument("--out", required=True, help="PNG to write")
    ret.add_argument("--width", type=WIDTH, default=1200, help="figure width in pixels")
    att = sub.add_parser("attention", help="each token's spatial attention overlaid on images (paper Fig. 3a)")
    att.add_argument("--checkpoint", required=True,
                     help="a released or train.py checkpoint of a Token or of an aggregator over local features")
    att.add_argument("--images", nargs="+", required=True, help="image files to draw")
    att.add_argument("--imsize", type=checks.IMSIZE, default=512, help="longer side the images are resized to")
    att.add_argument("--out", required=True, help="PNG to write")
    att.add_argument("--width", type=WIDTH, default=1200, help="figure width in pixels")
    return checks.check_flags(parser).parse_args(argv)


def check_args(args):
    """The output file, before any work (the numeric flags are checked as they are parsed)."""
    writable_file(args.out, "--out")


@fail_cleanly
def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    if args.figure == "curves":
        out = plot_training_curves(require_path(args.metrics, "metrics.csv written by train.py"), args.out)
    elif args.figure == "retrievals":
        out = plot_retrievals(args.data_root, args.dataset, args.features, args.out, args.queries, args.topk,
                              args.width)
    else:
        out = plot_attention(load_model(args.checkpoint), args.images, args.out, args.imsize, args.width)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
