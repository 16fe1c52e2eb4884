import numpy as np
import pytest

from networks.pca_whitening import PCAWhitening


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((200, 8)) @ rng.standard_normal((8, 8)) + rng.standard_normal(8)


def test_fit_finds_the_covariance_eigenvectors(data):
    w = PCAWhitening.fit(data)
    values, vectors = np.linalg.eigh(np.cov(data, rowvar=False))
    np.testing.assert_allclose(w.variance, values[::-1], rtol=1e-10)
    np.testing.assert_allclose(np.abs(w.components @ vectors[:, ::-1]), np.eye(8), atol=1e-8)


def test_full_whitening_decorrelates_and_normalises(data):
    w = PCAWhitening.fit(data)
    y = (data - w.mean) @ w.components.T / np.sqrt(w.variance)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(8), atol=1e-10)
    out = w(data, power=0.5)
    np.testing.assert_allclose(out, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-12)


def test_power_zero_is_a_normalised_projection_and_dims_truncate(data):
    w = PCAWhitening.fit(data)
    out = w(data.astype(np.float32), power=0, dims=3)
    assert out.shape == (200, 3) and out.dtype == np.float32
    y = (data - w.mean) @ w.components[:3].T
    np.testing.assert_allclose(out, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-6)


def test_arrays_round_trip_and_shapes_are_checked(tmp_path, data):
    w = PCAWhitening.fit(data, dims=5)
    np.savez(tmp_path / "w.npz", **w.to_arrays())
    back = PCAWhitening.from_arrays(np.load(tmp_path / "w.npz"))
    np.testing.assert_array_equal(back(data), w(data))
    with pytest.raises(ValueError, match="do not agree"):
        PCAWhitening(w.mean[:3], w.components, w.variance)


@pytest.mark.parametrize("dims", [0, -1, 8, 1000])
def test_fit_refuses_a_number_of_directions_the_rows_do_not_have(dims):
    """0 directions whitened everything to zero, -1 kept N - 2 (a slice), more than min(N - 1, D) kept directions
    of zero variance (issue 22, 6)."""
    rows = np.random.default_rng(0).standard_normal((8, 16))  # 8 rows span 7 directions
    with pytest.raises(ValueError, match=f"^{dims} directions asked, 8 descriptors of dimension 16 have from 1 to 7"):
        PCAWhitening.fit(rows, dims)
    assert PCAWhitening.fit(rows, 7).components.shape == (7, 16)
