import numpy as np
import pytest
import torch

from networks.pca_whitening import PCAWhitening
from retrieval.descriptor_whitening import check_power
from utils.errors import InputError


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


@pytest.mark.parametrize("field, value, message", [
    ("mean", np.nan, "the whitening's mean and directions must be finite numbers"),
    ("components", np.inf, "the whitening's mean and directions must be finite numbers"),
    ("variance", 0.0, "the whitening's variances must be finite numbers greater than 0, got 0.0"),
    ("variance", -1.0, "the whitening's variances must be finite numbers greater than 0, got -1.0"),
    ("variance", np.inf, "the whitening's variances must be finite numbers greater than 0, got inf"),
])
def test_a_whitening_that_would_make_every_descriptor_nan_is_refused(data, field, value, message):
    """Issue 22, 5: such a whitening, read or built, made every whitened descriptor NaN and every search empty."""
    arrays = PCAWhitening.fit(data).to_arrays()
    arrays[field] = arrays[field].copy()
    arrays[field].flat[2] = value
    with pytest.raises(ValueError, match=f"^{message}"):
        PCAWhitening.from_arrays(arrays)
    assert np.isfinite(PCAWhitening.fit(data)(data, power=1.0)).all()  # the largest power allowed stays finite


def test_a_deep_image_retrieval_file_with_a_broken_pca_names_it(data, tmp_path, monkeypatch):
    """The .pt reader builds the same PCAWhitening: one line naming the file and the PCA, before any work."""
    from networks import APGeM
    from tests.released import dirtorch_names, fitted_pca, save_deep_image_retrieval
    from utils.errors import InputError
    from weights import load_model

    pca = fitted_pca(np.random.default_rng(0).standard_normal((40, 16)))
    pca.explained_variance_[5] = 0.0
    torch.manual_seed(0)
    path = tmp_path / "Resnet18-AP-GeM.pt"
    save_deep_image_retrieval(path, dirtorch_names(APGeM(backbone="resnet18", out_dim=16, pretrained=False)), pca,
                              monkeypatch)
    with pytest.raises(InputError, match=rf"^{path}: pca\['Landmarks_clean'\]: the whitening's variances must be "
                                         "finite numbers greater than 0, got 0.0$"):
        load_model(path)


@pytest.mark.parametrize("power", [-0.1, 1.5, 1e308, float("nan"), True, "0.5"])
def test_a_power_outside_0_to_1_is_refused(power):
    """--whiten-power 1e308 raised every variance to inf or 0 and whitened every descriptor to NaN (exit 0, no
    results)."""
    with pytest.raises(InputError) as refusal:
        check_power(power)
    assert str(refusal.value) == f"--whiten-power {power}: expected a number from 0 to 1 (0.5 full whitening, 0 a " \
                                 "plain PCA projection)"
    assert check_power(0) == 0 and check_power(0.5) == 0.5 and check_power(1.0) == 1.0


def test_test_py_with_a_nan_whitening_file_is_one_line_before_any_extraction(tmp_path, capsys):
    """Before: a traceback (test.py --whiten-file with a NaN)."""
    from tests.eval_sets import run_test, write_checkpoint, write_mini_set

    write_mini_set(tmp_path / "data")
    arrays = PCAWhitening.fit(np.random.default_rng(0).standard_normal((40, 32))).to_arrays()
    arrays["mean"][0] = np.nan
    np.savez(tmp_path / "W.npz", **arrays)
    with pytest.raises(SystemExit) as stop:
        run_test(tmp_path / "data", write_checkpoint(tmp_path / "t.pth"), tmp_path / "out", "--whiten-file",
                 str(tmp_path / "W.npz"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == (
        f"error: --whiten-file {tmp_path / 'W.npz'}: expected a whitening .npz with mean, components, variance and "
        "whiten (python index.py whiten writes one) (the whitening's mean and directions must be finite numbers (a NaN "
        "or inf is there))\n")
    assert not list((tmp_path / "out").rglob("*.npy"))  # nothing was extracted
