"""Retrieval on your own images: index a folder or an image list with any model checkpoint, add to it, query it.

    python index.py build --images photos/ --checkpoint R101-Token.pth --index runs/photos
    python index.py add --images new_photos.txt --root /data/archive --index runs/photos
    python index.py query --index runs/photos query.jpg --box 10 20 200 180 --topk 5 --json out.json --figure out.png
    python index.py whiten --index runs/photos --out W.npz
    torchrun --nproc_per_node 4 index.py build --images list.txt --root /data --checkpoint CKPT --index /shared/idx

The index folder's layout and the work are ``retrieval.image_index``; this script is its command line.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
import argparse
import os

from retrieval.descriptor_whitening import check_directions, save_whitening
from retrieval.figures import plot_search_results
from retrieval.image_index import (
    EXACT_MAX_IMAGES,
    SKIPPED,
    ImageIndex,
    add,
    build,
    learn_whitening,
    query,
    read_meta,
)
from retrieval.settings import (
    INDEX_WHITENING,
    ExtractionSettings,
    add_extraction_arguments,
    add_whitening_arguments,
    extraction_fields,
)
from utils import checks
from utils.atomic import save_json
from utils.distributed import cleanup, init_distributed, resolve_device
from utils.errors import InputError, fail_cleanly
from utils.paths import writable_file


def _images(parser):
    parser.add_argument("--images", required=True, metavar="PATH",
                        help="a folder (searched recursively; files that are not readable images are skipped and "
                             "listed in the index's skipped.txt) or a text file of image paths, one a line")
    parser.add_argument("--root", metavar="DIR",
                        help="with a text file: the folder its relative paths start from (default: the file's own)")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Retrieval on your own images: build an index of a folder or an "
                                                 "image list with a model checkpoint, add images to it, query it, "
                                                 "learn a whitening from it.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    b = commands.add_parser("build", formatter_class=fmt, help="index the images of a folder or a list (replaces the "
                                                               "index; reuses or resumes its extraction)")
    _images(b)
    b.add_argument("--index", required=True, metavar="DIR", help="index folder to write")
    add_extraction_arguments(b, INDEX_WHITENING)
    kind = b.add_mutually_exclusive_group()
    kind.add_argument("--exact", dest="search", action="store_const", const="exact",
                      help="exact inner-product search whatever the size")
    kind.add_argument("--compressed", dest="search", action="store_const", const="compressed",
                      help="the compressed index of test.py --r1m whatever the size")
    b.set_defaults(search="auto")
    b.epilog = f"Without --exact or --compressed: exact search up to {EXACT_MAX_IMAGES:,} images, compressed beyond."

    a = commands.add_parser("add", formatter_class=fmt, help="append new images with the index's own checkpoint and "
                                                             "settings; indexed paths are skipped")
    _images(a)
    a.add_argument("--index", required=True, metavar="DIR", help="index folder written by build")
    add_extraction_arguments(a, None, model=False)

    q = commands.add_parser("query", formatter_class=fmt, help="print the top K of each query image")
    q.add_argument("--index", required=True, metavar="DIR", help="index folder written by build")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    q.add_argument("--box", type=float, nargs=4, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                   help="crop the query to this box first (pixels of the stored image); once for every image, or "
                        "once per image in order")
    q.add_argument("--topk", type=checks.int_in(1, 10000), default=10, metavar="K", help="results per query")
    q.add_argument("--json", metavar="FILE", help='also write [{"query", "results": [{"path", "score"}]}] here')
    q.add_argument("--figure", metavar="PNG", help="also draw a contact sheet: each query, then its results")
    add_whitening_arguments(q, INDEX_WHITENING, power=None, learned=False)
    q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the query descriptors "
                                                                                     "are computed")

    w = commands.add_parser("whiten", formatter_class=fmt, help="learn a PCA whitening from an index's descriptors")
    w.add_argument("--index", required=True, metavar="DIR", help="index folder written by build")
    w.add_argument("--out", required=True, metavar="W.npz", help="whitening file to write (for build, query and "
                                                                  "test.py --whiten-file)")
    w.add_argument("--dims", type=checks.int_in(1, 2**16), metavar="N",
                   help="keep the N leading directions (default: all there are)")
    return checks.check_flags(parser)


def _say_index(summary, index_dir):
    skipped = f", {summary['skipped']} skipped (not readable images: {index_dir}/{SKIPPED})" if summary["skipped"] \
        else ""
    print(f">> {index_dir}: {summary['count']} images indexed{skipped}; {summary['search']} search", flush=True)


def _speed(summary):
    if summary["extracted"]:
        print(f">> extracted {summary['extracted']} images in {summary['seconds']:.1f} s "
              f"({summary['extracted'] / summary['seconds']:.1f} images/s)", flush=True)


def _boxes(args):
    if args.box is None:
        return None
    if len(args.box) not in (1, len(args.images)):
        raise InputError(f"--box given {len(args.box)} times for {len(args.images)} images: give it once, or once "
                         "per image")
    boxes = args.box * len(args.images) if len(args.box) == 1 else args.box
    if any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in boxes):
        raise InputError("--box X0 Y0 X1 Y1 needs X0 < X1 and Y0 < Y1")
    return boxes


def _output(path, flag):
    """Check ``path``, a file this command writes, before any work (``writable_file``), and create its folder."""
    writable_file(path, flag).parent.mkdir(parents=True, exist_ok=True)


def run_query(args):
    for image in args.images:
        if not os.path.isfile(image):
            raise InputError(f"query image {image} not found")
    boxes = _boxes(args)
    for flag, path in (("--json", args.json), ("--figure", args.figure)):
        if path is not None:
            _output(path, flag)
    index = ImageIndex(args.index, resolve_device(args.device), args.whiten_file, args.whiten_power)
    results, ms = query(index, args.images, args.topk, boxes)
    for entry in results:
        print(f"query {entry['query']}")
        for rank, hit in enumerate(entry["results"], 1):
            print(f"{rank:4d}  {hit['score']:.4f}  {hit['path']}")
    print(f">> descriptor {ms['describe']:.0f} ms/query, search {ms['search']:.2f} ms/query over "
          f"{len(index.paths)} images ({index.meta['search']})")
    if args.json:
        save_json(args.json, results)
        print(f"wrote {args.json}")
    if args.figure:
        print(f"wrote {plot_search_results(results, args.figure, boxes)}")


def run_whiten(args):
    _output(args.out, "--out")
    if args.dims is not None:  # before any work: the index says how many directions its descriptors have
        meta = read_meta(args.index)
        check_directions("--dims", args.dims, meta["count"], meta["dim"])
    save_whitening(args.out, learn_whitening(args.index, args.dims))
    print(f"wrote {args.out}")


@fail_cleanly
def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.command == "query":
        return run_query(args)
    if args.command == "whiten":
        return run_whiten(args)
    env = init_distributed(args.device)
    try:
        if args.command == "build":
            settings = ExtractionSettings(**extraction_fields(args))
            summary = build(args.images, args.index, settings, env, args.root, args.search)
        else:
            summary = add(args.images, args.index, env, args.root, **extraction_fields(args))
        if env.is_main:
            if args.command == "add":
                print(f">> {summary['already']} already indexed or skipped before, {summary['added']} added",
                      flush=True)
            _speed(summary)
            _say_index(summary, args.index)
        return summary
    finally:
        cleanup()


if __name__ == "__main__":
    main()
