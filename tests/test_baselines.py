"""The Table 1 baselines (R-MAC, SOLAR, DELG, NetVLAD) and deep-image-retrieval's AP-GeM: their pooling math by
hand, training steps, and ``load_model`` on released-layout files against the golden descriptors of the released
code (docs/FACTS.md, "The baselines")."""

import os
import sys

import numpy as np
import pytest
import torch

from networks import DELG, RMAC, SOLAR, APGeM, NetVLAD, PCAWhitening, Token, build_model
from networks.config import CONFIGS
from networks.netvlad import vlad
from networks.pooling import rmac, rmac_regions
from networks.solar import SecondOrderAttention
from tests.conftest import DATA
from tests.released import (
    baseline_inputs,
    baseline_state_dict,
    dirtorch_names,
    fitted_pca,
    released_names,
    save_deep_image_retrieval,
)
from utils.errors import InputError
from weights import load_model, load_token, model_state

CLASSES = {"rmac": RMAC, "solar": SOLAR, "delg": DELG, "netvlad": NetVLAD, "apgem": APGeM}
# docs/FACTS.md, "The baselines": R101 with a 97-class classifier (AP-GeM: the file has none)
PARAMETERS = {"rmac": 46_895_168, "solar": 55_292_992, "delg": 47_039_808, "netvlad": 54_151_232,
              "apgem": 46_696_513}


# ---------------------------------------------------------------- deep-image-retrieval files, as their code writes them


# ---------------------------------------------------------------- parity with the released code


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_golden_descriptors_of_the_released_baselines(tmp_path, monkeypatch, name):
    golden = np.load(DATA / f"golden-{name}-r101.npz")
    state, path = baseline_state_dict(name), tmp_path / f"R101-{name}.pth"
    if name == "apgem":
        save_deep_image_retrieval(path, state, fitted_pca(np.random.default_rng(0).standard_normal((9, 2048))),
                                  monkeypatch)
    else:
        torch.save(state, path)
    model = load_model(path)
    assert type(model) is CLASSES[name] and not model.training and model.config.backbone == "resnet101"
    with torch.no_grad():
        desc = torch.cat([model.double().forward_test(x) for x in baseline_inputs(golden["input_shapes"])])
    error = np.abs(desc.numpy() - golden["descriptors"]).max()
    print(f"{name}: max abs difference to the golden descriptors {error:.2e}")
    assert error < 1e-9


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_parameter_counts_match_the_released_models(name):
    with torch.device("meta"):
        model = CLASSES[name](num_classes=None if name == "apgem" else 97, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_ddp_prefix_and_training_wrapper_load_the_same(tmp_path):
    torch.manual_seed(0)
    source = DELG(backbone="resnet18", out_dim=16, local_dim=8, num_classes=3, pretrained=False)
    state = released_names(source.state_dict())
    assert "classifier_block4.weight" in state and "backbone.block5.1.conv2.weight" in state
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}, "optim": {}}, wrapped)
    a, b = load_model(plain), load_model(wrapped)
    assert a.config == b.config and (a.config.out_dim, a.config.local_dim) == (16, 8)
    assert a.local.arcface.weight.shape == (3, 8)
    for loaded in (a, b):
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())


# ---------------------------------------------------------------- deep-image-retrieval files


@pytest.mark.parametrize("pooling, legacy", [("gem", True), ("mac", False)])
def test_a_deep_image_retrieval_file_loads_with_its_whitening_and_no_sklearn(tmp_path, monkeypatch, pooling, legacy):
    torch.manual_seed(0)
    source = APGeM(backbone="resnet18", out_dim=16, pooling=pooling, pretrained=False).eval()
    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 16))
    path = tmp_path / "Resnet18-AP-GeM.pt"
    save_deep_image_retrieval(path, {f"module.{k}": v for k, v in dirtorch_names(source).items()},
                              fitted_pca(train), monkeypatch, legacy)
    model = load_model(path)
    assert "sklearn" not in sys.modules and model.config.pooling == pooling and model.config.out_dim == 16
    images = torch.randn(3, 3, 64, 96)
    desc = model.forward_test(images)
    torch.testing.assert_close(desc, source.forward_test(images))
    assert model.preprocess["std"] == [0.229, 0.224, 0.225]

    whitening = model.whitening["Landmarks_clean"]
    assert isinstance(whitening, PCAWhitening) and whitening.whiten
    mean = train.mean(axis=0)
    _, sing, vt = np.linalg.svd(train - mean, full_matrices=False)
    x = desc.detach().double().numpy()
    for power, dims, multiplier in [(0.25, None, 1.0), (0.5, 8, 2.0)]:
        y = (x - mean) @ vt[:dims].T / (multiplier * (sing[:dims] ** 2 / 39) ** power)
        out = whitening(desc.detach().double(), power=power, dims=dims, multiplier=multiplier)
        assert torch.is_tensor(out)
        np.testing.assert_allclose(out.numpy(), y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-10)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_a_deep_image_retrieval_file_with_any_other_class_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model_options": {}, "state_dict": {}, "pca": {"Landmarks_clean": _RunsCode()}}, path)
    with pytest.raises(InputError, match=r"evil.pt: refused to load.*(posix|nt)\.system"):
        load_model(path)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_a_deep_image_retrieval_file_whose_pca_is_not_one_is_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model_options": {}, "state_dict": {}, "pca": {"Landmarks_clean": {"mean_": np.zeros(3)}}}, path)
    with pytest.raises(InputError, match=r"odd.pt: pca\['Landmarks_clean'\] is not a fitted scikit-learn PCA"):
        load_model(path)


