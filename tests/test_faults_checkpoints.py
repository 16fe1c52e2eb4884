"""Checkpoints and pickles that must not be used (``tests/faults.py`` indexes every fault): ones that would run
code, ones of another depth or model, truncated ones."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.gldv2 import load_gldv2
from networks import Token
from training.checkpointer import load_training_state
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError
from weights import load_model, load_token, save_checkpoint


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never be printed",))


# ---------------------------------------------------------------- code-running pickles and checkpoints


def test_resume_checkpoint_and_split_cache_that_would_run_code_are_refused(gldv2, tmp_path, capsys):
    evil = tmp_path / "last.pth"
    torch.save({"step": 1, "payload": _RunsCode()}, evil)
    with pytest.raises(InputError, match="last.pth: refused to load"):
        load_training_state(evil)

    cache = tmp_path / "cache"
    load_gldv2(gldv2, cache_dir=cache)
    with open(cache / "GLDv2-clean-train-split.pkl", "wb") as f:
        pickle.dump({"settings": _RunsCode()}, f)
    with pytest.raises(UnsafePickleError, match="GLDv2-clean-train-split.pkl: refuses to load builtins.print"):
        load_gldv2(gldv2, cache_dir=cache)
    assert "never" not in capsys.readouterr().out


# ---------------------------------------------------------------- checkpoints that do not fit


def test_checkpoint_of_another_depth_or_model_or_truncated_names_what_does_not_fit(tmp_path):
    torch.manual_seed(0)
    model = Token(backbone="resnet18", dim=32, out_dim=32, heads=4, pretrained=False)
    other_depth = tmp_path / "depth.pth"
    torch.save({"state_dict": model.state_dict(), "model_config": {**model.config.to_dict(), "backbone": "resnet34"}},
               other_depth)
    with pytest.raises(InputError, match=r"depth.pth does not fit Token\(resnet34\): missing key 'backbone.layer1.2"):
        load_token(other_depth)

    resnet = tmp_path / "resnet.pth"
    torch.save(model.backbone.state_dict(), resnet)  # a plain CNN, not a Token
    with pytest.raises(InputError, match="resnet.pth: not a Token checkpoint, no key 'input_proj.0.weight'"):
        load_token(resnet)

    full = tmp_path / "full.pth"
    save_checkpoint({"step": 3, "state_dict": model.state_dict()}, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.pth: not a readable checkpoint, truncated"):
        load_training_state(cut)
    with pytest.raises(InputError, match="full.pth: not a train.py checkpoint to resume from, no steps_per_epoch"):
        load_training_state(full)


# ---------------------------------------------------------------- model_config values, tensor kinds, non-regular files


@pytest.fixture(scope="module")
def small_token():
    torch.manual_seed(0)
    return Token(backbone="resnet18", dim=32, out_dim=32, heads=4, pretrained=False)


@pytest.mark.parametrize("setting, value, message", [
    ("dim", True, "dim must be an integer of at most 65536, got True"),
    ("dim", 2.5, "dim must be an integer of at most 65536, got 2.5"),
    ("dim", 10**9, "dim must be an integer of at most 65536, got 1000000000"),
    ("num_tokens", -1, "num_tokens must be positive, got -1"),
    ("dropout", 1j, "dropout must be a finite number, got 1j"),
    ("dropout", float("nan"), "dropout must be a finite number, got nan"),
    ("cross_attention", 0, "cross_attention must be a bool, got 0"),
    ("backbone", ["resnet18"], "backbone must be a str, got \\['resnet18'\\]"),
])
def test_model_config_of_wrong_type_or_absurd_size_is_one_line_naming_file_and_key(tmp_path, small_token, setting,
                                                                                 value, message):
    path = tmp_path / "tok.pth"
    torch.save({"state_dict": small_token.state_dict(),
                "model_config": {**small_token.config.to_dict(), setting: value}}, path)
    for load in (load_model, load_token):
        with pytest.raises(InputError, match=f"tok.pth: its model_config cannot be used: {message}") as err:
            load(path)
        assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("make, message", [
    (lambda t: t.long(), "key 'input_proj.0.weight' is a torch.int64 tensor, the model expects floating-point"),
    (lambda t: t.to(torch.complex64), "tensor 'input_proj.0.weight' is a complex tensor"),
    (lambda t: torch.empty_like(t, device="meta"), "tensor 'input_proj.0.weight' is a meta tensor"),
    (lambda t: t.to_sparse(), "tensor 'input_proj.0.weight' is a sparse_coo tensor"),
], ids=["integer", "complex", "meta", "sparse"])
def test_state_dict_tensor_of_the_wrong_kind_is_one_line_naming_file_and_key(tmp_path, small_token, make, message):
    state = small_token.state_dict()
    state["input_proj.0.weight"] = make(state["input_proj.0.weight"])
    path = tmp_path / "tok.pth"
    torch.save({"state_dict": state, "model_config": small_token.config.to_dict()}, path)
    for load in (load_model, load_token):
        with pytest.raises(InputError, match=f"tok.pth.*{message}") as err:
            load(path)
        assert "\n" not in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_checkpoint_that_is_a_fifo_or_a_folder_is_refused_at_once(tmp_path):
    """A FIFO with no writer: opening it to read would wait forever. The load runs in a child process with a
    deadline, so a hang fails the test instead of stopping pytest."""
    fifo = tmp_path / "tok.pth"
    os.mkfifo(fifo)
    (tmp_path / "folder.pth").mkdir()
    code = ("import sys\nfrom utils.errors import InputError\nfrom weights import load_model\n"
            "for path in sys.argv[1:]:\n    try:\n        load_model(path)\n    except InputError as err:\n"
            "        print(err)\n")
    out = subprocess.run([sys.executable, "-c", code, str(fifo), str(tmp_path / "folder.pth")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.splitlines() == [
        f"{fifo} is a FIFO; expected a model checkpoint (.pth, or a deep-image-retrieval .pt) (only regular files "
        "are read)",
        f"{tmp_path / 'folder.pth'} is a folder; expected a model checkpoint (.pth, or a deep-image-retrieval .pt) "
        "(only regular files are read)"]
