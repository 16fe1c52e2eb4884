"""training.checkpointer: what train.py's Checkpointer writes, on which rank, and when it refuses to."""

import argparse
import math

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from networks import RMAC
from training.checkpointer import BEST, LAST, Checkpointer, find_resume, load_training_state
from training.engine import Diverged
from utils.distributed import DistEnv
from utils.errors import InputError
from weights import load_model

CPU = torch.device("cpu")


def checkpointer(tmp_path, rank=0):
    torch.manual_seed(0)
    model = RMAC(backbone="resnet18", out_dim=8, num_classes=3, pretrained=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler, scaler = LambdaLR(optimizer, lambda step: 1.0), torch.amp.GradScaler("cpu", enabled=False)
    return Checkpointer(tmp_path, model, optimizer, scheduler, scaler, argparse.Namespace(lr=0.1),
                        DistEnv(rank, 2, CPU), steps_per_epoch=4)


def test_last_holds_the_run_and_best_follows_it_when_told(tmp_path):
    saver = checkpointer(tmp_path)
    saver.save(2, totals={"images": 8})
    state = load_training_state(tmp_path / LAST)
    assert (state["step"], state["epoch"], state["epoch_totals"], state["best_top1_err"]) == (2, 0, {"images": 8},
                                                                                             math.inf)
    assert not (tmp_path / BEST).exists()
    saver.best_top1_err = 12.5
    saver.save(4, is_best=True)
    best = load_training_state(tmp_path / BEST)
    assert (best["step"], best["epoch"], best["best_top1_err"], best["epoch_totals"]) == (4, 1, 12.5, {})
    assert (tmp_path / BEST).read_bytes() == (tmp_path / LAST).read_bytes()
    assert isinstance(load_model(tmp_path / BEST), RMAC)
    assert find_resume("auto", tmp_path) == tmp_path / LAST and find_resume(None, tmp_path) is None


def test_only_the_main_process_writes_and_none_writes_non_finite_weights(tmp_path):
    checkpointer(tmp_path, rank=1).save(4, is_best=True)
    assert not list(tmp_path.iterdir())
    for rank in (0, 1):
        saver = checkpointer(tmp_path, rank)
        with torch.no_grad():
            saver.model.whiten.weight[0, 0] = math.nan
        with pytest.raises(Diverged, match="after step 3"):
            saver.save(3)
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="--resume nothing.pth: not found"):
        find_resume("nothing.pth", tmp_path)
