"""Multi-scale extraction against the reference per-image loop, size bucketing, and feature files on disk."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datasets.revisitop import RevisitopImages, load_revisitop
from retrieval import features as features_module
from retrieval.extract import SCALES, equal_size_batches, extract, multiscale_descriptor, prepare_model, rescale
from retrieval.features import FeatureStore, feature_key, save_array
from tests.test_test import DIM, small_token, write_mini_set
from utils.atomic import read_json
from utils.distributed import DistEnv

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def reference_descriptors(model, images, scales):
    """The reference protocol written out independently (the authors' ``extract_vectors``): one image at a time,
    one forward pass per scale, the scale-1 input unchanged, the others ``F.interpolate(..., scale_factor=s,
    mode="bilinear", align_corners=False)``; the mean of the descriptors, L2-normalised."""
    out = []
    with torch.no_grad():
        for image, _ in DataLoader(images, batch_size=1, shuffle=False, num_workers=0):
            total = torch.zeros(DIM)
            for s in scales:
                x = image.clone() if s == 1 else F.interpolate(image, scale_factor=s, mode="bilinear",
                                                               align_corners=False)
                total += model.forward_test(x).squeeze(0)
            out.append(F.normalize(total / len(scales), dim=0))
    return torch.stack(out).numpy()


def test_scales_and_resizing_are_the_reference():
    assert SCALES == (1, 2 ** (1 / 2), (1 / 2) ** (1 / 2))  # the released code's floats, bit for bit
    x = torch.randn(2, 3, 75, 50)
    assert rescale(x, 1.0) is x
    for s in SCALES[1:]:
        y = rescale(x, s)
        assert y.shape[-2:] == (math.floor(75 * s), math.floor(50 * s))  # floor, e.g. 106 x 70 at sqrt 2
        torch.testing.assert_close(y, F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False),
                                   rtol=0, atol=0)
    # each image of a batch is resized as it would be alone
    torch.testing.assert_close(rescale(x, SCALES[1])[1:], rescale(x[1:], SCALES[1]), rtol=0, atol=0)


def test_multiscale_descriptor_single_scale_is_forward_test():
    model = small_token()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(multiscale_descriptor(model, x, (1.0,)), model.forward_test(x))
        out = multiscale_descriptor(model, x)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("part", ["db", "query"])
def test_batched_extractor_equals_the_per_image_reference(tmp_path, part):
    write_mini_set(tmp_path)
    dataset = load_revisitop(tmp_path, "roxford5k")
    paths = dataset.db_paths()[:14] if part == "db" else dataset.query_paths()
    images = RevisitopImages(paths, 64, dataset.bbxs() if part == "query" else None)
    sizes = [tuple(image.shape) for image, _ in images]
    assert len(set(sizes)) < len(sizes)  # some images share a size, so some batches hold several
    model = prepare_model(small_token(), CPU)
    expected = reference_descriptors(model, images, SCALES)
    got = extract(model, images, DIM, CPU, SCALES, batch_size=4, workers=1)
    assert got.dtype == np.float32 and got.shape == (len(paths), DIM)
    diff = np.abs(got - expected).max()
    print(f"max |batched - reference| = {diff:.2e}")
    assert diff < 1e-5
    # different descriptors for different images: the comparison is not vacuous
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


def test_equal_size_batches_releases_every_item_once_in_uniform_batches():
    sizes = [(4, 5), (5, 4), (4, 5), (4, 5), (6, 6), (5, 4), (4, 5), (4, 5), (7, 3), (4, 5), (5, 4)]
    items = [(torch.full((3, *size), float(i)), i) for i, size in enumerate(sizes)]
    seen = []
    for images, indices in equal_size_batches(iter(items), batch_size=3, max_pending=5):
        assert 1 <= len(indices) <= 3 and images.shape[0] == len(indices)
        assert all(sizes[i] == tuple(images.shape[-2:]) for i in indices)
        assert [int(v) for v in images[:, 0, 0, 0]] == indices
        seen += indices
    assert sorted(seen) == list(range(len(sizes)))
    singles = list(equal_size_batches(iter(items), batch_size=1))
    assert [indices for _, indices in singles] == [[i] for i in range(len(sizes))]


# ---------------------------------------------------------------- feature files

ENV = DistEnv(rank=0, world_size=1, device=CPU)


class Compute:
    """A fake extractor: row i of the set is (i, i, ...) plus an offset; records the spans it computed."""

    def __init__(self, offset=0.0):
        self.spans, self.offset = [], offset

    def __call__(self, spans, progress):
        for start, stop in spans:
            self.spans.append((start, stop))
            progress.update(stop - start)
            yield np.repeat(np.arange(start, stop, dtype=np.float32)[:, None], 3, axis=1) + self.offset


def expected_rows(count, offset=0.0):
    return np.repeat(np.arange(count, dtype=np.float32)[:, None], 3, axis=1) + offset


def test_feature_set_is_written_merged_and_reused(tmp_path, capsys):
    store = FeatureStore(tmp_path / "features", ENV)
    compute = Compute()
    features, ms = store.load("set_db", {"k": 1}, 10, 3, compute, shard_size=4)
    np.testing.assert_array_equal(features, expected_rows(10))
    assert compute.spans == [(0, 4), (4, 8), (8, 10)] and ms >= 0
    np.testing.assert_array_equal(np.load(tmp_path / "features" / "set_db.npy"), expected_rows(10))
    assert read_json(tmp_path / "features" / "set_db.json")["key"] == {"k": 1}
    assert not (tmp_path / "features" / "set_db").exists()
    assert not list((tmp_path / "features").glob(".*"))  # no temporary files left

    again = Compute()
    features, _ = store.load("set_db", {"k": 1}, 10, 3, again, shard_size=4)
    assert again.spans == [] and ">> set_db: reusing" in capsys.readouterr().out
    np.testing.assert_array_equal(features, expected_rows(10))

    other = Compute(offset=0.5)  # another key: extracted again, the file replaced
    features, _ = store.load("set_db", {"k": 2}, 10, 3, other, shard_size=4)
    assert other.spans == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(np.load(tmp_path / "features" / "set_db.npy"), expected_rows(10, 0.5))


def test_sharded_set_resumes_and_restarts_on_another_key(tmp_path, capsys):
    store = FeatureStore(tmp_path, ENV)
    store.load("r1m", {"k": 1}, 10, 3, Compute(), shard_size=3, merge=False)
    folder = tmp_path / "r1m"
    assert sorted(p.name for p in folder.glob("shard_*.npy")) == [f"shard_{k:05d}.npy" for k in range(4)]
    assert read_json(folder / "meta.json")["shard_size"] == 3

    (folder / "shard_00002.npy").unlink()  # as if killed before shard 2 was written
    kept = (folder / "shard_00001.npy").stat().st_mtime_ns
    resumed = Compute()
    features, _ = store.load("r1m", {"k": 1}, 10, 3, resumed, shard_size=3, merge=False)
    assert resumed.spans == [(6, 9)] and (folder / "shard_00001.npy").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(features, expected_rows(10))
    assert ">> r1m: 3 of 4 shards found, extracting the other 1" in capsys.readouterr().out

    nothing = Compute()
    store.load("r1m", {"k": 1}, 10, 3, nothing, shard_size=3, merge=False)
    assert nothing.spans == [] and ">> r1m: reusing" in capsys.readouterr().out

    restarted = Compute(offset=1.0)  # another key: the old shards are not mixed in
    features, _ = store.load("r1m", {"k": 2}, 10, 3, restarted, shard_size=3, merge=False)
    assert restarted.spans == [(0, 3), (3, 6), (6, 9), (9, 10)]
    np.testing.assert_array_equal(features, expected_rows(10, 1.0))


def test_a_run_killed_while_replacing_features_leaves_nothing_reusable(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, ENV)
    store.load("set_db", {"k": 1}, 5, 3, Compute(), shard_size=2)

    def killed(path, array):
        if path.name == "set_db.npy":
            raise KeyboardInterrupt
        save_array(path, array)

    monkeypatch.setattr(features_module, "save_array", killed)
    with pytest.raises(KeyboardInterrupt):
        store.load("set_db", {"k": 2}, 5, 3, Compute(offset=1.0), shard_size=2)
    monkeypatch.undo()
    assert not (tmp_path / "set_db.json").exists()  # the old sidecar went first: no stale reuse
    assert len(list((tmp_path / "set_db").glob("shard_*.npy"))) == 3  # the new shards are kept for resuming
    again = Compute()
    features, _ = store.load("set_db", {"k": 1}, 5, 3, again, shard_size=2)
    assert again.spans == [(0, 2), (2, 4), (4, 5)]
    np.testing.assert_array_equal(features, expected_rows(5))


def test_shards_shrink_so_that_every_process_gets_work(tmp_path):
    env = DistEnv(rank=0, world_size=4, device=CPU)
    plan = FeatureStore(tmp_path, env)._plan("set_db", {"k": 1}, (10, 3), 10_000, merge=True)
    assert plan["shard_size"] == 3 and plan["missing"] == [0, 1, 2, 3]


def test_feature_key_follows_checkpoint_settings_and_images(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    base = dict(checkpoint=checkpoint, imsize=1024, scales=SCALES, amp=False, paths=[tmp_path / "a.jpg", "b.jpg"],
                bbxs=[(0, 0, 5, 5), (1, 1, 4, 4)])
    key = feature_key(**base)
    json.dumps(key)
    assert key == feature_key(**base)
    for change in (dict(imsize=512), dict(scales=(1.0,)), dict(amp=True), dict(paths=[tmp_path / "a.jpg", "c.jpg"]),
                   dict(bbxs=[(0, 0, 5, 5), (1, 1, 4, 5)])):
        assert feature_key(**{**base, **change}) != key, change
    monkeypatch.chdir(tmp_path)  # "b.jpg" is now another file: another data root, other images
    assert feature_key(**base) != key
    monkeypatch.undo()
    assert feature_key(**base) == key
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert feature_key(**base) != key
    checkpoint.write_bytes(b"other weights")
    assert feature_key(**base)["checkpoint"]["bytes"] == len(b"other weights")


def test_feature_key_follows_each_image_file(tmp_path):
    """An image rewritten in place (other size, or the same size and a later modification time) is another key."""
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in paths:
        path.write_bytes(b"jpeg bytes")
    (tmp_path / "model.pth").write_bytes(b"weights")
    key = feature_key(tmp_path / "model.pth", 1024, SCALES, False, paths)
    paths[1].write_bytes(b"longer jpeg bytes")
    rewritten = feature_key(tmp_path / "model.pth", 1024, SCALES, False, paths)
    assert rewritten != key
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert feature_key(tmp_path / "model.pth", 1024, SCALES, False, paths) not in (key, rewritten)


def test_zero_byte_feature_files_are_extracted_again(tmp_path, capsys):
    """A 0-byte .npy (numpy reads it as EOFError) takes the path of a truncated one: not complete, so redone."""
    store = FeatureStore(tmp_path, ENV)
    store.load("set_db", {"k": 1}, 5, 3, Compute(), shard_size=2)
    (tmp_path / "set_db.npy").write_bytes(b"")
    merged = Compute()
    features, _ = store.load("set_db", {"k": 1}, 5, 3, merged, shard_size=2)
    assert merged.spans == [(0, 2), (2, 4), (4, 5)] and ">> set_db: extracting 5 images" in capsys.readouterr().out
    np.testing.assert_array_equal(features, expected_rows(5))
    np.testing.assert_array_equal(np.load(tmp_path / "set_db.npy"), expected_rows(5))

    store.load("r1m", {"k": 1}, 5, 3, Compute(), shard_size=2, merge=False)
    (tmp_path / "r1m" / "shard_00001.npy").write_bytes(b"")
    sharded = Compute()
    features, _ = store.load("r1m", {"k": 1}, 5, 3, sharded, shard_size=2, merge=False)
    assert sharded.spans == [(2, 4)]
    assert ">> r1m: 2 of 3 shards found, extracting the other 1" in capsys.readouterr().out
    np.testing.assert_array_equal(features, expected_rows(5))
