"""train.py end to end on generated GLDv2-format sets: DDP under torchrun, resume, faults, learning.

Runs use a tiny Token (ResNet-18 from scratch, d = 64, 64 px) on the CPU with --workers 0, so a resumed run
can be compared with an uninterrupted one number for number.
"""

import itertools
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import train
import training.checkpointer
import training.run
from datasets.gldv2 import GLDV2_DIR, LandmarkImages, collate_skip_bad, image_path, load_gldv2
from datasets.transforms import val_transform
from networks import Token
from tests.conftest import ROOT
from training.checkpointer import load_training_state
from training.engine import validate
from training.optim import lr_factor
from training.options import get_args_parser
from utils.distributed import DistEnv, ShardSampler, TrainSampler
from utils.errors import EXIT_DIVERGED
from utils.training_log import read_metrics
from weights import load_token, save_checkpoint

COMMON = ["--backbone", "resnet18", "--imsize", "64", "--no-pretrained", "--workers", "0", "--log-every", "2",
          "--batch-size", "4"]
TINY = [*COMMON, "--dim", "64", "--out-dim", "64"]
STEPS_PER_EPOCH = 6  # SMALL_SET: 25 train images, whole batches of 4


def make_gldv2(root, images_per_landmark, copies=1, size=64, seed=0):
    """A GLDv2-clean-format set: ``train_clean.csv`` and JPEGs at train/a/b/c/<id>.jpg.

    Landmark i has ``images_per_landmark[i]`` distinct images (its own colour plus pixel noise), each saved
    ``copies`` times under different ids.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for landmark, n in enumerate(images_per_landmark):
        colour = rng.integers(0, 256, 3)
        ids = []
        for _ in range(n):
            pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            for _ in range(copies):
                image_id = f"{rng.integers(0, 2**63):016x}"
                path = root / image_path(image_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, quality=90)
                ids.append(image_id)
        rows.append((1000 + 17 * landmark, " ".join(ids)))
    pd.DataFrame(rows, columns=["landmark_id", "images"]).to_csv(root / "train_clean.csv", index=False)
    return root


def small_set(root):
    """25 train and 7 val images (an odd count, which DistributedSampler would pad) of 7 landmarks."""
    return make_gldv2(root, [5, 5, 5, 5, 5, 5, 2])


def run(data, out, *flags):
    train.main([*TINY, "--data-root", str(data), "--output-dir", str(out), *flags])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_set(tmp_path_factory.mktemp("gldv2"))


class Killed(Exception):
    """Stands for the process being killed."""


def kill_after_saving(monkeypatch, step):
    """Make train.py stop right after it has written a checkpoint of ``step``."""
    real_save = training.checkpointer.save_checkpoint

    def save_then_kill(state, path):
        real_save(state, path)
        if state["step"] == step:
            raise Killed

    monkeypatch.setattr(training.checkpointer, "save_checkpoint", save_then_kill)


def test_help_mentions_every_flag():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    flags = [flag for action in get_args_parser()._actions for flag in action.option_strings]
    assert len(flags) > 40
    assert [flag for flag in flags if flag not in result.stdout] == []


def test_bad_data_root_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "nowhere", tmp_path / "run")
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]


def test_data_root_or_the_gldv2_folder_itself_is_accepted_and_logged(tmp_path, caplog):
    """--data-root is the authors' data root (DIR/Google-landmark-v2/...), as test.py's; the GLDv2 folder works too."""
    data_root = tmp_path / "data"
    gldv2_root = small_set(data_root / GLDV2_DIR)
    caplog.set_level("INFO")
    run(data_root, tmp_path / "run", "--epochs", "1")
    assert f"GLDv2 folder: {gldv2_root} ({data_root} taken as the data root)" in caplog.text
    [row] = read_metrics(tmp_path / "run" / "metrics.csv")
    assert int(row["step"]) == STEPS_PER_EPOCH and int(row["skipped_images"]) == 0

    caplog.clear()
    env = DistEnv(0, 1, torch.device("cpu"))
    args = get_args_parser().parse_args([*TINY, "--data-root", str(gldv2_root), "--output-dir", str(tmp_path)])
    split, train_loader, _ = training.run.build_data(args, env, 4)
    assert f"GLDv2 folder: {gldv2_root} ({gldv2_root} taken as the GLDv2 folder itself)" in caplog.text
    assert split.root == gldv2_root and train_loader.dataset.root == gldv2_root
    assert len(split.train) == STEPS_PER_EPOCH * 4 + 1


def test_neither_data_root_nor_gldv2_folder_names_both_paths(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "data", tmp_path / "run")
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / "data" / GLDV2_DIR / "train_clean.csv") in line
    assert str(tmp_path / "data" / "train_clean.csv") in line and "data root" in line


def test_data_root_defaults_to_data_as_test_py():
    assert get_args_parser().get_default("data_root") == "data"


def test_two_processes_under_torchrun_train_and_evaluate_every_val_image_once(data, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *TINY,
         "--data-root", str(data), "--output-dir", str(out), "--epochs", "1", "--save-every", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in result.stderr
    assert (out / "training_curves.png").stat().st_size > 0
    checkpoint = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert checkpoint["step"] == STEPS_PER_EPOCH and checkpoint["epoch"] == 1
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    [row] = read_metrics(out / "metrics.csv")
    assert int(row["step"]) == STEPS_PER_EPOCH and int(row["skipped_images"]) == 0

    # The val metrics reduced over the two ranks equal one process evaluating the saved model alone.
    model = load_token(out / "last.pth")
    split = load_gldv2(data)
    loader = DataLoader(LandmarkImages(split.val, data, val_transform(64)), batch_size=3, collate_fn=collate_skip_bad)
    args = get_args_parser().parse_args(TINY)
    alone = validate(model, loader, args, DistEnv(0, 1, torch.device("cpu")))
    for key in ("val_loss", "val_top1_err", "val_top5_err"):
        assert float(row[key]) == pytest.approx(alone[key], rel=1e-4, abs=1e-4), key


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run(data, out, "--epochs", "2", "--save-every", "4")
    return out


@pytest.mark.parametrize("kill_at", [STEPS_PER_EPOCH, 8], ids=["at-epoch-end", "mid-epoch"])
def test_resumed_run_ends_where_the_uninterrupted_run_ends(data, uninterrupted, tmp_path, monkeypatch, kill_at):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_after_saving(patch, kill_at)
        with pytest.raises(Killed):
            run(data, out, "--epochs", "2", "--save-every", "4")
    stopped = load_training_state(out / "last.pth")
    assert stopped["step"] == kill_at
    assert stopped["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 - kill_at / 12))

    run(data, out, "--epochs", "2", "--save-every", "4", "--resume", "auto")
    resumed, reference = load_training_state(out / "last.pth"), load_training_state(uninterrupted / "last.pth")
    assert resumed["step"] == reference["step"] == 2 * STEPS_PER_EPOCH
    torch.testing.assert_close(resumed["state_dict"], reference["state_dict"])
    torch.testing.assert_close(resumed["optimizer"], reference["optimizer"])
    assert resumed["best_top1_err"] == reference["best_top1_err"]
    rows, expected = read_metrics(out / "metrics.csv"), read_metrics(uninterrupted / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("train_loss", "val_loss", "skipped_images"):  # the resumed epoch's loss covers all its steps
        assert [float(r[column]) for r in rows] == pytest.approx([float(r[column]) for r in expected]), column


def test_resume_on_data_with_another_number_of_landmarks_names_both_counts(data, uninterrupted, tmp_path, capsys,
                                                                          caplog):
    # train.py's logging_redirect_tqdm sends log records to this test's stderr: an earlier test that left the root
    # logger at INFO (demo.py --jobs 1 runs its logging.basicConfig(force=True) in-process) added the "building the
    # GLDv2 split" line. The level is pinned here so that stderr holds the error line alone.
    caplog.set_level(logging.WARNING)
    other = make_gldv2(tmp_path / "other", [5, 5, 5, 5, 5, 4, 1, 1])  # 8 landmarks, still 6 steps an epoch
    with pytest.raises(SystemExit) as stop:
        run(other, tmp_path / "run", "--epochs", "2", "--save-every", "4", "--resume",
            str(uninterrupted / "last.pth"))
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "classifies 7 landmarks" in line and f"--data-root {other} has 8" in line
    assert not (tmp_path / "run").exists()


def test_an_empty_val_split_is_said_once_its_metrics_are_nan_and_no_best_is_kept(tmp_path, caplog):
    root = make_gldv2(tmp_path / "gldv2", [1] * 8)  # a single image per landmark: all in train
    out = tmp_path / "run"
    run(root, out, "--epochs", "2")
    assert caplog.text.count("the val split is empty") == 1
    rows = read_metrics(out / "metrics.csv")
    assert [row["val_loss"] for row in rows] == ["nan", "nan"] and [row["val_top1_err"] for row in rows] == ["nan"] * 2
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert (out / "last.pth").is_file() and not (out / "best.pth").exists()


def test_resume_follows_this_runs_epochs_and_lr_and_refuses_other_changes(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run(data, out, "--epochs", "1")
    assert load_training_state(out / "last.pth")["optimizer"]["param_groups"][0]["lr"] == 0.0  # the end of 1 epoch

    with pytest.raises(SystemExit) as stop:
        run(data, out, "--epochs", "2", "--resume", "auto", "--dim", "32")
    assert stop.value.code == 2 and "dim 64 (now 32)" in capsys.readouterr().err

    kill_after_saving(monkeypatch, 8)  # the schedule of this run's --epochs and --lr, at step 8 of 12
    with pytest.raises(Killed):
        run(data, out, "--epochs", "2", "--resume", "auto", "--save-every", "2", "--lr", "0.02")
    lr = load_training_state(out / "last.pth")["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.02 * (1 - 8 / 12))


def test_a_setting_an_older_checkpoint_does_not_record_counts_as_its_default(data, tmp_path, capsys):
    out = tmp_path / "run"
    run(data, out, "--epochs", "1")
    state = load_training_state(out / "last.pth")
    del state["args"]["optimizer"]  # written before --optimizer existed, when training was SGD
    save_checkpoint(state, out / "last.pth")
    with pytest.raises(SystemExit) as stop:
        run(data, out, "--epochs", "2", "--resume", "auto", "--optimizer", "adamw")
    assert stop.value.code == 2 and "optimizer 'sgd' (now 'adamw')" in capsys.readouterr().err
    run(data, out, "--epochs", "2", "--resume", "auto")
    assert [int(row["epoch"]) for row in read_metrics(out / "metrics.csv")] == [1, 2]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_forward, calls = Token.forward, itertools.count(1)

    def forward(self, images, labels):  # a finite loss for 8 steps, then NaN
        loss, logits = real_forward(self, images, labels)
        return (loss * math.nan if next(calls) > 8 else loss), logits

    monkeypatch.setattr(Token, "forward", forward)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(data, out, "--epochs", "2", "--log-every", "100")  # checked only at the epoch end, before saving
    assert stop.value.code == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "not finite (NaN or inf) at step 9" in err and f"last good checkpoint is {out / 'last.pth'}" in err
    kept = load_training_state(out / "last.pth")
    assert kept["step"] == STEPS_PER_EPOCH
    assert all(t.isfinite().all() for t in kept["state_dict"].values() if t.is_floating_point())
    assert len(read_metrics(out / "metrics.csv")) == 1


def test_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
    root = small_set(tmp_path / "gldv2")
    split = load_gldv2(root)
    for path, _ in (split.train[3], split.val[0]):
        (root / path).write_bytes(b"not a jpeg")
    run(root, tmp_path / "run", "--epochs", "1")
    [row] = read_metrics(tmp_path / "run" / "metrics.csv")
    assert int(row["skipped_images"]) == 2 and math.isfinite(float(row["train_loss"]))
    assert "skipping an unreadable image" in caplog.text


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # step 1 skipped: no optimizer step
def test_batches_without_two_readable_images_are_skipped(tmp_path, caplog):
    root = small_set(tmp_path / "gldv2")
    split = load_gldv2(root)
    sampler = TrainSampler(split.train, DistEnv(0, 1, torch.device("cpu")), seed=0, chunk=4)
    sampler.set_epoch(0)
    for index in list(sampler)[:4]:  # every image of step 1's batch
        (root / split.train[index][0]).write_bytes(b"")
    run(root, tmp_path / "run", "--epochs", "1")
    [row] = read_metrics(tmp_path / "run" / "metrics.csv")
    assert int(row["skipped_images"]) == 4 and math.isfinite(float(row["train_loss"]))
    assert "step 1: skipping a batch with 0 readable image(s)" in caplog.text


@pytest.mark.parametrize("optimizer, lr", [("sgd", "0.005"), ("adamw", "0.001")])
def test_a_tiny_model_overfits_a_handful_of_images(tmp_path, optimizer, lr):
    root = make_gldv2(tmp_path / "gldv2", [2, 2, 2, 2], copies=10)  # 8 distinct images, 64 train copies
    out = tmp_path / "run"
    run(root, out, "--epochs", "10", "--batch-size", "32", "--optimizer", optimizer, "--lr", lr, "--dropout", "0",
        "--drop-path", "0", "--no-random-crop", "--no-hflip", "--no-color-jitter")  # 2 steps an epoch
    state = next(iter(load_training_state(out / "last.pth")["optimizer"]["state"].values()))
    assert ("exp_avg_sq" in state) == (optimizer == "adamw") and ("momentum_buffer" in state) == (optimizer == "sgd")
    losses = [float(r["train_loss"]) for r in read_metrics(out / "metrics.csv")]
    # BatchNorm over tiny batches of few classes makes single epochs spiky: the median of the last three counts
    assert len(losses) == 10 and float(np.median(losses[-3:])) <= 0.5 * losses[0], losses


def test_an_interrupted_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def save_half(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half)
    with pytest.raises(OSError, match=f"cannot write {path}"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_lr_schedules():
    linear = [lr_factor(s, 100, "linear", 0, 0.0) for s in (0, 50, 100)]
    assert linear == [1.0, 0.5, 0.0]
    cosine = [lr_factor(s, 100, "cosine", 20, 0.01) for s in (0, 10, 20, 60, 100)]
    assert cosine == pytest.approx([0.01, 0.505, 1.0, 0.5, 0.0])


def test_samplers_split_the_data_between_ranks():
    ranks = [DistEnv(r, 2, torch.device("cpu")) for r in range(2)]
    shards = [list(ShardSampler(7, env)) for env in ranks]
    assert sorted(shards[0] + shards[1]) == list(range(7))

    samplers = [TrainSampler(range(23), env, seed=0, chunk=4) for env in ranks]  # 11 a rank, cut to 8
    for sampler in samplers:
        sampler.set_epoch(3)
    full = [list(sampler) for sampler in samplers]
    assert [len(order) for order in full] == [8, 8] and not set(full[0]) & set(full[1])
    samplers[0].set_epoch(3, start=4)
    assert list(samplers[0]) == full[0][4:] and len(samplers[0]) == 4


PAPER_RECIPE = {"model": "token", "backbone": "resnet101", "pretrained": True, "batch_size": 128, "imsize": 512,
                "epochs": 30, "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4, "momentum": 0.9,
                "schedule": "linear", "out_dim": 1024, "refinement_blocks": 2, "arcface_margin": 0.2,
                "arcface_scale": 32.0}  # the paper's "Training details"


def test_experiment_sh_runs_train_py_defaults_which_are_the_papers_recipe(tmp_path):
    subprocess.run(["sh", "-n", "experiment.sh"], cwd=ROOT, check=True)
    env = {**os.environ, "TORCHRUN": "echo", "NPROC": "2", "DATA_ROOT": "/data/gldv2", "OUTPUT_DIR": str(tmp_path)}
    line = subprocess.run(["sh", "experiment.sh", "--amp", "bf16"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    for flag, value in [("--nproc_per_node", "2"), ("--nnodes", "1")]:
        assert line[line.index(flag) + 1] == value, flag
    train_flags = line[[word.endswith("/train.py") for word in line].index(True) + 1:]
    assert [word for word in train_flags if word.startswith("--")] == ["--data-root", "--output-dir", "--resume",
                                                                       "--amp"]  # the recipe is train.py's alone
    args = vars(get_args_parser().parse_args(train_flags))
    assert (args["data_root"], args["output_dir"], args["resume"], args["amp"]) == ("/data/gldv2", str(tmp_path),
                                                                                   "auto", "bf16")
    assert {k: args[k] for k in PAPER_RECIPE} == PAPER_RECIPE
