"""VLAD (retrieval.vlad) on cases small enough to check by hand: nearest-word assignment, residual sums word after
word, the one global L2 normalisation, the zero vector of an image without features; and the codebook reader's
refusals and faiss k-means (retrieval.codebook)."""

import numpy as np
import pytest

from retrieval.codebook import kmeans, read_codebook
from retrieval.vlad import assign, vlad, vlad_rows
from utils.errors import InputError

CENTROIDS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def test_assignment_is_the_nearest_word_lower_index_on_a_tie():
    features = np.array([[1.0, 1.0], [9.0, 2.0], [-1.0, 8.0], [5.0, 0.0], [5.0, 5.0]])
    # [5, 0] is 5 from words 0 and 1, [5, 5] is sqrt 50 from all three: the lowest index wins
    np.testing.assert_array_equal(assign(features, CENTROIDS), [0, 1, 2, 0, 0])


def test_residuals_summed_per_word_word_major_then_l2():
    features = np.array([[1.0, 2.0], [2.0, -1.0], [11.0, 3.0], [9.0, 1.0]])
    # word 0: (1, 2) + (2, -1) = (3, 1); word 1: (1, 3) + (-1, 1) = (0, 4); word 2: none
    expected = np.array([3.0, 1.0, 0.0, 4.0, 0.0, 0.0]) / np.sqrt(9 + 1 + 16)
    out = vlad(features, CENTROIDS)
    assert out.dtype == np.float32 and out.shape == (6,)
    np.testing.assert_allclose(out, expected, rtol=1e-7)
    assert np.linalg.norm(out) == pytest.approx(1, abs=1e-6)


def test_no_per_word_normalisation():
    """A word with a large residual sum keeps its weight against a small one (intra-normalisation would make
    them equal)."""
    out = vlad(np.array([[3.0, 4.0], [10.0, 1.0]]), CENTROIDS)
    np.testing.assert_allclose(out, np.array([3.0, 4.0, 0.0, 1.0, 0.0, 0.0]) / np.sqrt(26), rtol=1e-7)


def test_image_without_features_is_the_zero_vector():
    np.testing.assert_array_equal(vlad(np.zeros((0, 2)), CENTROIDS), np.zeros(6, np.float32))
    rows = vlad_rows([np.zeros((0, 2)), np.array([[1.0, 0.0]])], CENTROIDS)
    np.testing.assert_array_equal(rows, [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    assert vlad_rows([], CENTROIDS).shape == (0, 6)


def test_features_on_their_words_sum_to_zero_residuals():
    """Every feature exactly on its word: all residuals 0, the vector 0 (the 1e-12 floor, no division by 0)."""
    assert not vlad(CENTROIDS.copy(), CENTROIDS).any()


def test_codebook_file_checks(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((3, 128)))
    centroids = read_codebook(good)
    assert centroids.dtype == np.float32 and centroids.shape == (3, 128)
    for name, array, message in [("wide.npy", np.ones((3, 64), np.float32), "shape (K, 128), got float32 (3, 64)"),
                                 ("ints.npy", np.ones((3, 128), np.int64), "got int64 (3, 128)"),
                                 ("nan.npy", np.full((3, 128), np.nan, np.float32), "NaN or infinite")]:
        np.save(tmp_path / name, array)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_codebook(tmp_path / name)
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(InputError, match="not a readable .npy array"):
        read_codebook(tmp_path / "text.npy")
    with pytest.raises(InputError, match="has 3 words, the settings ask for 4"):
        read_codebook(good, 4)


def test_kmeans_finds_separated_clusters_and_refuses_too_few_points():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 128, [5.0] * 128])
    points = np.concatenate([c + 0.01 * rng.normal(size=(50, 128)) for c in centres])
    found = kmeans(points, 2)
    assert found.shape == (2, 128) and found.dtype == np.float32
    np.testing.assert_allclose(np.sort(found.mean(1)), [0, 5], atol=0.01)
    with pytest.raises(InputError, match="a codebook of 200 words needs at least 200 local features"):
        kmeans(points, 200)
