"""train.py --model aggregator on the local features of a frozen HOW (resnet18, random weights) and test.py on its
checkpoint: the features are cached once and reused, the loss falls, a killed run resumes where it would have been,
and the checkpoint names its extractor, which evaluation loads (one line when it is missing or another file)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import train
import visualize
from datasets.revisitop import RevisitopImages, load_revisitop
from networks import DELG, HOW, LocalAggregation, TokenAggregator
from networks.aggregator import padded_local_features
from tests.conftest import ROOT
from tests.eval_sets import run_test
from tests.test_train import Killed, kill_after_saving
from training.checkpointer import load_training_state
from utils.errors import InputError
from utils.training_log import read_metrics
from weights import load_model, model_state
from weights.checkpoint import extractor_record

pytestmark = pytest.mark.usefixtures("one_thread")

NUM = 32  # local features per image: a 64 px image has about 130 over HOW's 7 scales
FLAGS = ["--model", "aggregator", "--num-features", str(NUM), "--dim", "32", "--out-dim", "32", "--heads", "2",
         "--dropout", "0", "--arcface-margin", "0", "--arcface-scale", "16", "--optimizer", "adamw", "--lr", "3e-3",
         "--imsize", "64", "--workers", "0", "--batch-size", "4", "--log-every", "2", "--no-progress"]


def save_how(path, seed=0):
    torch.manual_seed(seed)
    torch.save(model_state(HOW(backbone="resnet18", skip_layer=1, pretrained=False).eval()), path)
    return path


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    return save_how(tmp_path_factory.mktemp("how") / "how.pth")


def run(gldv2, extractor, out, *flags):
    train.main([*FLAGS, "--extractor", str(extractor), "--data-root", str(gldv2), "--output-dir", str(out), *flags])


@pytest.fixture(scope="module")
def trained(gldv2, extractor, tmp_path_factory):
    out = tmp_path_factory.mktemp("aggregator")
    run(gldv2, extractor, out, "--epochs", "4", "--save-every", "3")  # 6 steps an epoch: mid-epoch saves too
    return out


def test_features_are_cached_the_loss_halves_and_the_extractor_is_recorded(trained, extractor):
    rows = read_metrics(trained / "metrics.csv")
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < first / 2, (first, last)
    shards = sorted((trained / "features" / "train_local").glob("shard_*.npy"))
    assert shards and all(np.load(shard).dtype == np.float16 for shard in shards)
    assert sum(len(np.load(shard)) for shard in shards) == 25 and np.load(shards[0]).shape[1] == NUM * 128
    state = load_training_state(trained / "last.pth")
    assert state["extractor"] == extractor_record(extractor) and state["model_config"]["model"] == "aggregator"
    model = load_model(trained / "last.pth")
    assert isinstance(model, LocalAggregation) and isinstance(model.extractor, HOW)
    assert isinstance(model.aggregator, TokenAggregator) and model.config.num_features == NUM


def test_a_killed_run_resumes_on_the_cached_features_where_it_would_have_been(gldv2, extractor, trained, tmp_path,
                                                                              monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained / "features", out / "features")  # the cache of the same images and extractor
    kill_after_saving(monkeypatch, 9)
    with pytest.raises(Killed):
        run(gldv2, extractor, out, "--epochs", "4", "--save-every", "3")
    monkeypatch.undo()
    run(gldv2, extractor, out, "--epochs", "4", "--save-every", "3", "--resume", "auto")
    assert ">> train_local: reusing" in capsys.readouterr().out
    resumed, uninterrupted = (load_training_state(path / "last.pth")["state_dict"] for path in (out, trained))
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in uninterrupted)


def test_mixed_precision_bf16_trains_on_the_cached_features(gldv2, extractor, trained, tmp_path, capsys):
    out = tmp_path / "bf16"
    shutil.copytree(trained / "features", out / "features")
    run(gldv2, extractor, out, "--epochs", "4", "--amp", "bf16")
    assert ">> train_local: reusing" in capsys.readouterr().out
    rows = read_metrics(out / "metrics.csv")
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < first / 2, (first, last)  # autocast on the CPU: the loss falls as in float32
    state = load_training_state(out / "last.pth")["state_dict"]
    assert all(value.dtype == torch.float32 for value in state.values() if value.is_floating_point())


def test_resume_with_another_extractor_is_one_line(gldv2, trained, tmp_path, capsys):
    other = save_how(tmp_path / "other.pth", seed=1)
    with pytest.raises(SystemExit) as stop:
        run(gldv2, other, tmp_path / "run", "--epochs", "5", "--resume", str(trained / "last.pth"))
    [line] = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith("error: --resume ") and "SHA-256 differs" in line


def test_without_extractor_or_with_one_without_local_features_train_py_says_so(gldv2, eval_inputs, tmp_path,
                                                                               capsys):
    with pytest.raises(SystemExit) as stop:
        train.main([*FLAGS, "--data-root", "nowhere"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith("error: --model aggregator needs --extractor CKPT")
    with pytest.raises(SystemExit) as stop:
        run(gldv2, eval_inputs[1], tmp_path / "run", "--epochs", "1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and line == (f"error: --extractor {eval_inputs[1]}: a 'token' model has no local "
                                             "features; pass a HOW or DELG checkpoint")


def test_test_py_evaluates_the_aggregator_through_the_global_path(trained, eval_inputs, tmp_path):
    data_root, _ = eval_inputs
    report = run_test(data_root, trained / "last.pth", tmp_path / "eval", "--pq", "8", "--pq-bits", "4", "--r1m")
    runs = report["datasets"]["roxford5k+1M"]["runs"]
    assert report["model"] == "aggregator" and "exact" in runs and any(run.startswith("pq") for run in runs)
    assert report["scales"] == [1.0]  # its features are multi-scale already: the default scales become 1
    assert 0 <= runs["exact"]["medium"]["mAP"] <= 100
    db = np.load(tmp_path / "eval" / "features" / "roxford5k_db.npy")
    model = load_model(trained / "last.pth")
    image = RevisitopImages(load_revisitop(data_root, "roxford5k").db_paths()[:1], 64)[0][0][None]
    expected = model.aggregator.forward_test(padded_local_features(model.extractor, image, NUM))
    np.testing.assert_allclose(db[0], expected[0].detach().numpy(), atol=1e-5)


def copied_checkpoint(trained, extractor, folder):
    """The aggregator's checkpoint with its own copy of the extractor, recorded at its path, in ``folder``."""
    folder.mkdir()
    how = shutil.copy(extractor, folder / "how.pth")
    state = load_training_state(trained / "last.pth")
    state["extractor"] = extractor_record(how)
    torch.save(state, folder / "agg.pth")
    return folder / "agg.pth", folder / "how.pth"


