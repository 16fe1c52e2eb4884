"""HOW against the goldens made by HOW's own code (docs/FACTS.md, "HOW", "Golden data of HOW"), and every checkpoint
layout of HOW read into the same model.

The goldens' weights are not shipped: ``golden_weights`` makes them by the fill rule (a seeded normal per key), which
the files' per-key sums check. Runs in float64 on images of about 112 px, k = 60 features.
"""

import collections
import math

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.revisitop import resize_database, resize_query
from networks import HOW, HOWConfig, build_model
from networks.config import config_from_dict
from tests.conftest import DATA
from utils.errors import InputError
from weights import load_model, zoo
from weights.checkpoint import check_fits, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

GOLDENS = {"r50": "resnet50", "r18": "resnet18"}
RUNS = ("a", "b", "q")


def golden_weights(model, seed_base, residual_gain):
    """The goldens' fill rule: key t of the state_dict in order draws u ~ N(0, 1) in float64 from seed
    ``seed_base + t``; stored as float32."""
    closing = "bn3" if model.config.backbone in ("resnet50", "resnet101") else "bn2"  # the BN ending a residual branch
    state = {}
    for t, (key, value) in enumerate(model.state_dict().items()):
        u = torch.randn(value.shape, generator=torch.Generator().manual_seed(seed_base + t), dtype=torch.float64)
        if key.endswith("num_batches_tracked"):
            x = torch.zeros(value.shape)
        elif key.endswith("running_mean"):
            x = 0.1 * u
        elif key.endswith("running_var"):
            x = 1 + 0.25 * u**2
        elif value.ndim >= 2:
            x = u * math.sqrt(2 / math.prod(value.shape[1:]))
        elif key.endswith(f"{closing}.weight"):
            x = (1 + 0.1 * u) * residual_gain
        elif key.endswith("weight"):
            x = 1 + 0.1 * u
        else:
            x = 0.1 * u
        state[key] = x.to(value.dtype)
    return state


@pytest.fixture(scope="module", params=sorted(GOLDENS))
def golden(request):
    """(golden arrays, the float64 HOW filled by their rule, the state_dict as stored)."""
    g = dict(np.load(DATA / f"golden-how-{request.param}.npz"))
    model = HOW(backbone=GOLDENS[request.param], skip_layer=int(g["skip_layer"]), pretrained=False).eval()
    state = golden_weights(model, int(g["weight_seed_base"]), float(g["residual_gain"]))
    model.load_state_dict(state)
    return g, model.double(), state


def inputs(g):
    """The three runs' resized PIL images: a and b database images, q image a cropped to the query box."""
    imsize = int(g["imsize"])
    image_a, image_b = Image.fromarray(g["image_a"]), Image.fromarray(g["image_b"])
    return {"a": resize_database(image_a, imsize), "b": resize_database(image_b, imsize),
            "q": resize_query(image_a, tuple(g["bbx"]), imsize)}


def tensor(g, image):
    """(uint8 / 255 - mean) / std in float64, (1, 3, H, W), as the goldens' input."""
    mean, std = g["mean_std"]
    return torch.from_numpy(((np.asarray(image) / 255.0 - mean) / std).transpose(2, 0, 1).copy())[None]