# ---------------------------------------------------------------- files that must be refused (issue #15)


@pytest.fixture(scope="module")
def small_rmac(tmp_path_factory):
    torch.manual_seed(0)
    model = RMAC(backbone="resnet18", out_dim=8, num_classes=3, pretrained=False).eval()
    return model, tmp_path_factory.mktemp("rmac")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused_naming_the_tensor(small_rmac, bad):
    model, folder = small_rmac
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.backbone.layer2.0.conv1.weight"][0, 0, 0, 0] = bad
    path = folder / "diverged.pth"
    torch.save({"state_dict": state, "model_config": model.config.to_dict()}, path)
    with pytest.raises(InputError, match=r"diverged.pth: tensor 'module.backbone.layer2.0.conv1.weight' holds NaN"):
        load_model(path)


@pytest.mark.parametrize("settings, message", [
    ({"rotary": True}, r"unknown model setting\(s\) rotary \(a file of a newer version\?\)"),
    ({"backbone": "resnet999"}, "backbone must be one of"),
    ({"model": "vit"}, "unknown model 'vit'"),
    ({"levels": "three"}, "levels must be an integer of at most 65536, got 'three'"),
])
def test_a_model_config_that_cannot_be_used_is_refused_naming_the_file(small_rmac, settings, message):
    model, folder = small_rmac
    path = folder / "newer.pth"
    torch.save({**model_state(model), "model_config": {**model.config.to_dict(), **settings}}, path)
    with pytest.raises(InputError, match=rf"newer.pth: its model_config cannot be used: .*{message}"):
        load_model(path)


def test_heads_that_do_not_divide_dim_are_refused(tmp_path):
    model = Token(backbone="resnet18", dim=32, out_dim=16, heads=4, pretrained=False)
    path = tmp_path / "heads7.pth"
    torch.save({**model_state(model), "model_config": {**model.config.to_dict(), "heads": 7}}, path)
    for load in (load_model, load_token):
        with pytest.raises(InputError, match=r"heads7.pth: .*heads \(7\) must divide dim \(32\)"):
            load(path)


def test_integer_keys_numpy_files_and_other_files_are_told_what_they_are(tmp_path, small_rmac):
    integers = tmp_path / "integers.pth"
    torch.save({0: torch.zeros(3)}, integers)
    array = tmp_path / "features.npy"
    np.save(array, np.zeros((2, 3), dtype=np.float32))
    resnet = tmp_path / "resnet.pth"
    torch.save(small_rmac[0].backbone.state_dict(), resnet)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(resnet.read_bytes()[:100_000])
    expected = {integers: r"integers.pth: its state_dict entry 0 is not a tensor named by a string",
                array: r"features.npy: a numpy array file \(.npy\), not a torch checkpoint",
                resnet: r"resnet.pth: not a model checkpoint this code knows",
                cut: r"cut.pth: not a readable checkpoint, truncated",
                tmp_path / "nothere.pth": r"nothere.pth not found"}
    for path, message in expected.items():
        with pytest.raises(InputError, match=message):
            load_model(path)
    with pytest.raises(InputError, match=r"features.npy: a numpy array file"):
        load_token(array)


def test_a_baseline_is_not_a_token(small_rmac):
    model, folder = small_rmac
    path = folder / "rmac.pth"
    torch.save(model_state(model), path)
    with pytest.raises(InputError, match=r"rmac.pth: its model_config cannot be used: .*'rmac' model, not a 'token'"):
        load_token(path)


# ---------------------------------------------------------------- training and our checkpoints


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_baseline_trains_and_round_trips_through_our_checkpoint(tmp_path, name):
    torch.manual_seed(0)
    config = CONFIGS[name](backbone="resnet18", **({"dim": 32, "heads": 4} if name == "netvlad" else {"out_dim": 32}))
    model = build_model(config, num_classes=5, pretrained=False).train()
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    loss, logits = model(images, labels)
    assert torch.isfinite(loss) and logits.shape == (4, 5)
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
    path = tmp_path / "ours.pth"
    torch.save(model_state(model.eval()), path)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == config
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    torch.testing.assert_close(loaded.forward_test(images), model.forward_test(images))