def test_a_missing_or_different_extractor_is_one_line(trained, extractor, eval_inputs, tmp_path, capsys):
    checkpoint, how = copied_checkpoint(trained, extractor, tmp_path / "a")
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved)
    how.unlink()
    assert isinstance(load_model(moved / "agg.pth"), LocalAggregation)  # the extractor beside the checkpoint
    with pytest.raises(InputError, match=f"its extractor {how} is missing .nor beside the checkpoint.; the "
                                         "aggregator reads that file's local features: put it back"):
        load_model(checkpoint)
    save_how(how, seed=1)
    with pytest.raises(InputError, match="differs from the one it was trained on"):
        load_model(checkpoint)
    with pytest.raises(SystemExit) as stop:
        run_test(eval_inputs[0], checkpoint, None, "--scales", "1")
    [line] = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith(f"error: {checkpoint}: its extractor") and "differs" in line


def test_a_delg_checkpoint_serves_as_extractor_through_its_local_branch(gldv2, tmp_path):
    torch.manual_seed(0)
    delg = tmp_path / "delg.pth"
    torch.save(model_state(DELG(backbone="resnet18", out_dim=16, pretrained=False).eval()), delg)
    run(gldv2, delg, tmp_path / "run", "--epochs", "1")
    model = load_model(tmp_path / "run" / "last.pth")
    assert isinstance(model.extractor, DELG)
    rows = np.load(tmp_path / "run" / "features" / "train_local" / "shard_00000.npy").astype(np.float32)
    features = rows.reshape(len(rows), NUM, 128)
    np.testing.assert_allclose(np.linalg.norm(features, axis=2), 1, atol=1e-3)  # DELG's are L2-normalised


def test_visualize_draws_the_tokens_attention_and_refuses_a_model_without_tokens(trained, extractor, gldv2, tmp_path,
                                                                                 capsys):
    images = [str(path) for path in sorted(gldv2.rglob("*.jpg"))[:2]]
    out = tmp_path / "attention.png"
    visualize.main(["attention", "--checkpoint", str(trained / "last.pth"), "--images", *images, "--imsize", "64",
                    "--out", str(out), "--width", "600"])
    with Image.open(out) as png:
        assert png.size[0] == 600
    with pytest.raises(SystemExit) as stop:
        visualize.main(["attention", "--checkpoint", str(extractor), "--images", *images, "--out", str(out)])
    assert stop.value.code == 2 and "a 'how' model has no tokens" in capsys.readouterr().err


def test_two_processes_share_the_extraction_and_train_on_the_same_features(gldv2, extractor, trained, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *FLAGS,
         "--extractor", str(extractor), "--data-root", str(gldv2), "--output-dir", str(out), "--epochs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in result.stderr and load_training_state(out / "last.pth")["step"] == 6

    def rows(run):
        shards = sorted((run / "features" / "train_local").glob("shard_*.npy"))
        return np.concatenate([np.load(shard) for shard in shards])

    assert len(list((out / "features" / "train_local").glob("shard_*.npy"))) == 2  # one a rank
    np.testing.assert_array_equal(rows(out), rows(trained))