def test_the_weights_are_the_goldens(golden):
    g, model, state = golden
    assert list(state) == list(g["state_keys"])
    sums = [[float(v.double().sum()), float(v.double().abs().sum())] for v in state.values()]
    np.testing.assert_allclose(sums, np.stack([g["state_sum"], g["state_abssum"]], 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.dim_reduction.weight.detach().numpy(), g["dim_reduction_weight"])
    np.testing.assert_array_equal(model.dim_reduction.bias.detach().numpy(), g["dim_reduction_bias"])


def test_resizing_and_cropping_give_the_goldens_pixels(golden):
    g = golden[0]
    for run, image in inputs(g).items():
        np.testing.assert_array_equal(np.asarray(image), g[f"input_{run}_uint8"], err_msg=run)


@pytest.mark.parametrize("run", RUNS)
def test_local_features_global_descriptor_and_attention_maps_match(golden, run):
    g, model, _ = golden
    x = tensor(g, inputs(g)[run])
    scales = tuple(g["scales"])
    with torch.no_grad():
        found = model.forward_local(x, scales, int(g["k"]))
        maps = [attention for attention, _ in model.scale_maps(x, scales)]
        descriptor = model.forward_test(x)[0]
    assert len(found.descriptors) == len(g[f"{run}_desc"]) == min(int(g["k"]), sum(m.numel() for m in maps))
    assert found.descriptors.dtype == found.attentions.dtype == found.scales.dtype == torch.float64
    assert found.locations.dtype == torch.int64
    np.testing.assert_allclose(found.descriptors.numpy(), g[f"{run}_desc"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(found.attentions.numpy(), g[f"{run}_att"], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(found.locations.numpy(), g[f"{run}_loc"])
    np.testing.assert_array_equal(found.scales.half().double().numpy(), g[f"{run}_scale"])  # HOW stores float16
    raw_max = max(m.max() for m in maps)
    assert float(raw_max) == pytest.approx(float(g[f"{run}_att_rawmax"]), rel=1e-12)
    np.testing.assert_array_equal([m.shape for m in maps], g[f"{run}_map_hw"])
    for i, m in enumerate(maps):
        np.testing.assert_allclose((m / raw_max).numpy(), g[f"{run}_attmap_{i}"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(descriptor.numpy(), g[f"{run}_global"], rtol=0, atol=1e-10)


def test_fewer_features_than_asked_and_ties_in_concatenation_order():
    model = HOW(backbone="resnet18", skip_layer=0, pretrained=False).eval()
    with torch.no_grad():
        found = model.forward_local(torch.zeros(1, 3, 64, 64), (1.0, 0.5), 100)
    # a blank image: every location has the same attention, so the order is the concatenation's
    assert len(found.attentions) == 2 * 2 + 1 and torch.equal(found.attentions, torch.ones(5))
    assert found.locations.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1], [0, 0]]
    assert found.scales.tolist() == [1.0] * 4 + [0.5]


# ---------------------------------------------------------------- checkpoint layouts


@pytest.fixture(scope="module")
def small_how():
    torch.manual_seed(0)
    model = HOW(backbone="resnet18", skip_layer=0, pretrained=False).eval()
    for p in model.parameters():  # random reduction and BatchNorm too, so that a key mixed up shows
        p.data.normal_(0, 0.05)
    return model


def new_format(model):
    """A file as HOW's training code writes it (its epoch-0 save)."""
    config = model.config
    scores = collections.defaultdict(list)
    scores["val_eccv20_mAP"].append(0.42)
    return {"epoch": 0, "meta": {"architecture": config.backbone, "backbone_dim": model.channels, "outputdim": 128,
                                 "corercf_size": 32},
            "state_dict": model.state_dict(),
            "optimizer": torch.optim.Adam(model.features.parameters()).state_dict(),
            "scheduler": {"gamma": 0.99, "last_epoch": 0}, "best_score": None, "scores": scores,
            "net_params": {"architecture": config.backbone, "pretrained": True, "skip_layer": config.skip_layer,
                           "dim_reduction": {"dim": 128}, "smoothing": {"kernel_size": 3},
                           "runtime": {"mean_std": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],
                                       "image_size": 1024, "features_num": 1000,
                                       "scales": [2.0, 1.414, 1.0, 0.707, 0.5, 0.353, 0.25], "training_scales": [1]}},
            "_version": "how/2020"}


def old_format(model):
    """HOW's older layout: meta with the architecture, the reduction named whiten."""
    state = {key.replace("dim_reduction.", "whiten."): value for key, value in model.state_dict().items()}
    return {"meta": {"architecture": model.config.backbone, "skip_layer": model.config.skip_layer, "dim": 128,
                     "feat_pool_k": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "state_dict": state}


def token_style(model):
    """The Token repository's trunk names: features.0, 1, 4, 5, 6, 7 as backbone.block1.0, block1.1, block2..5."""
    names = {"0": "block1.0", "1": "block1.1", "4": "block2", "5": "block3", "6": "block4", "7": "block5"}
    return {(f"backbone.{names[key.split('.')[1]]}.{key.split('.', 2)[2]}" if key.startswith("features.") else key):
            value for key, value in model.state_dict().items()}


LAYOUTS = {"new": new_format, "old": old_format, "bare": lambda m: m.state_dict(),
           "module": lambda m: {f"module.{k}": v for k, v in m.state_dict().items()},
           "wrapped-whiten": lambda m: {"epoch": 3, "state_dict": old_format(m)["state_dict"]},
           "token-style": token_style}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_loads_the_same_model(small_how, tmp_path, layout):
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](small_how), path)
    model = load_model(path)
    assert isinstance(model, HOW) and not model.training and model.config == small_how.config
    for key, value in small_how.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    image = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_local(image, (1.0, 0.5), 10),
                                   small_how.forward_local(image, (1.0, 0.5), 10))


def test_skip_layer_and_architecture_are_read_off_the_keys(tmp_path):
    rows = (DATA / "released-how-r50-keys.tsv").read_text().split("\n\n")[0].splitlines()[1:]  # then the fields
    with torch.device("meta"):
        state = {key: torch.empty(() if shape == "scalar" else tuple(map(int, shape.split("x"))),
                                  dtype=getattr(torch, dtype)) for key, shape, dtype in map(str.split, rows)}
    assert len(state) == 260
    for key in ("features.7.0.conv1.weight", "features.6.22.conv1.weight"):
        assert key not in state
    _, settings, _, _ = read_checkpoint_of(tmp_path, state)
    assert config_from_dict(settings) == HOWConfig(backbone="resnet50", skip_layer=1)
    with torch.device("meta"):
        check_fits(build_model(config_from_dict(settings), pretrained=False), state, {}, "R50")
        r34 = HOW(backbone="resnet34", skip_layer=0, out_dim=64, pretrained=False).state_dict()
    _, settings, _, _ = read_checkpoint_of(tmp_path, {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in r34.items()})
    assert config_from_dict(settings) == HOWConfig(backbone="resnet34", skip_layer=0, out_dim=64)


def read_checkpoint_of(folder, state):
    path = folder / "state.pth"
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype, device="cpu") for k, v in state.items()}, path)
    return read_checkpoint(path)


