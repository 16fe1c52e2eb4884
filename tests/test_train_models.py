"""train.py --model: every Table 1 baseline trains with the same data, schedule, checkpoints and resume as Token.

Each baseline learns a handful of generated GLDv2-format images (ResNet-18 from scratch, 64 px, repeated batches);
DELG logs its two losses, NetVLAD's frozen trunk is neither in the optimizer nor changed, and --resume refuses a
checkpoint of another model.
"""

import pytest
import torch

import train
from networks import build_model
from networks.config import CONFIGS
from tests.test_train import COMMON, make_gldv2
from training.checkpointer import load_training_state
from training.options import get_args_parser, parse_args
from utils.training_log import StepMeter, read_metrics
from weights import load_model

BASELINES = sorted(set(CONFIGS) - {"token"})
HEAD = ["--arcface-margin", "0", "--arcface-scale", "16"]  # the demo's head: no margin from scratch
SMALL = {"rmac": ["--out-dim", "32"], "solar": ["--out-dim", "32"], "apgem": ["--out-dim", "32"],
         "how": ["--out-dim", "32"],
         "delg": ["--out-dim", "32", "--local-dim", "16", "--local-margin", "0", "--local-scale", "16"],
         "netvlad": ["--dim", "32", "--heads", "4", "--dropout", "0", "--drop-path", "0"]}


def train_model(name, data, out, *flags):
    train.main([*COMMON, "--model", name, *SMALL[name], *HEAD, "--data-root", str(data), "--output-dir", str(out),
                *flags])


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    """4 landmarks of 2 distinct images, each saved 4 times: 24 train and 8 val images."""
    return make_gldv2(tmp_path_factory.mktemp("gldv2"), [2, 2, 2, 2], copies=4)


@pytest.mark.parametrize("name", BASELINES)
def test_a_short_run_of_each_baseline_learns(handful, tmp_path, name):
    """Two epochs of 3 steps of 8 (the demo's AdamW, lr 1e-3): the second epoch's loss is half the first's."""
    out = tmp_path / name
    train_model(name, handful, out, "--epochs", "2", "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.001",
                "--schedule", "cosine", "--warmup-epochs", "0", "--no-random-crop", "--no-hflip", "--no-color-jitter")
    rows = read_metrics(out / "metrics.csv")
    losses = [float(row["train_loss"]) for row in rows]
    assert len(losses) == 2 and losses[1] <= 0.5 * losses[0], losses
    model = load_model(out / "last.pth")
    assert model.config.model == name and model.config == CONFIGS[name].from_dict(
        load_training_state(out / "last.pth")["model_config"])
    if name == "delg":  # its two losses, per epoch, sum to the loss
        for row in rows:
            assert float(row["train_loss_global"]) + float(row["train_loss_local"]) == pytest.approx(
                float(row["train_loss"]), rel=1e-6)
    else:
        assert not any(key.startswith("train_loss_") for key in rows[0])


def test_netvlad_trains_its_head_and_leaves_its_frozen_trunk_out_of_the_optimizer(handful, tmp_path):
    out = tmp_path / "netvlad"
    train_model("netvlad", handful, out, "--epochs", "1")
    state = load_training_state(out / "last.pth")
    model = load_model(out / "last.pth")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) < len(list(model.parameters()))
    assert sum(len(group["params"]) for group in state["optimizer"]["param_groups"]) == len(trainable)
    torch.manual_seed(0)  # as train.py --seed 0 does before building the model
    initial = build_model(model.config, num_classes=4, pretrained=False)
    torch.testing.assert_close(model.backbone.state_dict(), initial.backbone.state_dict())  # BatchNorm stats too
    assert not torch.equal(model.input_proj[0].weight, initial.input_proj[0].weight)


def test_resume_refuses_a_checkpoint_of_another_model_naming_both(handful, tmp_path, capsys):
    out = tmp_path / "run"
    train_model("apgem", handful, out, "--epochs", "1")
    with pytest.raises(SystemExit) as stop:
        train.main([*COMMON, "--out-dim", "32", "--data-root", str(handful), "--output-dir", str(out),
                    "--epochs", "2", "--resume", "auto"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and line.startswith(f"error: --resume {out / 'last.pth'}: ")
    assert "'apgem' model" in line and "--model token" in line


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_help_of_each_model_lists_its_flags_and_its_flags_give_its_config(name, capsys):
    parser = get_args_parser(name)
    text = parser.format_help()
    assert f"model: {name} (" in text
    assert [flag for action in parser._actions for flag in action.option_strings if flag not in text] == []
    args = parse_args(["--model", name, *CONFIGS[name]().as_flags()])
    assert args.model == name and CONFIGS[name].from_args(args) == CONFIGS[name]()
    if name != "token":  # another model's flag is refused by argparse
        with pytest.raises(SystemExit) as stop:
            parse_args(["--model", name, "--num-tokens", "8"])
        assert stop.value.code == 2 and "--num-tokens" in capsys.readouterr().err


def test_loss_parts_survive_a_mid_epoch_checkpoint():
    """The epoch's sums a mid-epoch checkpoint keeps (``StepMeter.totals``) carry the loss parts as well."""
    cpu = torch.device("cpu")
    uninterrupted, first = StepMeter(cpu, parts=("global", "local")), StepMeter(cpu, parts=("global", "local"))
    steps = [(torch.tensor(3.0), {"global": torch.tensor(1.0), "local": torch.tensor(2.0)}),
             (torch.tensor(5.0), {"global": torch.tensor(4.0), "local": torch.tensor(1.0)})]
    for step, (loss, parts) in enumerate(steps, 1):
        uninterrupted.update(loss, 4, step, parts)
    uninterrupted.sync()
    first.update(steps[0][0], 4, 1, steps[0][1])
    first.sync()
    resumed = StepMeter(cpu, first.totals(), parts=("global", "local"))
    resumed.update(steps[1][0], 4, 2, steps[1][1])
    resumed.sync()
    expected = {"train_loss": 4.0, "train_loss_global": 2.5, "train_loss_local": 1.5, "train_images": 8}
    for summary in (uninterrupted.epoch_summary(), resumed.epoch_summary()):
        assert {key: summary[key] for key in expected} == expected
