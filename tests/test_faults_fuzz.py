"""Fuzzed inputs (``tests/faults.py`` indexes every fault): random and mutated image files raise only image read
errors, random and mutated ground-truth pickles only input errors."""

import pickle
import random

import numpy as np
import pytest
from PIL import Image

from datasets.images import ImageReadError, load_rgb
from datasets.revisitop import load_revisitop
from tests.faults import encoded
from utils.errors import InputError


def _mutations(rng, seeds, count):
    """``count`` byte strings: random bytes, and seeds with a few bytes changed and/or cut short."""
    for i in range(count):
        if i % 3 == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        yield bytes(data)


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_images_raise_only_image_read_errors(tmp_path):
    rng = random.Random(0)
    seeds = [encoded(Image.new(mode, (9, 7), 90), fmt) for fmt, mode in
             [("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"),
              ("PNG", "I;16"), ("TIFF", "F"), ("PNG", "RGBA")]]
    read = failed = 0
    for i, data in enumerate(_mutations(rng, seeds, 300)):
        path = tmp_path / f"fuzz_{i}.jpg"
        path.write_bytes(data)
        try:
            assert load_rgb(path).mode == "RGB"
            read += 1
        except ImageReadError as err:
            assert str(path) in str(err)
            failed += 1
    assert read > 10 and failed > 100  # both outcomes are exercised


def _random_object(rng, depth=0):
    makers = [lambda: None, lambda: rng.randrange(-5, 10), lambda: rng.random() * 10 - 2, lambda: "q",
              lambda: float("nan"), lambda: b"xx", lambda: np.float32(rng.random()),
              lambda: [_random_object(rng, depth + 1) for _ in range(rng.randrange(4))],
              lambda: {rng.choice(["bbx", "easy", "hard", "junk", "imlist", "qimlist", "gnd", "x"]):
                       _random_object(rng, depth + 1) for _ in range(rng.randrange(5))},
              lambda: np.array([rng.randrange(-2, 5) for _ in range(rng.randrange(3))]),
              lambda: (_random_object(rng, depth + 1), _random_object(rng, depth + 1)),
              lambda: set(range(rng.randrange(3)))]
    return makers[rng.randrange(len(makers) if depth < 3 else 7)]()


def test_fuzzed_ground_truth_raises_only_input_errors(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "test" / "fuzz"
    (folder / "jpg").mkdir(parents=True)
    good = {"imlist": ["a", "b", "c"], "qimlist": ["q0"],
            "gnd": [{"bbx": [0.0, 0.0, 5.0, 5.0], "easy": [0], "hard": [1], "junk": [2]}]}
    seeds = [pickle.dumps(good, protocol=p) for p in range(6)]
    loaded = refused = 0
    for i, data in enumerate(_mutations(rng, seeds, 300)):
        if i % 2:  # a well-formed pickle of a randomly malformed ground truth
            query = {key: _random_object(rng, 2) if rng.random() < 0.5 else value
                     for key, value in good["gnd"][0].items() if rng.random() < 0.9}
            data = pickle.dumps({**good, "gnd": [query]} if rng.random() < 0.7 else _random_object(rng),
                                protocol=rng.randrange(6))
        (folder / "gnd_fuzz.pkl").write_bytes(data)
        try:
            dataset = load_revisitop(tmp_path, "fuzz")
            assert len(dataset.gnd) == len(dataset.qimlist)
            loaded += 1
        except InputError as err:
            assert "gnd_fuzz.pkl" in str(err)
            refused += 1
    assert loaded > 0 and refused > 100