def test_an_unknown_layout_names_its_top_level_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"net": {"conv.weight": torch.zeros(2)}, "opt": {}, "epoch": 1}, path)
    with pytest.raises(InputError, match=r"other.pth: not a model checkpoint this code knows: .* HOW '_version', "
                                         r"'meta' or 'features.\*'\); its top-level keys: 'net', 'opt', 'epoch'$"):
        load_model(path)


def test_only_hows_defaultdict_of_lists_is_admitted(small_how, tmp_path):
    path = tmp_path / "other.pth"
    obj = new_format(small_how)
    obj["scores"] = collections.defaultdict(collections.OrderedDict, {"x": collections.OrderedDict()})
    torch.save(obj, path)
    with pytest.raises(InputError, match=r"other.pth: refused.*defaultdict of <class .collections.OrderedDict.>"):
        load_model(path)


def test_released_name_offline_says_how_to_fetch_it(tmp_path):
    with pytest.raises(InputError) as missing:
        load_model("R101-HOW", tmp_path)
    assert str(missing.value) == (
        f"{tmp_path / 'R101-HOW.pth'} not found: expected the released R101-HOW checkpoint from "
        f"{zoo.RELEASED['R101-HOW'].address}; fetch it with: python -m datasets.download models R101-HOW "
        f"--dest {tmp_path}")
    assert zoo.RELEASED["R101-HOW"].config == HOWConfig(backbone="resnet101", skip_layer=1, out_dim=128)
