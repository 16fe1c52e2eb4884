"""Checkpoints and pickles that must not be used (``tests/faults.py`` indexes every fault): ones that would run
code, ones of another depth or model, truncated ones."""

import pickle

import pytest
import torch

from datasets.gldv2 import load_gldv2
from networks import Token
from training.checkpointer import load_training_state
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError
from weights import load_token, save_checkpoint


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
