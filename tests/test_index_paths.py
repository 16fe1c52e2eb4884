"""The paths of an image collection (``datasets.collection.list_images``) and of an index: folders with link
loops, image lists with ``--root``, file names that no line-based file can hold."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.eval_sets import random_image

ROOT = Path(__file__).resolve().parents[1]


def write_jpegs(folder, names, seed=0):
    """A small JPEG at ``folder / name`` for each name; their paths as strings."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(rng, 48, 40).save(path, quality=90)
        paths.append(str(path))
    return paths


def test_a_folder_with_link_loops_lists_each_image_once(tmp_path):
    photos = tmp_path / "photos"
    images = write_jpegs(photos, ["a.jpg", "sub/b.jpg", "sub/deeper/c.jpg"])
    (photos / "self").symlink_to(".")
    (photos / "sub" / "up").symlink_to("..")
    (photos / "sub" / "deeper" / "top").symlink_to("../..")
    # in a child process with a time limit: before the fix the walk was exponential and never ended
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; from datasets.collection import list_images; "
         "print('\\n'.join(list_images(sys.argv[1])))", str(photos)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert listed == sorted(images)
