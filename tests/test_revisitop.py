import os
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.images import IMAGENET_MEAN, IMAGENET_STD, ImageReadError, load_rgb
from datasets.revisitop import (
    R1M,
    RevisitopImages,
    load_revisitop,
    resize_database,
    resize_query,
)
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError


def coordinate_image(width, height):
    """Red = 5x, green = 5y (mod 256), blue = 7: a crop's pixels tell where it came from."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    rgb = np.stack([(5 * x) % 256, (5 * y) % 256, np.full_like(x, 7)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


DB_SIZES = {"db_a": (40, 30), "db_b": (30, 50), "db_c": (64, 64), "db_d": (20, 10), "db_e": (33, 10)}
QUERIES = {"q_0": ((48, 36), [4.4, 2.5, 20.5, 30.2]), "q_1": ((30, 60), np.array([0.0, 10.0, 30.0, 40.0]))}


def write_set(root, name="synthetic", gnd=None):
    """A revisitop-format set: JPEG images of different sizes and its ground-truth pickle."""
    folder = root / "test" / name
    (folder / "jpg").mkdir(parents=True)
    for image, size in DB_SIZES.items():
        coordinate_image(*size).save(folder / "jpg" / f"{image}.jpg", quality=95)
    for image, (size, _) in QUERIES.items():
        coordinate_image(*size).save(folder / "jpg" / f"{image}.jpg", quality=95)
    if gnd is None:
        gnd = [  # lists of ints as in the official pickles, numpy arrays in the second query
            {"bbx": QUERIES["q_0"][1], "easy": [0, 2], "hard": [4], "junk": []},
            {"bbx": QUERIES["q_1"][1], "easy": np.array([1]), "hard": np.array([], dtype=np.int64),
             "junk": np.array([3])},
        ]
    data = {"imlist": list(DB_SIZES), "qimlist": list(QUERIES), "gnd": gnd}
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(data, f)
    return folder


def test_load_revisitop_reads_the_layout(tmp_path):
    folder = write_set(tmp_path)
    ds = load_revisitop(tmp_path, "synthetic")
    assert ds.imlist == list(DB_SIZES) and ds.qimlist == list(QUERIES)
    assert ds.db_paths() == [folder / "jpg" / f"{image}.jpg" for image in DB_SIZES]
    assert ds.query_paths() == [folder / "jpg" / "q_0.jpg", folder / "jpg" / "q_1.jpg"]
    assert ds.bbxs() == [(4.4, 2.5, 20.5, 30.2), (0.0, 10.0, 30.0, 40.0)]
    assert ds.gnd[0]["easy"].tolist() == [0, 2] and ds.gnd[0]["junk"].dtype == np.int64
    assert ds.gnd[1]["junk"].tolist() == [3] and ds.gnd[1]["hard"].size == 0
    ds.check_images()
    os.remove(folder / "jpg" / "db_c.jpg")
    with pytest.raises(InputError, match="1 image.*db_c.jpg"):
        ds.check_images()


@pytest.mark.parametrize("remove", ["root", "set", "jpg", "pkl"])
def test_missing_paths_are_named(tmp_path, remove):
    folder = write_set(tmp_path / "data")
    target = {"root": tmp_path / "data", "set": folder, "jpg": folder / "jpg", "pkl": folder / "gnd_synthetic.pkl"}
    path = target[remove]
    if remove == "pkl":
        path.unlink()
    else:
        os.rename(path, tmp_path / "moved")
    with pytest.raises(InputError, match=str(path)):
        load_revisitop(tmp_path / "data", "synthetic")


@pytest.mark.parametrize("query,message", [
    ({"bbx": [0, 0, 5, 5], "easy": [5], "hard": [], "junk": []}, "query 0: 'easy' index 5 outside the 5"),
    ({"bbx": [0, 0, 5, 5], "easy": [0], "hard": [-1], "junk": []}, "query 0: 'hard' index -1"),
    ({"bbx": [0, 0, 5, 5], "easy": [0.5], "hard": [], "junk": []}, "query 0: 'easy' must hold integer"),
    ({"bbx": [0, 0, 5, 5], "easy": [0], "hard": []}, "query 0: missing 'junk'"),
    ({"bbx": [5, 0, 5, 5], "easy": [0], "hard": [], "junk": []}, "query 0: 'bbx' must be 4 finite"),
    ({"bbx": [0, 0, 5], "easy": [0], "hard": [], "junk": []}, "query 0: 'bbx' must be 4 finite"),
    ({"bbx": "box", "easy": [0], "hard": [], "junk": []}, "query 0: 'bbx' must be 4 numbers"),
])
def test_malformed_gnd_names_query_and_problem(tmp_path, query, message):
    write_set(tmp_path, gnd=[query, {"bbx": [0, 0, 1, 1], "easy": [], "hard": [], "junk": []}])
    with pytest.raises(InputError, match=message):
        load_revisitop(tmp_path, "synthetic")


def test_gnd_without_one_entry_per_query(tmp_path):
    write_set(tmp_path, gnd=[{"bbx": [0, 0, 1, 1], "easy": [], "hard": [], "junk": []}])
    with pytest.raises(InputError, match="one dict per query"):
        load_revisitop(tmp_path, "synthetic")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_unsafe_pickle_is_refused(tmp_path):
    folder = write_set(tmp_path)
    with open(folder / "gnd_synthetic.pkl", "wb") as f:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": [_RunsCode()]}, f)
    with pytest.raises(UnsafePickleError, match="gnd_synthetic.pkl"):
        load_revisitop(tmp_path, "synthetic")


def test_r1m_image_list(tmp_path):
    folder = tmp_path / "test" / R1M
    (folder / "jpg" / "a" / "b").mkdir(parents=True)
    with pytest.raises(InputError, match=f"{R1M}.txt not found"):
        load_revisitop(tmp_path, R1M)
    (folder / f"{R1M}.txt").write_text("a/b/one.jpg\n\na/two\n")
    ds = load_revisitop(tmp_path, R1M)
    assert ds.db_paths() == [folder / "jpg" / "a" / "b" / "one.jpg", folder / "jpg" / "a" / "two.jpg"]
    assert ds.qimlist == [] and ds.gnd == []
    (folder / "jpg" / "a" / "b" / "one.jpg").write_bytes(b"x")
    assert ds.missing_images() == [folder / "jpg" / "a" / "two.jpg"]
    (folder / f"{R1M}.txt").write_text("a/two\n\n../escape.jpg\n")
    with pytest.raises(InputError, match=r"revisitop1m.txt: line 3 \('../escape.jpg'\) must be a path inside jpg/"):
        load_revisitop(tmp_path, R1M)


@pytest.mark.parametrize("key,entry,why", [
    ("imlist", "../../../../outside/secret", "a path through '..'"),
    ("qimlist", "q/../../../../../outside/secret", "a path through '..'"),
    ("imlist", "/etc/hostname", "an absolute path"),
    ("qimlist", "", "an empty name"),
])
def test_list_entries_outside_jpg_are_refused(tmp_path, key, entry, why):
    """The file outside jpg/ exists, so an unchecked entry would be read as an image of the set."""
    outside = tmp_path / "outside"
    outside.mkdir()
    coordinate_image(8, 8).save(outside / "secret.jpg")
    folder = write_set(tmp_path / "data")
    assert (folder / "jpg" / "../../../../outside/secret.jpg").resolve() == outside / "secret.jpg"
    with open(folder / "gnd_synthetic.pkl", "rb") as f:
        data = pickle.load(f)
    data[key] = [entry] + data[key][1:]
    with open(folder / "gnd_synthetic.pkl", "wb") as f:
        pickle.dump(data, f)
    message = f"gnd_synthetic.pkl: '{key}' entry 0 ({entry!r}) must be a path inside jpg/, not {why}"
    with pytest.raises(InputError, match=re.escape(message)):
        load_revisitop(tmp_path / "data", "synthetic")


@pytest.mark.parametrize("size,imsize,expected", [
    ((400, 300), 100, (100, 75)),  # landscape: 100 x 300/4
    ((300, 400), 100, (75, 100)),
    ((50, 20), 100, (50, 20)),  # smaller than imsize: never upscaled
    # height 100/3.33 = 30.03: thumbnail picks 30 (aspect 3.333) over 31 (3.226), the closer to 3.33
    ((333, 100), 100, (100, 30)),
])
def test_resize_database_sizes(size, imsize, expected):
    img = coordinate_image(*size)
    out = resize_database(img, imsize)
    assert out.size == expected and img.size == size  # the input is left as it was


def test_resize_database_is_pil_thumbnail_lanczos():
    img = coordinate_image(97, 61)
    reference = img.copy()
    reference.thumbnail((40, 40), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(resize_database(img, 40)), np.asarray(reference))


def test_resize_query_size_keeps_the_scale_of_the_resized_image():
    # PIL rounds the box (10.4, 20.6, 110.5, 70.5) to (10, 21, 110, 70): a 100 x 49 crop. Target longer side
    # 200 * 100 / 400 = 50; height 50 / (100/49) = 24.5 -> 25 (aspect 2.0) beats 24 (2.083) against 2.041.
    out = resize_query(coordinate_image(400, 300), (10.4, 20.6, 110.5, 70.5), 200)
    assert out.size == (50, 25)


def test_resize_query_crops_where_pil_rounds():
    # Box (2.4, 3.5, 12.5, 9.6) rounds to (2, 4, 12, 10) (round half to even); the 10 x 6 crop asks for a
    # longer side of 40 * 10 / 40 = 10, so it is not resized and its pixels are the image's [4:10, 2:12].
    img = coordinate_image(40, 30)
    out = resize_query(img, (2.4, 3.5, 12.5, 9.6), 40)
    assert np.array_equal(np.asarray(out), np.asarray(img)[4:10, 2:12])


def test_resize_query_box_beyond_the_edge_is_padded_black_and_outside_is_refused():
    img = coordinate_image(20, 20)
    out = np.asarray(resize_query(img, (10, 10, 30, 20), 20))  # 20 x 10 crop, target 20 * 20 / 20 = 20
    assert out.shape == (10, 20, 3)
    assert np.array_equal(out[:, :10], np.asarray(img)[10:20, 10:20]) and not out[:, 10:].any()
    with pytest.raises(InputError, match="does not overlap"):
        resize_query(img, (25, 0, 30, 5), 20)
    framed = np.asarray(resize_query(img, (-10, -10, 30, 30), 20))  # twice the image: still the reference's crop
    assert framed.shape == (40, 40, 3) and np.array_equal(framed[10:30, 10:30], np.asarray(img))


def test_a_box_far_larger_than_its_image_is_refused_before_cropping(tmp_path):
    """[0, 0, 1e5, 1e5] on a 96 x 72 image: PIL would refuse the 1e10-pixel crop as a decompression bomb."""
    folder = write_set(tmp_path, gnd=[{"bbx": [0, 0, 1e5, 1e5], "easy": [0], "hard": [], "junk": []},
                                      {"bbx": [0, 0, 30, 61], "easy": [1], "hard": [], "junk": []}])
    coordinate_image(96, 72).save(folder / "jpg" / "q_0.jpg")
    ds = load_revisitop(tmp_path, "synthetic")
    queries = RevisitopImages(ds.query_paths(), imsize=32, bbxs=ds.bbxs())
    with pytest.raises(InputError, match=r"q_0.jpg: bbx \(0.0, 0.0, 100000.0, 100000.0\) is more than twice the width "
                                         "or height of the 96x72 query image"):
        queries[0]
    assert tuple(queries[1][0].shape) == (3, 32, 16)  # 61 rows of a 60-row image: one black row, accepted


def test_images_dataset_database_and_queries(tmp_path):
    folder = write_set(tmp_path)
    ds = load_revisitop(tmp_path, "synthetic")
    db = RevisitopImages(ds.db_paths(), imsize=32)
    # longer side to 32 unless already smaller: (40, 30) -> (32, 24); (30, 50) -> (19.2 -> 19, 32); (64, 64) ->
    # (32, 32); (20, 10) kept; (33, 10) -> (32, 9.7 -> 10), aspect 3.2 beating 3.56 against 3.3.
    expected = [(32, 24), (19, 32), (32, 32), (20, 10), (32, 10)]
    for i, (width, height) in enumerate(expected):
        tensor, index = db[i]
        assert index == i and tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, height, width)
    # q_0: 48 x 36 image, box (4.4, 2.5, 20.5, 30.2) -> (4, 2, 20, 30): 16 x 28 crop, longer side to
    # 32 * 28 / 48 = 18.67 -> 18, width 16 / (28/18) = 10.3 -> 10. q_1: 30 x 60, 30 x 30 crop, 32 * 30 / 60 = 16.
    queries = RevisitopImages(ds.query_paths(), imsize=32, bbxs=ds.bbxs())
    assert tuple(queries[0][0].shape) == (3, 18, 10) and tuple(queries[1][0].shape) == (3, 16, 16)
    # ToTensor + ImageNet normalisation, computed independently: (pixel / 255 - mean) / std, channels first
    pixels = np.asarray(resize_query(load_rgb(folder / "jpg" / "q_1.jpg"), ds.bbxs()[1], 32), np.float32)
    expected = (pixels / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert torch.allclose(queries[1][0], torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-6)


def test_images_dataset_raises_on_unreadable_image_and_bad_box(tmp_path):
    write_set(tmp_path)
    ds = load_revisitop(tmp_path, "synthetic")
    ds.db_paths()[1].write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="db_b.jpg"):
        RevisitopImages(ds.db_paths(), imsize=32)[1]
    queries = RevisitopImages(ds.query_paths(), imsize=32, bbxs=[(100, 100, 120, 120)] * 2)
    with pytest.raises(InputError, match="q_0.jpg: bbx"):
        queries[0]
    with pytest.raises(ValueError, match="1 boxes for 2 images"):
        RevisitopImages(ds.query_paths(), imsize=32, bbxs=[(0, 0, 1, 1)])
