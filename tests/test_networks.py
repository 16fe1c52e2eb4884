"""The model's modules against hand-written tensor math, and the whole model against the released code."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from networks import LFSA, ArcFace, GeM, MultiHeadAttention, RefinementBlock, SPoC, Token, Tokenizer
from networks.backbone import Backbone
from tests.conftest import DATA
from tests.released import golden_inputs, released_state_dict
from utils.errors import InputError
from weights import load_token

torch.manual_seed(0)


def randomise(module):
    """Non-zero weights everywhere: the released initialisation zeroes the attention's output projection, under
    which any concatenation of the heads gives the same (zero) output."""
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module


def test_attention_is_softmax_over_keys_scaled_by_head_dim():
    attn = randomise(MultiHeadAttention(8, heads=2, dropout=0.0)).eval()
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    out, weights = attn(q, kv, kv, return_attention=True)
    Q, K, V = attn.q(q), attn.k(kv), attn.v(kv)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        w = torch.softmax(Q[..., s] @ K[..., s].transpose(1, 2) / math.sqrt(4), dim=-1)
        torch.testing.assert_close(weights[:, h], w)
        heads.append(w @ V[..., s])
    torch.testing.assert_close(out, attn.proj(torch.cat(heads, dim=-1)))


def test_lfsa_batchnorm_runs_over_all_positions():
    block = randomise(LFSA(8, heads=2, dropout=0.0, drop_path=0.0)).train()
    x = torch.randn(3, 5, 8)
    assert block.attn(x, x, x).abs().min() > 0  # the attention branch counts
    y = block.attn(x, x, x) + x
    flat = y.reshape(-1, 8)
    normed = (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-5)
    expected = y + block.linear(normed.reshape(3, 5, 8) * block.norm.weight + block.norm.bias)
    torch.testing.assert_close(block(x), expected)


def test_tokenizer_softmax_is_over_tokens_not_positions():
    tok = Tokenizer(6, num_tokens=3).eval()
    x = torch.randn(2, 7, 6)
    tokens, attn = tok(x)
    logits = torch.einsum("ld,bnd->bln", tok.queries[0], x)
    expected_attn = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    torch.testing.assert_close(attn, expected_attn)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(2, 7))
    torch.testing.assert_close(tokens, tok.proj(torch.einsum("bln,bnd->bld", expected_attn, x)))


def test_tokenizer_temperature_divides_the_logits_and_unsaturates_the_softmax():
    torch.manual_seed(0)
    x = torch.nn.functional.layer_norm(torch.randn(8, 9, 256), (256,))  # unit-variance features, as the demo's
    released, scaled = Tokenizer(256).eval(), Tokenizer(256, temperature=16.0).eval()
    scaled.load_state_dict(released.state_dict())
    logits = torch.einsum("ld,bnd->bln", released.queries[0], x)
    torch.testing.assert_close(scaled.assignment(x), torch.softmax(logits / 16, dim=1))
    largest = {name: tok.assignment(x).max(dim=1).values.mean().item() for name, tok in
               (("released", released), ("scaled", scaled))}
    assert largest["released"] > 0.9 > 0.6 > largest["scaled"]  # one-hot as released, soft with sqrt(d)
    with pytest.raises(ValueError, match="temperature must be positive"):
        Tokenizer(4, temperature=0.0)
    with pytest.raises(ValueError, match="tokenizer_temperature must be positive"):
        Token(backbone="resnet18", num_classes=3, dim=64, out_dim=32, heads=4, pretrained=False,
              tokenizer_temperature=-1.0)
    model = Token(backbone="resnet18", num_classes=3, dim=64, out_dim=32, heads=4, pretrained=False,
                  tokenizer_temperature=8.0)
    assert model.tokenizer.temperature == 8.0


def test_vq_centres_move_towards_their_soft_assigned_mean():
    tok = Tokenizer(4, num_tokens=2, kind="vq", momentum=0.5).train()
    before = tok.ema_centres.clone()
    x = torch.randn(3, 5, 4)
    _, attn = tok(x)
    mean = torch.einsum("bln,bnd->ld", attn, x) / attn.sum(dim=(0, 2))[:, None]
    torch.testing.assert_close(tok.ema_centres[0], 0.5 * before[0] + 0.5 * mean)
    tok.eval()
    tok(x)
    torch.testing.assert_close(tok.ema_centres[0], 0.5 * before[0] + 0.5 * mean)
    assert not any("ema_centres" in n for n, _ in tok.named_parameters())


def test_refinement_block_order_cross_mlp_self():
    block = randomise(RefinementBlock(8, heads=2, dropout=0.0, drop_path=0.0)).eval()
    t, x = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    n1 = block.norm1(t)
    t1 = t + block.cross_attn(n1, x, x)
    t2 = t1 + block.mlp.fc2(F.gelu(block.mlp.fc1(t1)))
    n2 = block.norm2(t2)
    t3 = t2 + block.self_attn(n2, n2, n2)
    torch.testing.assert_close(block(t, x)[0], t3)


def test_pooling_baselines():
    x = torch.rand(2, 5, 3) + 0.1
    torch.testing.assert_close(SPoC()(x), x.mean(1))
    torch.testing.assert_close(GeM()(x), x.pow(3).mean(1).pow(1 / 3))


def test_arcface_margin_on_target_only():
    head = ArcFace(4, 3, margin=0.2, scale=32.0)
    desc, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    logits = head(desc, labels).detach()
    cos = (F.normalize(desc) @ F.normalize(head.weight).T).detach()
    for i in range(5):
        for j in range(3):
            theta = math.acos(cos[i, j].item())
            want = math.cos(theta + 0.2) if j == labels[i] and theta <= math.pi - 0.2 else math.cos(theta)
            assert abs(float(logits[i, j]) - 32.0 * want) < 1e-4


def test_arcface_leaves_angles_past_pi_minus_m_unmargined():
    head = ArcFace(2, 2, margin=0.2, scale=32.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    desc = torch.tensor([[-1.0, 0.01]])  # theta to class 0 is almost pi
    logit = head(desc, torch.tensor([0]))[0, 0].detach()
    assert float(logit) == pytest.approx(32.0 * float(F.normalize(desc)[0, 0]), abs=1e-5)


@pytest.mark.parametrize("depth", [50, 101])
def test_golden_descriptors_of_the_released_model(tmp_path, depth):
    golden = np.load(DATA / f"golden-token-r{depth}.npz")
    path = tmp_path / f"r{depth}.pth"
    torch.save(released_state_dict(depth), path)
    model = load_token(path).double()
    with torch.no_grad():
        desc = torch.cat([model.forward_test(x) for x in golden_inputs(golden["input_shapes"])])
    assert np.abs(desc.numpy() - golden["descriptors"]).max() < 1e-9


@pytest.mark.parametrize("backbone,count", [("resnet50", 61_307_968), ("resnet101", 80_300_096)])
def test_parameter_counts_match_released_models(backbone, count):
    model = Token(backbone=backbone, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == count


ABLATIONS = [
    {},
    {"tokenizer": "vq"},
    {"tokenizer": "learned"},
    {"num_tokens": 2},
    {"lfsa_blocks": 0},
    {"refinement_blocks": 0},
    {"self_attention": False},
    {"cross_attention": False},
    {"aggregation": "spoc"},
    {"aggregation": "gem"},
]


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_every_ablation_trains_and_reloads(tmp_path, options):
    model = Token(backbone="resnet18", num_classes=5, dim=64, out_dim=32, heads=4, pretrained=False, **options)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    loss, logits = model(images, labels)
    assert torch.isfinite(loss) and logits.shape == (4, 5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    path = tmp_path / "ours.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # no model_config: the keys alone rebuild it
    loaded = load_token(path)
    assert loaded.config in (replace(model.config, heads=8), model.config)  # heads is not in the shapes
    reloaded = Token(replace(loaded.config, heads=model.config.heads), num_classes=5, pretrained=False).eval()
    reloaded.load_state_dict(model.state_dict())
    torch.testing.assert_close(reloaded.forward_test(images), model.forward_test(images))


@pytest.fixture(scope="module")
def small_released(tmp_path_factory):
    """A released-layout R50 state_dict (the golden fill) saved as the authors ship it."""
    state = released_state_dict(50, num_classes=7)
    path = tmp_path_factory.mktemp("ckpt") / "R50-Token.pth"
    torch.save(state, path)
    return state, path


def test_training_wrapper_and_ddp_prefix_load_the_same(small_released, tmp_path):
    state, path = small_released
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}, "optim": {}}, wrapped)
    plain, other = load_token(path), load_token(wrapped)
    assert plain.config.backbone == "resnet50" and plain.arcface.weight.shape == (7, 1024)
    assert not plain.training
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(plain.forward_test(x), other.forward_test(x))


def test_classifier_is_optional(small_released, tmp_path):
    state, _ = small_released
    path = tmp_path / "no_classifier.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier")}, path)
    assert load_token(path).arcface is None


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("tr.token_norm.1.bias"), "missing key 'tokenizer.proj.1.bias'"),
    (lambda s: s.update({"tr.extra.weight": torch.zeros(3)}), "unexpected key 'tr.extra.weight'"),
    (lambda s: s.update({"tr.proj.1.bias": torch.zeros(5)}),
     r"'projection.1.bias'.*shape \(5,\), the model expects \(1024,\)"),
    (lambda s: s.pop("tr.conv.0.weight"), "not a Token checkpoint, no key 'input_proj.0.weight'"),
])
def test_a_checkpoint_that_does_not_fit_names_the_key(small_released, tmp_path, edit, message):
    state = dict(small_released[0])
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=message):
        load_token(path)


def test_truncated_checkpoint_and_missing_file(small_released, tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(small_released[1].read_bytes()[:100_000])
    with pytest.raises(InputError, match="cut.pth: not a readable checkpoint"):
        load_token(path)
    with pytest.raises(InputError, match="nothere.pth not found"):
        load_token(tmp_path / "nothere.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never be printed",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _RunsCode()}, path)
    with pytest.raises(InputError, match="evil.pth: refused to load"):
        load_token(path)
    assert "never" not in capsys.readouterr().out


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(InputError, match=rf"resnet18-f37072fd.pth to {tmp_path}/checkpoints/resnet18-f37072fd.pth"):
        Backbone("resnet18", pretrained=True)
    with pytest.raises(InputError, match="nofile.pth not found"):
        Backbone("resnet18", pretrained=True, weights_path=tmp_path / "nofile.pth")


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = Backbone("resnet18", pretrained=False)
    (tmp_path / "checkpoints").mkdir()
    state = {k: v for k, v in reference.state_dict().items()}
    state.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(state, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = Backbone("resnet18", pretrained=True)
    torch.testing.assert_close(loaded.conv1.weight, reference.conv1.weight)
