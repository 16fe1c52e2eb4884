"""train.py --model how: HOW's reduction layer is the PCA whitening of the first training images' local features
(docs/FACTS.md, "HOW") and stays as it is while the trunk learns; too few features stop the run in one line."""

import numpy as np
import pytest
import torch

import train
from datasets.gldv2 import load_gldv2
from datasets.images import load_rgb, to_normalized_tensor
from datasets.revisitop import resize_database
from networks import build_model
from networks.pca_whitening import PCAWhitening
from tests.test_train import COMMON, make_gldv2
from training.checkpointer import load_training_state
from weights import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

HOW = [*COMMON, "--model", "how", "--out-dim", "32", "--arcface-margin", "0", "--arcface-scale", "16"]


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    """4 landmarks of 3 distinct images, each saved twice: 24 images, 64 x 64 (16 local features each)."""
    return make_gldv2(tmp_path_factory.mktemp("gldv2"), [3, 3, 3, 3], copies=2)


def test_the_reduction_whitens_the_first_images_features_and_stays_frozen(handful, tmp_path):
    out = tmp_path / "how"
    train.main([*HOW, "--data-root", str(handful), "--output-dir", str(out), "--epochs", "1", "--init-images", "12"])
    model = load_model(out / "last.pth")
    torch.manual_seed(0)  # as train.py --seed 0 does before building the model: the trunk the reduction saw
    initial = build_model(model.config, num_classes=4, pretrained=False).eval()
    assert not torch.equal(model.features[0].weight, initial.features[0].weight)  # the trunk trained
    assert not any(p.requires_grad for p in model.dim_reduction.parameters())
    state = load_training_state(out / "last.pth")
    trained = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(group["params"]) for group in state["optimizer"]["param_groups"]) == len(trained)

    features = []
    with torch.no_grad():
        for path, _ in load_gldv2(handful).train[:12]:
            image = to_normalized_tensor()(resize_database(load_rgb(handful / path), 64))[None]
            features.append(initial.attention_and_smoothed(image)[1][0].flatten(1).T.double())  # all 16 < 1000
    x = torch.cat(features).numpy()
    weight = model.dim_reduction.weight.detach().double().numpy()[:, :, 0, 0]
    whitened = x @ weight.T + model.dim_reduction.bias.detach().double().numpy()
    assert len(x) == 12 * 16 and weight.shape == (32, 256)
    np.testing.assert_allclose(whitened.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(whitened.T @ whitened / len(x), np.eye(32), atol=1e-3)  # covariance divided by N
    reference = PCAWhitening.fit(x)  # the same directions, up to sign, by an SVD of all the rows
    cosines = np.abs(np.sum(weight / np.linalg.norm(weight, axis=1, keepdims=True) * reference.components[:32], 1))
    np.testing.assert_allclose(cosines, 1, atol=1e-4)


def test_too_few_local_features_stop_the_run_in_one_line(handful, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main([*HOW, "--data-root", str(handful), "--output-dir", str(tmp_path), "--epochs", "1",
                    "--init-images", "2"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and line == (
        "error: HOW's reduction to 32 dimensions is initialised by PCA whitening of more than 32 local features; 2 "
        "training image(s) at --imsize 64 gave 32: raise --init-images or --imsize")
