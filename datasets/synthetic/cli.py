"""The command line of the generator: ``python -m datasets.synthetic --root DIR`` (``--help`` lists every flag).

It keeps an existing complete world with the same parameters unless ``--force``, and prints where the world
lies, whether it was generated or kept, its size on disk and its counts of images.
"""

import argparse
import time
from pathlib import Path

from datasets.gldv2 import GLDV2_DIR
from datasets.synthetic.tasks import SCENE_HELP, SCENES, TEST_NAME
from datasets.synthetic.world import ensure_generated, generate
from utils import checks
from utils.errors import fail_cleanly
from utils.paths import writable_folder


def _range(lowest, highest):
    """An argparse ``type``: N or MIN-MAX with ``lowest <= MIN <= MAX <= highest``, as a (MIN, MAX) pair."""
    def range_arg(text):
        parts = text.split("-") if "-" in text else [text, text]
        try:
            low, high = (int(part) for part in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
        if not lowest <= low <= high <= highest:
            raise argparse.ArgumentTypeError(f"expected N or MIN-MAX from {lowest} to {highest}, got {text!r}")
        return (low, high)

    return range_arg


def _dir_size(root):
    return sum(path.stat().st_size for path in Path(root).rglob("*") if path.is_file())


def get_args_parser():
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description=f"Generate a synthetic landmark world in the authors' data layout: a GLDv2-clean-format "
                    f"training set (ROOT/{GLDV2_DIR}/: train_clean.csv, train.csv, train/<a>/<b>/<c>/<id>.jpg) "
                    f"and a revisitop-format test set of unseen landmarks (ROOT/test/{TEST_NAME}/jpg, "
                    f"ROOT/test/{TEST_NAME}/gnd_{TEST_NAME}.pkl), so that ROOT is the --data-root of train.py and "
                    "test.py. Ranges are N or MIN-MAX, drawn per landmark. An existing complete world with the "
                    "same parameters is kept unless --force.")
    parser.add_argument("--root", required=True, metavar="DIR",
                        help=f"the data root to write: the training set goes to DIR/{GLDV2_DIR}, the test set to "
                             f"DIR/test/{TEST_NAME}; nothing else in DIR is touched")
    parser.add_argument("--seed", type=checks.SEED, metavar="S", default=0,
                        help="world seed: the same seed and flags give the same bytes with the same Pillow "
                             "(default 0)")
    parser.add_argument("--train-landmarks", type=checks.int_in(1, 10**5), metavar="N", default=200,
                        help="number of training landmarks (default 200)")
    parser.add_argument("--images-per-landmark", type=_range(2, 1000), metavar="N|MIN-MAX", default=(10, 20),
                        help="training photos per landmark, N or MIN-MAX (default 10-20)")
    parser.add_argument("--test-landmarks", type=checks.int_in(1, 10**4), metavar="N", default=20,
                        help="number of unseen test landmarks that have queries (default 20)")
    parser.add_argument("--queries-per-landmark", type=_range(1, 100), metavar="N|MIN-MAX", default=(1, 2),
                        help="queries per test landmark, N or MIN-MAX (default 1-2)")
    parser.add_argument("--db-views-per-landmark", type=_range(2, 1000), metavar="N|MIN-MAX", default=(8, 12),
                        help="database views per test landmark, labelled easy/hard/junk, N or MIN-MAX (default "
                             "8-12; more are added if a landmark lacks an easy or a hard one)")
    parser.add_argument("--distractors", type=checks.int_in(0, 10**6), metavar="N", default=150,
                        help="database images no query shows: ~40%% background-only, ~60%% views of other unseen "
                             "landmarks (default 150)")
    parser.add_argument("--image-size", type=_range(96, 4096), metavar="N|MIN-MAX", default=(128, 160),
                        help="longer side of every image in pixels, N or MIN-MAX (default 128-160; shorter side "
                             ">= 96)")
    parser.add_argument("--scene", choices=SCENES, default="plain", help=f"{SCENE_HELP} (default plain)")
    parser.add_argument("--workers", type=checks.WORKERS, metavar="N", default=None,
                        help="generator processes (default: min(2, CPU count); 0 or 1: no subprocesses)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a complete matching world exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return checks.check_flags(parser)


@fail_cleanly
def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    writable_folder(args.root, "--root")
    options = dict(seed=args.seed, num_train_landmarks=args.train_landmarks,
                   images_per_landmark=args.images_per_landmark, num_test_landmarks=args.test_landmarks,
                   queries_per_landmark=args.queries_per_landmark, db_views_per_landmark=args.db_views_per_landmark,
                   num_distractors=args.distractors, image_size=args.image_size, scene=args.scene,
                   workers=args.workers,
                   progress=not args.quiet)
    start = time.time()
    try:
        world = generate(args.root, **options) if args.force else ensure_generated(args.root, **options)
    except ValueError as err:
        parser.error(str(err))
    counts = world.counts
    state = "generated" if world.generated else "already complete, kept"
    print(f"{world.root}: {state} in {time.time() - start:.1f} s, {_dir_size(world.root) / 2**20:.1f} MiB; "
          f"train ({world.gldv2_root}): {counts.get('train_images')} images of {counts.get('train_landmarks')} "
          f"landmarks; test '{TEST_NAME}': {counts.get('queries')} queries, {counts.get('database')} database "
          f"images (easy {counts.get('easy')}, hard {counts.get('hard')}, junk {counts.get('junk')}, distractors "
          f"{counts.get('distractors')}){'' if args.scene == 'plain' else f'; scene {args.scene}'}")
    return 0
