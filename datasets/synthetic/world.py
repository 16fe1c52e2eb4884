"""The world on disk: plan the tasks, run them in parallel, write the annotation files and the marker.

``generate`` writes the authors' layout under the data root ``root``: the GLDv2-clean training set in
``root/Google-landmark-v2`` and the revisitop test set ``synthetic`` in ``root/test/synthetic``, plus
``synthetic_meta.json`` (each test image's landmark, difficulty and visible fraction, each landmark's
fingerprint) and, last, the completion marker ``SYNTHETIC_COMPLETE.json`` that holds the parameters.
``ensure_generated`` returns at once when the marker matches and regenerates otherwise; a file lock makes
concurrent callers (DDP ranks) generate once. Regenerating deletes only the generator's own outputs (and the
GLDv2 split caches, which describe the old training set), nothing else in ``root``. Every CSV, pickle and JSON
is written through ``utils.atomic.atomic_write``.
"""

import contextlib
import csv
import io
import json
import multiprocessing
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.gldv2 import GLDV2_DIR, IMAGES_DIR, SPLIT_CACHE_FILES, TRAIN_CLEAN_CSV, TRAIN_CSV, image_path
from datasets.revisitop import TEST_DIR, dataset_dir, gnd_path
from datasets.synthetic.seeding import DISTRACTOR_BASE, STREAM_IDS, STREAM_PLAN, TEST_BASE, TRAIN_BASE
from datasets.synthetic.tasks import (
    BACKGROUNDS,
    DISTRACTOR_LANDMARK,
    SCENES,
    TEST,
    TEST_NAME,
    TRAIN,
    forget_made_dirs,
    result_size,
    run_task,
    task_size,
)
from utils.atomic import atomic_write

VERSION = 2  # bump when the generated content or layout changes, so that old folders are regenerated
MARKER = "SYNTHETIC_COMPLETE.json"
META = "synthetic_meta.json"
LOCK = ".synthetic.lock"
BACKGROUNDS_PER_TASK = 25
VIEWS_PER_DISTRACTOR_LANDMARK = 3

# What the generator writes under the data root (besides the marker), deleted before it writes a new world.
_OUTPUTS = (META, os.path.join(TEST_DIR, TEST_NAME), *(os.path.join(GLDV2_DIR, name) for name in
            (IMAGES_DIR, TRAIN_CLEAN_CSV, TRAIN_CSV, *SPLIT_CACHE_FILES)))
# What version 1, which wrote the GLDv2 files at the top of the root, wrote there: deleted only when the marker
# says that version wrote the world.
_VERSION_1_OUTPUTS = (IMAGES_DIR, TRAIN_CLEAN_CSV, TRAIN_CSV, *SPLIT_CACHE_FILES)


@dataclass(frozen=True)
class SyntheticWorld:
    """Where a generated world lies: ``root`` is a data root in the authors' layout, its GLDv2 folder
    ``gldv2_root`` the training set, ``test_root``/``test_name`` the revisitop test set."""

    root: Path
    params: dict
    counts: dict
    generated: bool  # True when this call wrote it, False when an existing complete world was reused

    @property
    def gldv2_root(self):
        return self.root / GLDV2_DIR

    @property
    def train_clean_csv(self):
        return self.gldv2_root / TRAIN_CLEAN_CSV

    @property
    def train_csv(self):
        return self.gldv2_root / TRAIN_CSV

    @property
    def train_dir(self):
        return self.gldv2_root / IMAGES_DIR

    @property
    def test_root(self):
        return self.root / TEST_DIR

    @property
    def test_name(self):
        return TEST_NAME

    @property
    def gnd_path(self):
        return gnd_path(self.root, TEST_NAME)

    def train_image_paths(self):
        """The training images, in image id order."""
        with open(self.train_csv, newline="") as f:
            ids = sorted(row[0] for row in list(csv.reader(f))[1:] if row)
        return [self.gldv2_root / image_path(image_id) for image_id in ids]


