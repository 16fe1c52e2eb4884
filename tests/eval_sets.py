"""test.py's inputs for the tests of test.py, index.py, the benchmarks and the report: a generated
roxford5k-format set (and R1M-format distractors), a small resnet18 Token checkpoint, and test.py run in-process."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from networks import Token
from tests.conftest import ROOT
from weights import model_state

# test.py by path: importing it by its module name could find the standard library's test package
_spec = importlib.util.spec_from_file_location("token_test_script", ROOT / "test.py")
test_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_py)
DIM = 32
# (width, height) of the database images: repeated sizes batch together, odd ones fall back to smaller batches
DB_SIZES = [(96, 72), (72, 96), (96, 72), (80, 80), (96, 64), (50, 90), (96, 72), (72, 96)] * 3 + [(33, 47), (120, 40)]
# query boxes as the official pickles hold them (floats); the last query's crop has the first one's size
QUERIES = [((96, 72), (10.0, 8.0, 70.5, 60.2)), ((72, 96), (0.0, 0.0, 72.0, 96.0)), ((80, 80), (20, 5, 60, 75)),
           ((96, 72), (10.0, 8.0, 70.5, 60.2))]
R1M_IMAGES = 11
TEST_ARGS = ["--imsize", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


def random_image(rng, width, height):
    """Smooth random colours with a few rectangles: enough structure for distinct descriptors."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.array(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        arr[y0:y0 + height // 3, x0:x0 + width // 3] = rng.integers(0, 256, size=3)
    return Image.fromarray(arr)


def write_mini_set(data_root, name="roxford5k", seed=0):
    """A revisitop-format set: database and query JPEGs of several sizes and ``gnd_<name>.pkl`` as the official
    pickles hold it (lists of ints, ``bbx`` as a list of floats)."""
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "test" / name
    (folder / "jpg").mkdir(parents=True, exist_ok=True)  # an existing set is rewritten in place
    imlist = [f"db_{i:03d}" for i in range(len(DB_SIZES))]
    qimlist = [f"query_{q}" for q in range(len(QUERIES))]
    for image, size in zip(imlist, DB_SIZES, strict=True):
        random_image(rng, *size).save(folder / "jpg" / f"{image}.jpg", quality=90)
    for image, (size, _) in zip(qimlist, QUERIES, strict=True):
        random_image(rng, *size).save(folder / "jpg" / f"{image}.jpg", quality=90)
    gnd = [{"bbx": list(map(float, box)), "easy": [3 * q, 3 * q + 1], "hard": [3 * q + 2, 20 + q], "junk": [10 + q]}
           for q, (_, box) in enumerate(QUERIES)]
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return folder


def write_r1m(data_root, count=R1M_IMAGES, seed=1):
    """R1M-format distractors: ``revisitop1m.txt`` listing images in sub-folders of ``jpg/``."""
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "test" / "revisitop1m"
    entries = [f"{i % 3}/distractor_{i:04d}.jpg" for i in range(count)]
    for entry in entries:
        (folder / "jpg" / entry).parent.mkdir(parents=True, exist_ok=True)
        random_image(rng, *DB_SIZES[int(rng.integers(len(DB_SIZES)))]).save(folder / "jpg" / entry, quality=90)
    (folder / "revisitop1m.txt").write_text("\n".join(entries) + "\n")
    return folder


def small_token():
    torch.manual_seed(0)
    return Token(backbone="resnet18", dim=64, out_dim=DIM, heads=4, pretrained=False).eval()


def write_checkpoint(path):
    model = small_token()
    torch.save(model_state(model), path)
    return path


def run_test(data_root, checkpoint, output_dir, *extra):
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(data_root), "--datasets", "roxford5k",
            *TEST_ARGS, *extra]
    if output_dir is not None:
        argv += ["--output-dir", str(output_dir)]
    return test_py.main(argv)
