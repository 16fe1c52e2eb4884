"""TokenConfig: the one description of a model that the constructor, train.py's flags and checkpoints share."""

from dataclasses import fields, replace

import pytest
import torch

from networks import Token, TokenConfig
from training.options import check_args, get_args_parser
from utils.distributed import DistEnv
from utils.errors import InputError
from weights import load_token, model_state

ABLATION = TokenConfig(backbone="resnet18", dim=64, out_dim=32, num_tokens=2, heads=4, lfsa_blocks=0,
                       refinement_blocks=1, tokenizer="vq", cross_attention=False, dropout=0.0, drop_path=0.0,
                       arcface_margin=0.0, arcface_scale=16.0)


@pytest.mark.parametrize("config", [TokenConfig(), ABLATION, replace(ABLATION, aggregation="gem")])
def test_train_flags_round_trip_every_field(config):
    args = get_args_parser().parse_args(config.as_flags())
    assert TokenConfig.from_args(args) == config


def test_train_flags_that_cannot_build_a_model_are_refused_before_any_data_is_read():
    args = get_args_parser().parse_args(["--dim", "64", "--heads", "7"])
    with pytest.raises(InputError, match="model settings: heads \\(7\\) must divide dim \\(64\\)"):
        check_args(args, DistEnv(0, 1, torch.device("cpu")))


def test_every_field_is_a_train_flag_with_help():
    actions = {action.dest: action for action in get_args_parser()._actions}
    for f in fields(TokenConfig):
        assert f.name in actions and actions[f.name].help, f.name


def test_the_model_is_built_from_its_config_and_keywords_override_it():
    model = Token(ABLATION, pretrained=False)
    assert model.config == ABLATION and model.tokenizer.kind == "vq" and len(model.refinement) == 1
    assert model.refinement[0].cross_attn is None and model.refinement[0].self_attn is not None
    assert Token(ABLATION, heads=8, pretrained=False).config == replace(ABLATION, heads=8)
    with pytest.raises(TypeError, match="TokenConfig or keywords"):
        Token("resnet18")


@pytest.mark.parametrize("settings, message", [
    ({"heads": 7}, "heads \\(7\\) must divide dim"),
    ({"backbone": "resnet999"}, "backbone must be one of"),
    ({"aggregation": "max"}, "aggregation must be one of"),
    ({"dropout": 1.0}, "dropout and drop_path"),
    ({"num_tokens": 0}, "must be positive"),
])
def test_invalid_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        replace(TokenConfig(), **settings)


def test_checkpoint_config_round_trips_and_unknown_settings_are_a_clear_error(tmp_path):
    model = Token(ABLATION, num_classes=3, pretrained=False).eval()
    path = tmp_path / "ours.pth"
    torch.save(model_state(model), path)
    loaded = load_token(path)
    assert loaded.config == ABLATION and loaded.arcface.weight.shape == (3, 32)

    newer = tmp_path / "newer.pth"
    torch.save({**model_state(model), "model_config": {**ABLATION.to_dict(), "rotary": True}}, newer)
    with pytest.raises(InputError, match="newer.pth: .*unknown model setting.*rotary"):
        load_token(newer)
    bad = tmp_path / "heads7.pth"
    torch.save({**model_state(model), "model_config": {**ABLATION.to_dict(), "heads": 7}}, bad)
    with pytest.raises(InputError, match="heads7.pth: .*heads \\(7\\) must divide dim"):
        load_token(bad)
