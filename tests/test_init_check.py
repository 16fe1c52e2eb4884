"""experiments.init_check on generated DELG files: a fresh one is judged at its initialisation (PyTorch's default
for the local convolutions, Xavier uniform for the ArcFace head), Xavier draws as Xavier, trained weights as no
initialisation, the released layout is read, and bad input is one error line with exit code 2."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from experiments.init_check import ALPHA, WEIGHT_HYPOTHESES, check_tensor, fans, hypothesis_tests, main
from networks.delg import DELG
from networks.rmac import RMAC
from tests.conftest import ROOT
from tests.released import baseline_state_dict, released_names
from weights import model_state

pytestmark = pytest.mark.usefixtures("one_thread")
LOCAL = ("local.attention.weight", "local.reduction.weight", "local.reduction.bias")


@pytest.fixture(scope="module")
def fresh():
    """A freshly built small DELG (resnet18: 256-channel layer3, local branch 1 x 256 and 128 x 256) with a 7-class
    head."""
    torch.manual_seed(0)
    return DELG(backbone="resnet18", out_dim=64, pretrained=False, num_classes=7)


def saved(model, path, state=None):
    torch.save(state if state is not None else model_state(model), path)
    return str(path)


def copy_of(model):
    other = DELG(model.config, pretrained=False, num_classes=7)
    other.load_state_dict(model.state_dict())
    return other


def test_a_fresh_delg_is_at_its_initialisation(fresh, tmp_path, capsys):
    # LocalAttention's convolutions are plain nn.Conv2d: PyTorch's default initialisation
    assert type(fresh.local.attention) is nn.Conv2d and type(fresh.local.reduction) is nn.Conv2d
    results = main([saved(fresh, tmp_path / "fresh.pth"), "--json", str(tmp_path / "new" / "fresh.json")])
    assert list(results) == [*LOCAL, "local.arcface.weight"]
    for name in LOCAL:
        assert results[name]["initialisation"] == "PyTorch default", results[name]["verdict"]
        assert results[name]["verdict"].startswith("consistent with PyTorch default initialisation (KS p=")
    assert results["local.arcface.weight"]["initialisation"] == "Xavier uniform"  # ArcFace's nn.init.xavier_uniform_
    assert results["local.attention.weight"]["shape"] == [1, 256, 1, 1]
    assert (results["local.reduction.weight"]["fan_in"], results["local.reduction.weight"]["fan_out"]) == (256, 128)
    out = capsys.readouterr().out
    assert "verdict: consistent with PyTorch default initialisation" in out and "rejected" in out
    assert (tmp_path / "new" / "fresh.json").read_text().count('"initialisation": "PyTorch default"') == 3


def test_xavier_draws_are_judged_xavier(fresh, tmp_path):
    model = copy_of(fresh)
    torch.manual_seed(1)
    nn.init.xavier_uniform_(model.local.attention.weight.data)
    nn.init.xavier_uniform_(model.local.reduction.weight.data)
    nn.init.zeros_(model.local.reduction.bias.data)
    results = main([saved(model, tmp_path / "xavier.pth"), "--layers", "local.attention", "local.reduction"])
    assert [results[name]["initialisation"] for name in LOCAL] == ["Xavier uniform", "Xavier uniform", "zero"]
    assert results["local.reduction.weight"]["verdict"].startswith("consistent with Xavier uniform initialisation")


def test_trained_weights_are_no_initialisation(fresh, tmp_path, capsys):
    model = copy_of(fresh)
    params = [p for name, p in model.named_parameters() if name in LOCAL]
    targets = [0.05 + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for _ in range(200):  # pulled towards the targets, as a loss would pull them
        optimizer.zero_grad()
        sum(((p - t) ** 2).sum() for p, t in zip(params, targets, strict=True)).backward()
        optimizer.step()
    results = main([saved(model, tmp_path / "trained.pth")])
    for name in LOCAL:
        assert results[name]["initialisation"] is None
        assert results[name]["verdict"] == "not an initialisation of these kinds (moved by training?)"
    assert results["local.arcface.weight"]["initialisation"] == "Xavier uniform"  # not trained here
    assert capsys.readouterr().out.count("verdict: not an initialisation") == 3


def test_the_released_layout_is_read(fresh, tmp_path):
    state = released_names(fresh.state_dict())
    assert {"attention.att_conv1.weight", "reduction.weight", "reduction.bias", "classifier_block4.weight"} \
        <= set(state)
    path = saved(fresh, tmp_path / "released.pth", state)
    results = main([path])
    assert [results[name]["initialisation"] for name in LOCAL] == ["PyTorch default"] * 3
    # --layers also takes the released names
    assert list(main([path, "--layers", "reduction", "attention.att_conv1"])) == [*LOCAL[1:], LOCAL[0]]


def test_the_released_r101_delg_layout(tmp_path):
    # the golden rule of the baselines (tests/released.py): weights N(0, 2/fan_in), biases 0.01 N(0, 1), in the
    # released R101-DELG's keys and shapes (local branch 1 x 1024 and 128 x 1024, head 97 x 128)
    results = main([saved(None, tmp_path / "r101.pth", baseline_state_dict("delg", 101))])
    assert results["local.attention.weight"]["shape"] == [1, 1024, 1, 1]
    for name in ("local.attention.weight", "local.reduction.weight", "local.arcface.weight"):
        assert "consistent with Kaiming normal (fan_in) initialisation" in results[name]["verdict"]
    assert results["local.reduction.bias"]["initialisation"] is None


def test_the_statistics():
    assert fans((128, 1024, 1, 1)) == (1024, 128) and fans((7, 3, 3, 3)) == (27, 63)
    default = WEIGHT_HYPOTHESES[0]  # U(-b, b), b = 1/sqrt(fan_in): 1 for fan_in 1
    # three values at the quartiles' midpoints of U(-1, 1): F = 0.25, 0.5, 0.75, so D = 0.25, far from rejected
    test = hypothesis_tests(torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64), default, 1, 1)
    assert test["ks_d"] == pytest.approx(0.25) and test["consistent"]
    # 1,000 values spread over U(0, 1) only: half the distribution missing, D = 0.5, the KS test rejects it
    test = hypothesis_tests(torch.linspace(0.0005, 0.9995, 1000, dtype=torch.float64), default, 1, 1)
    assert test["ks_d"] == pytest.approx(0.5, abs=1e-3) and test["ks_p"] < ALPHA and not test["consistent"]
    result = check_tensor(torch.full((4, 8), 0.1), 8, 4)  # within the default's bound, but all one value
    assert result["initialisation"] is None and result["max_abs"] == pytest.approx(0.1)


def error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err


def test_bad_input_is_one_error_line(fresh, tmp_path, capsys):
    path = saved(fresh, tmp_path / "fresh.pth")
    assert "no parameter of" in error_line([path, "--layers", "local.nothing"], capsys)
    assert "nothing to test" in error_line([path, "--layers", "backbone.bn1"], capsys)  # BatchNorm only
    torch.manual_seed(0)
    rmac = saved(RMAC(backbone="resnet18", out_dim=64, pretrained=False), tmp_path / "rmac.pth")
    assert "is not a DELG; name the layers to check with --layers" in error_line([rmac], capsys)
    assert "whiten.weight" in main([rmac, "--layers", "whiten"])
    assert "--json" in error_line([path, "--json", f"{path}/r.json"], capsys)  # checked before any work
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in error_line([str(tmp_path / "bad.pth")], capsys)
    done = subprocess.run([sys.executable, "-m", "experiments.init_check", str(tmp_path / "missing.pth")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'missing.pth'} not found: expected a model " \
                                                   "checkpoint file\n"