def _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
            db_views_per_landmark, num_distractors, image_size, scene):
    def pair(name, value, lowest):
        value = (int(value), int(value)) if isinstance(value, int | np.integer) else tuple(int(x) for x in value)
        if len(value) != 2 or value[0] < lowest or value[1] < value[0]:
            raise ValueError(f"{name} must be an int >= {lowest} or a (min, max) pair with {lowest} <= min <= max, "
                             f"got {value}")
        return value

    if int(num_train_landmarks) < 1 or int(num_test_landmarks) < 1 or int(num_distractors) < 0:
        raise ValueError("need at least one training landmark, one test landmark and no negative distractors")
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    params = {
        "version": VERSION,
        "seed": int(seed),
        "num_train_landmarks": int(num_train_landmarks),
        "images_per_landmark": list(pair("images_per_landmark", images_per_landmark, 2)),
        "num_test_landmarks": int(num_test_landmarks),
        "queries_per_landmark": list(pair("queries_per_landmark", queries_per_landmark, 1)),
        "db_views_per_landmark": list(pair("db_views_per_landmark", db_views_per_landmark, 2)),
        "num_distractors": int(num_distractors),
        "image_size": list(pair("image_size", image_size, 96)),
    }
    # Only a scene other than the plain one is a parameter: the markers of the plain worlds written before scenes
    # existed (which have no "scene") still match, and their worlds, unchanged, are reused.
    if scene != "plain":
        params["scene"] = scene
    return params


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _clean(root):
    """Delete the generator's outputs under ``root`` (an old version's too, when its marker says so)."""
    forget_made_dirs()
    marker = _read_marker(root)
    old_outputs = _VERSION_1_OUTPUTS if marker is not None and marker.get("params", {}).get("version") == 1 else ()
    (root / MARKER).unlink(missing_ok=True)
    for relative in (*_OUTPUTS, *old_outputs):
        _remove(root / relative)


def _read_marker(root):
    try:
        with open(Path(root) / MARKER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_csv(path, rows):
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def _write_json(path, data, **options):
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, **options).encode()))


def generate(root, seed=0, num_train_landmarks=200, images_per_landmark=(10, 20), num_test_landmarks=20,
             queries_per_landmark=(1, 2), db_views_per_landmark=(8, 12), num_distractors=150,
             image_size=(128, 160), scene="plain", workers=None, progress=True):
    """Write a synthetic landmark world under the data root ``root`` (replacing any earlier one) and return it.

    ``images_per_landmark``, ``queries_per_landmark``, ``db_views_per_landmark``: an int or a (min, max) pair,
    drawn per landmark. ``num_distractors``: database images that no query shows, about 40% background-only
    scenes and 60% views (3 each) of unseen landmarks. ``image_size``: range of the longer side in pixels (the
    shorter is at least max(96, 0.75 x min)). ``scene``: "plain", or "cluttered" (docs/ablations.md: every
    photo but the queries shows its landmark smaller, off-centre, among two other landmarks and more occluders).
    ``workers``: processes (default: up to 2; 0 or 1: in-process).
    """
    params = _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
                     db_views_per_landmark, num_distractors, image_size, scene)
    with _lock(root):
        return _generate(Path(root), params, workers, progress)


def ensure_generated(root, seed=0, num_train_landmarks=200, images_per_landmark=(10, 20), num_test_landmarks=20,
                     queries_per_landmark=(1, 2), db_views_per_landmark=(8, 12), num_distractors=150,
                     image_size=(128, 160), scene="plain", workers=None, progress=True):
    """The world under ``root`` for these parameters: reused if its completion marker matches, else generated."""
    params = _params(seed, num_train_landmarks, images_per_landmark, num_test_landmarks, queries_per_landmark,
                     db_views_per_landmark, num_distractors, image_size, scene)
    root = Path(root)
    with _lock(root):
        marker = _read_marker(root)
        world = SyntheticWorld(root=root, params=params, counts={}, generated=False)
        intact = world.train_clean_csv.is_file() and world.gnd_path.is_file()
        if marker is not None and marker.get("params") == params and intact:
            return SyntheticWorld(root=root, params=params, counts=marker.get("counts", {}), generated=False)
        return _generate(root, params, workers, progress)


