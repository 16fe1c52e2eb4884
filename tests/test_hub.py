"""hubconf.py through torch.hub.load on this clone (source='local'), the weights from a local HTTP server standing in
for Google Drive: a small R-MAC (resnet18 trunk) in the released layout plays R101-RMAC's file."""

import hashlib
import importlib.util
import io

import pytest
import torch

from networks import HOW, RMAC, Token, build_model
from networks.config import config_from_dict
from tests.conftest import ROOT
from tests.http_server import Server
from tests.released import released_keys, released_names
from utils.errors import InputError
from weights import released, zoo
from weights.checkpoint import check_fits
from weights.hub import load_released

RMAC_RELEASE = zoo.RELEASED["R101-RMAC"]
PATH = f"/uc?id={RMAC_RELEASE.drive_id}"
NAMES = {"token_r50", "token_r101", "netvlad_r101", "rmac_r101", "solar_r101", "delg_r101", "how_r101", "tl_mac_r101",
         "tl_gem_r101", "ap_gem_r50", "ap_gem_r101", "ap_gem_lm18_r101"}


def hub_load(name, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", **kwargs)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # set_dir's setting, put back after the test
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def small_rmac():
    torch.manual_seed(0)
    model = RMAC(backbone="resnet18", out_dim=8, pretrained=False).eval()
    buffer = io.BytesIO()
    torch.save(released_names(model.state_dict()), buffer)  # a plain state_dict in the released names
    return model, buffer.getvalue()


@pytest.fixture
def server(small_rmac):
    srv = Server({PATH: small_rmac[1]})
    yield srv
    srv.close()


def test_torch_hub_lists_one_entry_per_loadable_release():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # torch.hub.list's rule: the module's public callables
    assert {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")} == NAMES
    assert {release.hub_name for release in zoo.RELEASES} == NAMES
    assert all(importlib.util.find_spec(package) for package in hubconf.dependencies)
    assert "R101-RMAC" in hubconf.rmac_r101.__doc__ and all(name in hubconf.__doc__ for name in NAMES)


def test_without_pretrained_the_architecture_in_eval_mode_and_no_download(hub_dir):
    model = hub_load("token_r50", pretrained=False)
    assert isinstance(model, Token) and not model.training and model.config == zoo.RELEASED["R50-Token"].config
    assert model.config.backbone == "resnet50" and model.arcface is None
    assert not hub_dir.exists()


@pytest.mark.parametrize("release, keys", [("R50-Token", ("token", 50)), ("R101-Token", ("token", 101)),
                                           ("R101-RMAC", ("rmac", 101)), ("R101-SOLAR", ("solar", 101)),
                                           ("R101-DELG", ("delg", 101)), ("R101-NetVLAD", ("netvlad", 101)),
                                           ("R101-AP-GeM", ("apgem", 101))])
def test_a_release_config_builds_the_architecture_of_its_file(release, keys):
    name, depth = keys
    rename = released.dirtorch_to_ours if name == "apgem" else released.released_to_ours
    with torch.device("meta"):
        state = {rename(key): torch.empty(shape) for key, shape in released_keys(depth, name)}
        state = released.dirtorch_shapes(state)
        config = config_from_dict(released.infer_config(state, release))
        assert config == zoo.RELEASED[release].config
        classes = state["arcface.weight"].shape[0] if "arcface.weight" in state else None
        check_fits(build_model(config, num_classes=classes, pretrained=False), state, {}, release)


def test_released_weights_download_once_into_the_hub_cache(server, hub_dir, small_rmac):
    source, data = small_rmac
    model = hub_load("rmac_r101", base_url=server.url)
    assert isinstance(model, RMAC) and not model.training and model.config.backbone == "resnet18"
    images = torch.randn(2, 3, 64, 48)
    torch.testing.assert_close(model.forward_test(images), source.forward_test(images))
    cached = hub_dir / RMAC_RELEASE.file
    assert cached.read_bytes() == data
    assert (hub_dir / f"{RMAC_RELEASE.file}.sha256").read_text().split() == [hashlib.sha256(data).hexdigest(),
                                                                              RMAC_RELEASE.file]
    requests = len(server.requests)
    hub_load("rmac_r101", base_url=server.url)
    assert len(server.requests) == requests


def test_a_corrupted_cache_is_fetched_again_and_a_bad_answer_is_one_line(server, hub_dir, small_rmac, capsys):
    load_released("R101-RMAC", base_url=server.url)
    cached = hub_dir / RMAC_RELEASE.file
    cached.write_bytes(small_rmac[1][:-100] + b"\0" * 100)  # damaged in place: its SHA-256 no longer matches
    assert isinstance(load_released("R101-RMAC", base_url=server.url), RMAC)
    assert cached.read_bytes() == small_rmac[1] and "downloading it again" in capsys.readouterr().out

    cached.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    server.files[PATH] = b"PK\x03\x04" + b"x" * 100  # the published file is not the one first downloaded either
    with pytest.raises(InputError, match="again differs") as differs:
        load_released("R101-RMAC", base_url=server.url)

    cached.unlink()
    (hub_dir / f"{RMAC_RELEASE.file}.sha256").unlink()
    server.files[PATH] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    with pytest.raises(InputError, match="an HTML page") as html:
        load_released("R101-RMAC", base_url=server.url)
    assert "\n" not in str(differs.value) + str(html.value) and not cached.exists()


def test_how_r101_is_hows_r101_architecture_and_an_unknown_name_is_refused(hub_dir):
    model = load_released("R101-HOW", pretrained=False)
    assert isinstance(model, HOW) and model.config.backbone == "resnet101" and model.config.skip_layer == 1
    assert not hub_dir.exists()
    with pytest.raises(InputError, match="'R18-Token' is not a released model"):
        load_released("R18-Token", pretrained=False)
