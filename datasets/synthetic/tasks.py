"""The generator's units of work: the photos of one landmark (or of a batch of backgrounds), written as JPEGs.

Each task draws only from its own random streams and writes its own files, so tasks can run in any order in
any process. Training photos go to the GLDv2 folder at ``datasets.gldv2.image_path``; test photos to the
revisitop images folder of the ``synthetic`` set. A task returns what its photos show (names or ids, and the
view parameters that decide their labels); ``world.py`` assembles the annotation files from these results.
In the cluttered ``scene`` every photo but the queries is a cluttered one (``views.Clutter``).
"""

import hashlib
from functools import lru_cache, partial

import numpy as np

from datasets.gldv2 import image_path
from datasets.revisitop import images_dir
from datasets.synthetic.landmarks import render_landmark
from datasets.synthetic.seeding import (
    CLUTTER_BASE,
    DISTRACTOR_BASE,
    STREAM_BACKGROUND,
    STREAM_CLUTTER,
    STREAM_DISTRACTOR,
    STREAM_PLAN,
    STREAM_TEST,
    STREAM_TRAIN,
    TEST_BASE,
    TRAIN_BASE,
)
from datasets.synthetic.views import Clutter, label_view, render_view

TEST_NAME = "synthetic"
JPEG_QUALITY = 90
SCENES = ("plain", "cluttered")  # the worlds: docs/demo.md, and docs/ablations.md for the cluttered one
SCENE_HELP = ("plain: every photo of a landmark shows it large and near the centre; cluttered: the queries are the "
              "same, every other photo shows its landmark at 0.5-0.75 times that size, anywhere in the middle 70%% of "
              "the frame, in front of two other landmarks and with more occluders, as docs/ablations.md decided before "
              "any result")  # the --scene / --world help (argparse: %% is a percent sign)
CLUTTER_POOL = 40  # clutter landmarks per cluttered world
TRAIN, TEST, DISTRACTOR_LANDMARK, BACKGROUNDS = "train", "test", "distractor_landmark", "backgrounds"

_made_dirs = set()  # folders this process has created, to skip a mkdir per image


def forget_made_dirs():
    """Forget the folders created so far (after they were deleted)."""
    _made_dirs.clear()


def _save(img, path):
    if path.parent not in _made_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path.parent)
    img.save(path, "JPEG", quality=JPEG_QUALITY)


def _hex_id(*parts, length=16):
    return hashlib.sha1("/".join(str(part) for part in parts).encode()).hexdigest()[:length]


@lru_cache(maxsize=4 * CLUTTER_POOL)
def clutter_landmark(seed, k):
    """The ``k``-th clutter landmark of the world ``seed``, rendered once per process."""
    return render_landmark(seed, CLUTTER_BASE + k)


def _clutter(scene, seed, *key):
    """How the view whose stream key is ``[seed, *key]`` draws the clutter of ``scene`` (``None``: plain)."""
    if scene == "plain":
        return None
    return Clutter(np.random.default_rng([seed, STREAM_CLUTTER, *key]), partial(clutter_landmark, seed), CLUTTER_POOL)


def train_photos(gldv2_root, seed, number, count, long_range, scene="plain"):
    """The ``count`` training photos of training landmark ``number``, in the GLDv2 folder ``gldv2_root``."""
    landmark = render_landmark(seed, TRAIN_BASE + number)
    ids = []
    for k in range(count):
        rng = np.random.default_rng([seed, STREAM_TRAIN, number, k])
        clutter = _clutter(scene, seed, STREAM_TRAIN, number, k)
        for _attempt in range(6):  # a training photo shows enough of its landmark to be learnable
            img, info = render_view(landmark, rng, "easy" if rng.random() < 0.45 else "hard", long_range, clutter)
            if label_view(info["d"], info["visible"]) != "junk":
                break
        image_id = _hex_id("synthetic", seed, "train", number, k)
        _save(img, gldv2_root / image_path(image_id))
        ids.append(image_id)
    return {"type": TRAIN, "number": number, "ids": ids, "fingerprint": landmark.fingerprint}


