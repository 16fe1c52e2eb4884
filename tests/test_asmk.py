"""ASMK parity with the asmk package's own results (tests/data/golden-asmk.npz, docs/evaluation.md "Local
features"), through the evaluation's path: the codebook read from a .npy by ``retrieval.codebook``, the local
features stored as float16 rows and unpacked (``retrieval.local_features``), image ids made by
``retrieval.asmk`` from the per-image lists, the inverted file built in chunks. The golden vectors are multiples
of 1/256, exact in float16, so the store's rounding changes nothing."""

import numpy as np
import pytest

from retrieval.asmk import ASMKParams, ASMKSearch, stacked
from retrieval.codebook import read_codebook
from retrieval.local_features import LocalImages, pack
from tests.conftest import DATA

GOLDEN = np.load(DATA / "golden-asmk.npz")


def stored(vectors, image_ids):
    """The images' features as the store gives them back: packed float16 rows, unpacked."""
    images = [vectors[image_ids == i] for i in range(image_ids.max() + 1)]
    width = max(map(len, images))
    return LocalImages(np.stack([pack(features, width) for features in images]).astype(np.float16))


@pytest.fixture(scope="module")
def codebook(tmp_path_factory):
    path = tmp_path_factory.mktemp("asmk") / "codebook.npy"
    np.save(path, GOLDEN["codebook"])  # float64 in the golden file: read as float32, exact (multiples of 1/256)
    return read_codebook(path)


@pytest.fixture(scope="module")
def database():
    return stored(GOLDEN["db_vecs"], GOLDEN["db_imids"])


@pytest.fixture(scope="module")
def queries():
    return stored(GOLDEN["q_vecs"], GOLDEN["q_imids"])


def golden_params(binary=True, ma_db=None):
    return ASMKParams(binary=binary, ma_db=int(ma_db or GOLDEN["ma_db"]), ma_query=int(GOLDEN["ma_query"]),
                      alpha=float(GOLDEN["alpha"]), tau=float(GOLDEN["tau"]))


def unpacked_bits(packed):
    return np.unpackbits(packed.astype(">u4").view(np.uint8), axis=1)


@pytest.mark.parametrize("kind, binary", [("bin", True), ("float", False)])
def test_scores_and_ranks_match_the_package(codebook, database, queries, kind, binary):
    # three parts (the dataset, then distractors) built in chunks of 3 images: ids run on across both
    index = ASMKSearch(codebook, [database[:7], database[7:12], database[12:]], golden_params(binary), chunk_images=3)
    scores = index.scores(queries)
    assert scores.shape == (len(database), len(queries))
    ranks = np.argsort(-scores, axis=0, kind="stable").T
    np.testing.assert_array_equal(ranks, GOLDEN[f"{kind}_ranks"])
    ranked = np.take_along_axis(scores.T, ranks, axis=1)
    relative = np.abs(ranked / GOLDEN[f"{kind}_scores"] - 1).max()
    assert relative <= 1e-6, relative
    np.testing.assert_array_equal(index.search(queries, 5)[1], GOLDEN[f"{kind}_ranks"][:, :5])


def test_database_words_bits_and_norms_match_the_package(codebook, database):
    index = ASMKSearch(codebook, [database], golden_params(), chunk_images=4)
    words, packed, image_ids = index.entries()
    np.testing.assert_array_equal(words, GOLDEN["db_agg_words"])
    np.testing.assert_array_equal(image_ids, GOLDEN["db_agg_imids"])
    np.testing.assert_array_equal(unpacked_bits(packed), GOLDEN["db_agg_bits"])
    np.testing.assert_array_equal(index.method.inverted_file.norm_factor, GOLDEN["db_words_per_image"])
    # 616 word entries of 4 uint32 and an int64 id, and one float64 norm per image
    assert index.memory_bytes == 616 * (16 + 8) + 20 * 8


def test_query_words_and_bits_with_multiple_assignment_5(codebook, queries):
    """The queries indexed with the query's multiple assignment aggregate as the package's queries do."""
    words, packed, image_ids = ASMKSearch(codebook, [queries], golden_params(ma_db=GOLDEN["ma_query"])).entries()
    np.testing.assert_array_equal(words, GOLDEN["q_agg_words"])
    np.testing.assert_array_equal(image_ids, GOLDEN["q_agg_imids"])
    np.testing.assert_array_equal(unpacked_bits(packed), GOLDEN["q_agg_bits"])


def test_packing_probe():
    """Components 0, 33 and 127 positive, the others negative: bits most significant first in uint32 words."""
    feature = -np.ones((1, 128), np.float32)
    feature[0, [0, 33, 127]] = 1
    _, packed, _ = ASMKSearch(np.zeros((1, 128), np.float32), [[feature]]).entries()
    np.testing.assert_array_equal(packed, GOLDEN["probe_packed"])


def test_image_without_features_scores_zero_and_keeps_its_id(codebook, database, queries):
    """An empty image in the middle and one at the end: the others keep their scores and places."""
    empty = np.zeros((0, 128), np.float32)
    index = ASMKSearch(codebook, [database[:5] + [empty] + database[5:] + [empty]], golden_params(), chunk_images=2)
    scores = index.scores(list(queries) + [empty])
    full = ASMKSearch(codebook, [database], golden_params()).scores(queries)
    assert scores.shape == (len(database) + 2, len(queries) + 1)
    np.testing.assert_array_equal(scores[[5, -1]], 0)
    np.testing.assert_array_equal(scores[:, -1], 0)  # a query without features
    np.testing.assert_array_equal(np.delete(scores, [5, len(database) + 1], axis=0)[:, :-1], full)


def test_image_ids_are_contiguous_and_increasing():
    images = [np.ones((2, 4)), np.ones((0, 4)), np.ones((3, 4))]
    vectors, ids = stacked(images, 10)
    assert vectors.shape == (5, 4) and vectors.dtype == np.float32
    np.testing.assert_array_equal(ids, [10, 10, 12, 12, 12])


def test_benchmark_reports_memory_and_query_time(tmp_path):
    from benchmarks import asmk as benchmark

    report = benchmark.main(["--quick", "--images", "60", "--out", str(tmp_path / "asmk.json")])
    row = report["row"]
    assert row["images"] == 60 and row["quantised_images"] == 20
    # 16 bytes of code and an 8-byte id per word entry, an 8-byte norm per image
    assert row["bytes_per_image"] == pytest.approx(24 * row["word_entries_per_image"] + 8)
    assert row["allocated_bytes_per_image"] >= row["bytes_per_image"]
    assert row["query_ms"] >= row["query_quantisation_ms"] > 0
    assert report["r1m"]["gib"] == pytest.approx(row["bytes_per_image"] * 1_001_001 / 2 ** 30)
    assert (tmp_path / "asmk.json").is_file()