@contextlib.contextmanager
def _lock(root):
    """Hold an exclusive lock on ``root`` (POSIX), so that concurrent callers (DDP ranks) generate once."""
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(Path(root) / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _plan(root, params):
    """``(tasks, landmark ids)``: every task of the world and the random landmark ids of each group."""
    seed = params["seed"]
    long_range = tuple(params["image_size"])
    scene = params.get("scene", "plain")
    n_train, n_test, n_distractors = (params["num_train_landmarks"], params["num_test_landmarks"],
                                      params["num_distractors"])
    n_distractor_views = int(round(n_distractors * 0.6))
    n_distractor_landmarks = (n_distractor_views + VIEWS_PER_DISTRACTOR_LANDMARK - 1) // VIEWS_PER_DISTRACTOR_LANDMARK
    n_backgrounds = n_distractors - n_distractor_views

    plan = np.random.default_rng([seed, STREAM_PLAN])
    images_per_landmark = plan.integers(params["images_per_landmark"][0], params["images_per_landmark"][1] + 1,
                                        n_train)
    queries_per_landmark = plan.integers(params["queries_per_landmark"][0], params["queries_per_landmark"][1] + 1,
                                         n_test)
    db_per_landmark = plan.integers(params["db_views_per_landmark"][0], params["db_views_per_landmark"][1] + 1,
                                    n_test)
    n_landmarks = n_train + n_test + n_distractor_landmarks
    landmark_ids = np.random.default_rng([seed, STREAM_IDS]).choice(max(200_000, 10 * n_landmarks), n_landmarks,
                                                                    replace=False)
    ids = {TRAIN: landmark_ids[:n_train], TEST: landmark_ids[n_train:n_train + n_test],
           DISTRACTOR_LANDMARK: landmark_ids[n_train + n_test:]}

    gldv2_root = root / GLDV2_DIR
    tasks = [(TEST, (root, seed, number, int(queries_per_landmark[number]), int(db_per_landmark[number]),
                     long_range, scene)) for number in range(n_test)]
    tasks += [(DISTRACTOR_LANDMARK, (root, seed, number, min(VIEWS_PER_DISTRACTOR_LANDMARK, n_distractor_views
                                                              - VIEWS_PER_DISTRACTOR_LANDMARK * number), long_range,
                                     scene))
              for number in range(n_distractor_landmarks)]
    tasks += [(BACKGROUNDS, (root, seed, start, min(BACKGROUNDS_PER_TASK, n_backgrounds - start), long_range, scene))
              for start in range(0, n_backgrounds, BACKGROUNDS_PER_TASK)]
    tasks += [(TRAIN, (gldv2_root, seed, number, int(images_per_landmark[number]), long_range, scene))
              for number in range(n_train)]
    return tasks, ids


def _run_all(tasks, workers, progress):
    """The results of ``tasks``, run in ``workers`` forked processes (in this one when 0 or 1), by kind."""
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    bar = _progress(sum(task_size(task) for task in tasks), progress)
    results = []
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for result in pool.imap_unordered(run_task, tasks):
                    results.append(result)
                    bar.update(result_size(result))
        else:
            for task in tasks:
                result = run_task(task)
                results.append(result)
                bar.update(result_size(result))
    finally:
        bar.close()
    by_kind = {kind: [] for kind in (TRAIN, TEST, DISTRACTOR_LANDMARK, BACKGROUNDS)}
    for result in results:
        by_kind[result["type"]].append(result)
    for kind, order in ((TRAIN, "number"), (TEST, "number"), (DISTRACTOR_LANDMARK, "number"), (BACKGROUNDS, "start")):
        by_kind[kind].sort(key=lambda result, order=order: result[order])
    return by_kind


def _generate(root, params, workers, progress):
    _clean(root)
    seed = params["seed"]
    tasks, ids = _plan(root, params)
    results = _run_all(tasks, workers, progress)
    train, test = results[TRAIN], results[TEST]
    train_ids, test_ids, distractor_ids = ids[TRAIN], ids[TEST], ids[DISTRACTOR_LANDMARK]

    # GLDv2-clean training set.
    gldv2_root = root / GLDV2_DIR
    all_ids = [i for result in train for i in result["ids"]]
    if len(set(all_ids)) != len(all_ids):
        raise RuntimeError("image id collision")
    _write_csv(gldv2_root / TRAIN_CLEAN_CSV, [["landmark_id", "images"]] + [
        [int(train_ids[number]), " ".join(train[number]["ids"])] for number in np.argsort(train_ids, kind="stable")])
    rows = sorted((i, int(train_ids[result["number"]])) for result in train for i in result["ids"])
    _write_csv(gldv2_root / TRAIN_CSV, [["id", "url", "landmark_id"]] + [
        [image_id, f"synthetic://{seed}/{landmark_id}/{image_id}", landmark_id] for image_id, landmark_id in rows])

    # Revisitop test set: database in a fixed shuffled order, queries by landmark.
    db_items = []  # (name, landmark key, label or None, view info)
    for result in test:
        db_items += [(view["name"], (TEST, result["number"]), view["label"], view) for view in result["db"]]
    for result in results[DISTRACTOR_LANDMARK]:
        db_items += [(view["name"], ("distractor", result["number"]), None, view) for view in result["views"]]
    for result in results[BACKGROUNDS]:
        db_items += [(view["name"], ("background", None), None, view) for view in result["views"]]
    db_items.sort(key=lambda item: item[0])
    permutation = np.random.default_rng([seed, STREAM_PLAN, 1]).permutation(len(db_items))
    db_items = [db_items[i] for i in permutation]
    imlist = [item[0] for item in db_items]
    if len(set(imlist)) != len(imlist):
        raise RuntimeError("database name collision")
    qimlist, gnd, query_meta = [], [], []
    for result in test:
        positions = {label: [] for label in ("easy", "hard", "junk")}
        for position, (_name, key, label, _view) in enumerate(db_items):
            if key == (TEST, result["number"]):
                positions[label].append(position)
        for query in result["queries"]:
            qimlist.append(query["name"])
            gnd.append({"bbx": [float(v) for v in query["bbx"]], "easy": positions["easy"],
                        "hard": positions["hard"], "junk": positions["junk"]})
            query_meta.append({"name": query["name"], "landmark_id": int(test_ids[result["number"]]),
                               "d": query["d"], "visible": query["visible"]})
    dataset_dir(root, TEST_NAME).mkdir(parents=True, exist_ok=True)
    ground_truth = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}
    atomic_write(gnd_path(root, TEST_NAME), lambda f: pickle.dump(ground_truth, f, protocol=4))

    def landmark_id_of(key):
        if key[0] == TEST:
            return int(test_ids[key[1]])
        if key[0] == "distractor":
            return int(distractor_ids[key[1]])
        return None

    def landmarks(group, base, group_ids):
        return [{"landmark_id": int(group_ids[result["number"]]), "index": base + result["number"],
                 "fingerprint": result["fingerprint"]} for result in group]

    meta = {
        "params": params,
        "train_landmarks": [{**entry, "images": len(result["ids"])}
                            for entry, result in zip(landmarks(train, TRAIN_BASE, train_ids), train, strict=True)],
        "test_landmarks": landmarks(test, TEST_BASE, test_ids),
        "distractor_landmarks": landmarks(results[DISTRACTOR_LANDMARK], DISTRACTOR_BASE, distractor_ids),
        "queries": query_meta,
        "database": [{"name": name, "role": key[0], "landmark_id": landmark_id_of(key), "label": label,
                      "d": view.get("d"), "visible": view.get("visible"), "target": view.get("target")}
                     for name, key, label, view in db_items],
    }
    _write_json(root / META, meta)

    labels = [item[2] for item in db_items if item[2] is not None]
    counts = {
        "train_images": len(all_ids),
        "train_landmarks": len(train),
        "test_landmarks": len(test),
        "queries": len(qimlist),
        "database": len(imlist),
        "easy": labels.count("easy"),
        "hard": labels.count("hard"),
        "junk": labels.count("junk"),
        "distractors": len(imlist) - len(labels),
    }
    _write_json(root / MARKER, {"params": params, "counts": counts}, sort_keys=True)  # last: the world is complete
    return SyntheticWorld(root=root, params=params, counts=counts, generated=True)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="synthetic world", unit="img")
