"""test.py with every kind of model file: a Table 1 baseline in the released layout, found by its released name;
a deep-image-retrieval file with its learned whitening (``--whiten``); deep-image-retrieval's protocol
(``--protocol dir``)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.images import to_normalized_tensor
from datasets.revisitop import load_revisitop
from networks import RMAC, APGeM
from retrieval.revisited import revisited_map
from tests.released import dirtorch_names, fitted_pca, save_deep_image_retrieval
from tests.test_test import TEST_ARGS, run_test, test_py, write_mini_set
from weights import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 16


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models") / "data"
    write_mini_set(root)
    return root


@pytest.fixture(scope="module")
def apgem_file(tmp_path_factory):
    """A deep-image-retrieval file of a small AP-GeM with a PCA fitted to random descriptors."""
    torch.manual_seed(0)
    model = APGeM(backbone="resnet18", out_dim=DIM, pretrained=False).eval()
    path = tmp_path_factory.mktemp("dir") / "Resnet18-AP-GeM.pt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        save_deep_image_retrieval(path, dirtorch_names(model), fitted_pca(np.random.default_rng(0).standard_normal(
            (40, DIM))), monkeypatch)
    return path


def test_a_baseline_by_its_released_name_is_evaluated_and_named(data_root, tmp_path, capsys):
    torch.manual_seed(0)
    models = tmp_path / "models"
    models.mkdir()
    torch.save(RMAC(backbone="resnet18", out_dim=DIM, num_classes=5, pretrained=False).state_dict(),
               models / "R101-RMAC.pth")  # the released layout, at any depth
    report = run_test(data_root, "R101-RMAC", tmp_path / "out", "--models-dir", str(models))
    assert ">> RMAC (resnet18, 16-d) from" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["model"] == report["model"] == "rmac" and saved["checkpoint"].endswith("R101-RMAC.pth")
    assert np.load(tmp_path / "out" / "features" / "roxford5k_db.npy").shape[1] == DIM


def test_a_missing_released_name_says_how_to_fetch_it(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_test(data_root, "R101-SOLAR", tmp_path / "out", "--models-dir", str(tmp_path))
    assert exit_info.value.code == 2
    assert "python -m datasets.download models R101-SOLAR" in capsys.readouterr().err


def test_learned_whitening_is_a_row_of_its_own(data_root, apgem_file, tmp_path):
    report = run_test(data_root, apgem_file, tmp_path, "--whiten", "Landmarks_clean", "--whiten-power", "0.5")
    runs = report["datasets"]["roxford5k"]["runs"]
    assert set(runs) == {"exact", "exact+whiten"} and report["model"] == "apgem"
    whitening = load_model(apgem_file).whitening["Landmarks_clean"]
    db, queries = (np.load(tmp_path / "features" / f"roxford5k_{part}.npy") for part in ("db", "query"))
    gnd = load_revisitop(data_root, "roxford5k").gnd
    expected = revisited_map(whitening(db, power=0.5) @ whitening(queries, power=0.5).T, gnd)
    assert runs["exact+whiten"]["medium"]["mAP"] == pytest.approx(100 * expected["medium"]["map"], abs=1e-6)
    assert runs["exact+whiten"]["medium"]["mAP"] != runs["exact"]["medium"]["mAP"]


def test_a_whitening_the_file_lacks_is_one_line(data_root, apgem_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_test(data_root, apgem_file, tmp_path, "--whiten", "Landmarks")
    assert "known: Landmarks_clean" in capsys.readouterr().err


def test_dir_protocol_is_one_scale_at_the_original_size(data_root, apgem_file, tmp_path):
    argv = [a for a in TEST_ARGS if a not in ("--imsize", "64")]
    report = test_py.main(["--checkpoint", str(apgem_file), "--data-root", str(data_root), "--datasets",
                           "roxford5k", "--output-dir", str(tmp_path), "--protocol", "dir", *argv])
    assert report["protocol"] == "dir" and report["imsize"] is None and report["scales"] == [1.0]
    model = load_model(apgem_file)
    folder = data_root / "test" / "roxford5k" / "jpg"
    image = to_normalized_tensor()(Image.open(folder / "db_005.jpg").convert("RGB"))  # 50 x 90: not resized
    with torch.no_grad():
        expected = model.forward_test(image[None])[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "features" / "roxford5k_db.npy")[5], expected, atol=1e-5)


def test_dir_protocol_refuses_size_and_scales(data_root, apgem_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_test(data_root, apgem_file, tmp_path, "--protocol", "dir")  # run_test passes --imsize 64
    assert "--protocol dir evaluates one scale at the original size" in capsys.readouterr().err