def test_delg_loss_is_the_sum_of_both_heads_and_the_local_branch_leaves_the_trunk_alone():
    torch.manual_seed(0)
    model = DELG(backbone="resnet18", out_dim=16, local_dim=8, num_classes=3, pretrained=False).train()
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    loss, _ = model(images, labels)
    assert set(model.loss_parts) == {"global", "local"}
    torch.testing.assert_close(loss.detach(), model.loss_parts["global"] + model.loss_parts["local"])
    torch.autograd.backward(model.local.arcface(model.local(model.backbone.forward_layers(images)[0].detach()),
                                                labels).sum())
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.local.reduction.weight.grad is not None


def test_netvlad_trunk_stays_frozen_in_training():
    model = NetVLAD(backbone="resnet18", dim=32, heads=4, num_classes=3, pretrained=False).train()
    assert model.frozen_backbone and not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training and model.lfsa.training
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))[0].backward()
    torch.testing.assert_close(model.backbone.bn1.running_mean, before)
    assert model.input_proj[0].weight.grad is not None


# ---------------------------------------------------------------- the pooling math by hand


def test_rmac_regions_and_pooling_by_hand():
    assert rmac_regions(4, 4, levels=2) == [(0, 0, 4), (0, 0, 2), (0, 2, 2), (2, 0, 2), (2, 2, 2)]
    # 3 x 5: side 3, b_s = 2 / (s - 1); |(9 - 3 b_s) / 9 - 0.4| is smallest at s = 2: one extra column, 2 apart
    assert rmac_regions(3, 5, levels=1) == [(0, 0, 3), (0, 2, 3)]
    x = torch.rand(2, 4, 3, 5)
    unit = lambda v: v / (v.norm(dim=1, keepdim=True) + 1e-6)  # noqa: E731
    expected = unit(x.amax(dim=(2, 3))) + sum(unit(x[:, :, :, j:j + 3].amax(dim=(2, 3))) for j in (0, 2))
    torch.testing.assert_close(rmac(x, levels=1), expected)


def test_second_order_attention_by_hand():
    torch.manual_seed(0)
    block = SecondOrderAttention(8).eval()
    torch.nn.init.normal_(block.v.weight)
    x = torch.randn(2, 8, 3, 4)
    f, g, h = (m(x).flatten(2) for m in (block.f, block.g, block.h))  # (B, 4, N)
    z = torch.zeros(2, 4, 12)
    for n in range(12):
        weights = torch.softmax(torch.einsum("bc,bcm->bm", f[:, :, n], g) / 2.0, dim=-1)
        z[:, :, n] = torch.einsum("bm,bcm->bc", weights, h)
    torch.testing.assert_close(block(x), block.v(z.reshape(2, 4, 3, 4)) + x)


def test_vlad_by_hand():
    x, c = torch.randn(2, 5, 3), torch.randn(3, 4)
    out = vlad(x, c)
    for k in range(4):
        a = torch.softmax(x @ c, dim=-1)[:, :, k]
        torch.testing.assert_close(out[:, k], (a[:, :, None] * (x - c[:, k])).sum(dim=1))


def test_gem_of_deep_image_retrieval_is_learned_and_mac_is_the_maximum():
    gem, mac = APGeM(backbone="resnet18", pretrained=False), APGeM(backbone="resnet18", pooling="mac", pretrained=False)
    assert gem.pool.p.requires_grad and not any("pool" in k for k in mac.state_dict())
    x = torch.rand(2, 6, 4)
    torch.testing.assert_close(mac.pool(x), x.amax(dim=1))
    torch.testing.assert_close(gem.pool(x), x.pow(3).mean(dim=1).pow(1 / 3))


def test_a_released_name_is_found_in_the_models_folder_or_told_how_to_fetch(small_rmac, tmp_path):
    model, _ = small_rmac
    torch.save(model.state_dict(), tmp_path / "R101-RMAC.pth")  # the released layout is read from any depth
    loaded = load_model("R101-RMAC", models_dir=tmp_path)
    assert isinstance(loaded, RMAC)
    images = torch.randn(1, 3, 64, 48)
    torch.testing.assert_close(loaded.forward_test(images), model.forward_test(images))
    with pytest.raises(InputError, match="python -m datasets.download models R101-SOLAR --dest"):
        load_model("R101-SOLAR", models_dir=tmp_path)
    with pytest.raises(InputError, match="R101-HOW"):
        load_token("R101-Tokn", models_dir=tmp_path)
