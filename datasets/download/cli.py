"""``python -m datasets.download {revisitop,gldv2,models}``: the flags, read top to bottom."""

import argparse
import urllib.parse
from pathlib import Path

from datasets.download import gldv2, models, revisitop
from datasets.revisitop import R1M
from utils import checks
from utils.errors import InputError, fail_cleanly
from weights.zoo import MODELS_DIR, RELEASED, release

DESCRIPTION = ("Fetch the data and the released models: ROxf/RPar (+R1M) and GLDv2 into the data root, released "
               "checkpoints by name. Interrupted downloads resume; finished steps are skipped on a rerun.")
DATA_ROOT_HELP = ("the data root shared with train.py and test.py: GLDv2 in DATA_ROOT/Google-landmark-v2/, the "
                  "test sets in DATA_ROOT/test/<name>/ (created if missing)")


def _folder(path, flag):
    """``path`` as a folder to write into: an existing file there is an ``InputError`` naming ``flag``."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file: expected a folder (created if missing)")
    return path


def _check_urls(args):
    """Every ``--*-url`` flag must be an http(s) address: an ``InputError`` naming the first that is not."""
    for name, value in vars(args).items():
        parsed = urllib.parse.urlsplit(value) if name.endswith("url") else None
        if parsed and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise InputError(f"--{name.replace('_', '-')} {value!r} is not a URL: expected http://host/path or "
                             "https://host/path")


def _revisitop_parser(commands):
    parser = commands.add_parser(
        "revisitop", help="revisited Oxford and Paris images and ground truth, optionally the R1M distractors",
        description="Download ROxf/RPar (and with --r1m the 1M distractors) into DATA_ROOT/test/<name>/. "
                    "Interrupted downloads resume; finished steps are skipped on a rerun.")
    parser.add_argument("--data-root", required=True, type=Path, help=DATA_ROOT_HELP)
    names = sorted(revisitop.ARCHIVES)
    parser.add_argument("--datasets", nargs="*", choices=names, default=names,
                        help="which test sets to fetch (default: both; give none with --r1m for R1M only)")
    parser.add_argument("--r1m", action="store_true",
                        help=f"also fetch the 1,001,001 R1M distractors ({revisitop.R1M_PARTS} large archives)")
    parser.add_argument("--oxford-url", default=revisitop.OXFORD_URL,
                        help=f"folder URL of {revisitop.ARCHIVES['roxford5k'][0]}")
    parser.add_argument("--paris-url", default=revisitop.PARIS_URL,
                        help=f"folder URL of {' and '.join(revisitop.ARCHIVES['rparis6k'])}")
    parser.add_argument("--gnd-url", default=revisitop.GND_URL, help="base URL of <name>/gnd_<name>.pkl")
    parser.add_argument("--r1m-url", default=revisitop.R1M_URL, help=f"base URL of {R1M}.txt and jpg/{R1M}.<i>.tar.gz")


def _gldv2_parser(commands):
    parser = commands.add_parser(
        "gldv2", help="the GLDv2 train set (CSVs and the 500 image parts) from the CVDF mirror",
        description="Download train.csv, train_clean.csv and the image parts into DATA_ROOT/Google-landmark-v2/, "
                    "several parts at a time, each md5-checked, extracted and deleted. A rerun skips the parts "
                    "done and resumes the others.")
    parser.add_argument("--data-root", required=True, type=Path, help=DATA_ROOT_HELP)
    parser.add_argument("--parts", default=f"0-{gldv2.PARTS - 1}",
                        help=f"which of the {gldv2.PARTS} parts images_NNN.tar (about 1 GB each) to fetch, as ranges "
                             "and lists: 0-1, 3,7,10-12 (default: all)")
    parser.add_argument("--jobs", type=checks.int_in(1, 64), default=4,
                        help="parts downloaded at the same time, 1 to 64 (default: 4)")
    parser.add_argument("--base-url", default=gldv2.GLDV2_URL,
                        help="base URL of metadata/<csv>, train/images_NNN.tar and md5sum/train/md5.images_NNN.txt")


def _models_parser(commands):
    parser = commands.add_parser(
        "models", help="released checkpoints by name, from Google Drive",
        description="Download released checkpoints into DEST by name (none: all), resuming partial files; each "
                    "file's SHA-256 is recorded beside it at the first download and checked on every rerun.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"released models: {', '.join(RELEASED)} (default: all)")
    parser.add_argument("--dest", default=MODELS_DIR, type=Path,
                        help="folder for the files (created if missing); where test.py and load_model look up names")
    parser.add_argument("--base-url", default=models.DRIVE_URL,
                        help="base URL of the Drive endpoint <base-url>/uc?id=<id> (default: Google Drive)")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m datasets.download", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    _revisitop_parser(commands)
    _gldv2_parser(commands)
    _models_parser(commands)
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    args = _parser().parse_args(argv)
    _check_urls(args)
    if args.command == "revisitop":
        data_root = _folder(args.data_root, "--data-root")
        images_url = {"roxford5k": args.oxford_url, "rparis6k": args.paris_url}
        for name in args.datasets:
            revisitop.download_revisitop(data_root, name, images_url[name], args.gnd_url)
        if args.r1m:
            revisitop.download_r1m(data_root, args.r1m_url)
    elif args.command == "gldv2":
        parts = gldv2.parse_parts(args.parts)
        gldv2.download_gldv2(_folder(args.data_root, "--data-root"), parts, args.jobs, args.base_url)
    else:
        releases = [release(name) for name in args.names] or list(RELEASED.values())
        models.download_models(releases, _folder(args.dest, "--dest"), args.base_url)