def test_photos(data_root, seed, number, num_queries, num_db, long_range, scene="plain"):
    """Queries and database views of test landmark ``number``; labels come from the view parameters. The queries
    are the same in every ``scene``."""
    landmark = render_landmark(seed, TEST_BASE + number)
    jpg = images_dir(data_root, TEST_NAME)
    queries = []
    for q in range(num_queries):
        rng = np.random.default_rng([seed, STREAM_TEST, number, 0, q])
        for _attempt in range(20):
            img, info = render_view(landmark, rng, "query", long_range)
            if info["visible"] >= 0.85 and info["bbx"] is not None:
                break
        if info["bbx"] is None:
            raise RuntimeError(f"test landmark {number}: query {q} shows none of it")
        name = f"query_{_hex_id('synthetic', seed, 'q', number, q, length=10)}"
        _save(img, jpg / f"{name}.jpg")
        queries.append({"name": name, **info})
    plan_rng = np.random.default_rng([seed, STREAM_PLAN, number])
    kinds = ["easy", "hard"] + [str(kind) for kind in plan_rng.choice(["easy", "hard", "junk"], num_db - 2,
                                                                      p=[0.35, 0.45, 0.2])]
    db = []
    k = 0
    while True:
        have = {view["label"] for view in db}
        if len(db) >= num_db and {"easy", "hard"} <= have:
            break
        if len(db) >= num_db:  # top up until both positives exist
            kind = "easy" if "easy" not in have else "hard"
        else:
            kind = kinds[k]
        rng = np.random.default_rng([seed, STREAM_TEST, number, 1, k])
        img, info = render_view(landmark, rng, kind, long_range, _clutter(scene, seed, STREAM_TEST, number, 1, k))
        name = _hex_id("synthetic", seed, "db", number, k, length=12)
        _save(img, jpg / f"{name}.jpg")
        db.append({"name": name, "target": kind, "label": label_view(info["d"], info["visible"]), **info})
        k += 1
        if k > num_db + 50:
            raise RuntimeError(f"test landmark {number}: no easy and hard views after {k} tries")
    return {"type": TEST, "number": number, "queries": queries, "db": db, "fingerprint": landmark.fingerprint}


def distractor_landmark_photos(data_root, seed, number, count, long_range, scene="plain"):
    """``count`` database views of the unseen distractor landmark ``number``, which no query shows."""
    landmark = render_landmark(seed, DISTRACTOR_BASE + number)
    jpg = images_dir(data_root, TEST_NAME)
    views = []
    for k in range(count):
        rng = np.random.default_rng([seed, STREAM_DISTRACTOR, number, k])
        img, info = render_view(landmark, rng, "easy" if rng.random() < 0.5 else "hard", long_range,
                                _clutter(scene, seed, STREAM_DISTRACTOR, number, k))
        name = _hex_id("synthetic", seed, "dl", number, k, length=12)
        _save(img, jpg / f"{name}.jpg")
        views.append({"name": name, **info})
    return {"type": DISTRACTOR_LANDMARK, "number": number, "views": views, "fingerprint": landmark.fingerprint}


def background_photos(data_root, seed, start, count, long_range, scene="plain"):
    """Database images ``start`` .. ``start + count - 1`` that show no landmark at all."""
    jpg = images_dir(data_root, TEST_NAME)
    views = []
    for k in range(start, start + count):
        rng = np.random.default_rng([seed, STREAM_BACKGROUND, k])
        img, _ = render_view(None, rng, "easy", long_range, _clutter(scene, seed, STREAM_BACKGROUND, k))
        name = _hex_id("synthetic", seed, "bg", k, length=12)
        _save(img, jpg / f"{name}.jpg")
        views.append({"name": name})
    return {"type": BACKGROUNDS, "start": start, "views": views}


_TASKS = {TRAIN: train_photos, TEST: test_photos, DISTRACTOR_LANDMARK: distractor_landmark_photos,
          BACKGROUNDS: background_photos}


def run_task(task):
    """Run ``(kind, arguments)``, a task of one of the kinds above; returns its result."""
    kind, arguments = task
    return _TASKS[kind](*arguments)


def task_size(task):
    """How many images ``task`` writes."""
    kind, arguments = task
    if kind == TEST:
        return arguments[3] + arguments[4]
    return arguments[3]


def result_size(result):
    """How many images the task of ``result`` wrote."""
    if result["type"] == TRAIN:
        return len(result["ids"])
    if result["type"] == TEST:
        return len(result["queries"]) + len(result["db"])
    return len(result["views"])
