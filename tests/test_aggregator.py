"""networks.aggregator: Token's aggregator over padded sets of local features; padding has no influence. DELG's
local branch as DELF-like local features for it."""

import pytest
import torch

from networks import CONFIGS, DELG, HOW, AggregatorConfig, LocalAggregation, TokenAggregator, build_model
from networks.aggregator import valid_rows
from networks.how import rescaled

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(local_dim=8, num_features=10, dim=16, out_dim=12, num_tokens=3, heads=2)


def model(**settings):
    torch.manual_seed(0)
    return TokenAggregator(**{**SMALL, **settings}).eval()


def padded(counts, n=10, c=8, seed=0):
    """Sets of ``counts`` features (B, n, c), the other rows NaN."""
    x = torch.randn(len(counts), n, c, generator=torch.Generator().manual_seed(seed))
    for row, count in zip(x, counts, strict=True):
        row[count:] = float("nan")
    return x


def test_shapes_and_unit_length():
    aggregator = model()
    x = padded([10, 4, 1])
    out = aggregator.forward_test(x)
    assert out.shape == (3, 12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    tokens, assignment, cross = aggregator.tokens(x.nan_to_num(), valid_rows(x))
    assert tokens.shape == (3, 3, 16) and assignment.shape == (3, 3, 10) and cross.shape == (3, 2, 3, 10)
    assert CONFIGS["aggregator"] is AggregatorConfig
    assert isinstance(build_model(AggregatorConfig(**SMALL), num_classes=5), TokenAggregator)


def test_padded_values_have_no_influence():
    aggregator = model()
    x = padded([10, 4, 1])
    mask = valid_rows(x)
    reference = aggregator.forward_test(x)
    for fill in (0.0, 1e4, float("inf")):
        changed = torch.where(mask[..., None], x, torch.full_like(x, fill))
        assert torch.equal(aggregator.forward_test(changed, mask), reference)
    noise = torch.where(mask[..., None], x, torch.randn_like(x))
    assert torch.equal(aggregator.forward_test(noise, mask), reference)
    _, assignment, cross = aggregator.tokens(x.nan_to_num(), mask)
    assert not assignment[~mask[:, None, :].expand_as(assignment)].any()
    assert not cross.permute(0, 2, 3, 1)[~mask[:, None, :].expand(-1, 3, -1)].any()
    # a set alone gives the descriptor it gets in a batch, however much padding follows it
    alone = aggregator.forward_test(x[1:2, :4])
    torch.testing.assert_close(alone, reference[1:2])


def test_a_set_without_features_is_refused_by_name():
    with pytest.raises(ValueError, match=r"at least one valid local feature; set\(s\) \[1\] have none"):
        model().forward_test(padded([3, 0]))


def test_it_trains_through_the_arcface_head():
    torch.manual_seed(0)
    aggregator = TokenAggregator(**SMALL, num_classes=4).train()
    loss, logits = aggregator(padded([10, 5, 2, 7]), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert logits.shape == (4, 4) and torch.isfinite(loss)
    assert aggregator.input_proj[0].weight.grad.abs().sum() > 0


def test_delg_local_branch_gives_delf_like_local_features_for_the_aggregator():
    torch.manual_seed(0)
    delg = DELG(backbone="resnet18", local_dim=8, pretrained=False).eval()
    image = torch.randn(1, 3, 64, 48)
    found = delg.forward_local(image, num_features=10)
    assert found.descriptors.shape == (10, 8) and found.attentions[0] == 1
    assert (found.attentions[:-1] >= found.attentions[1:]).all()
    torch.testing.assert_close(found.descriptors.norm(dim=1), torch.ones(10))  # L2 over the channels, per position
    (x, y), scale = found.locations[0].tolist(), found.scales[0].item()
    with torch.no_grad():
        attention, features = delg.local.maps(delg.backbone.forward_layers(rescaled(image, scale))[0])
    torch.testing.assert_close(found.descriptors[0], features[0, :, y, x])
    assert attention[0, 0, y, x] == attention.max()  # the best over all scales is the best of its own
    descriptors = LocalAggregation(delg, model()).forward_test(torch.cat([image, image.flip(-1)]))
    assert descriptors.shape == (2, 12) and torch.isfinite(descriptors).all()


def test_attention_maps_put_each_features_weight_where_it_lies():
    torch.manual_seed(0)
    how = HOW(backbone="resnet18", skip_layer=1, out_dim=8, pretrained=False).eval()
    image = torch.randn(1, 3, 96, 64)
    maps = LocalAggregation(how, model()).attention_maps(image)
    found = how.forward_local(image, num_features=10)
    assert maps["tokenizer"].shape == maps["refinement"].shape == (1, 3, 6, 4)  # layer3 at scale 1: stride 16
    # every feature shares itself among the tokens; every token's cross-attention sums to 1 over the features
    torch.testing.assert_close(maps["tokenizer"].sum(), torch.tensor(float(len(found.descriptors))))
    torch.testing.assert_close(maps["refinement"].sum(dim=(2, 3)), torch.ones(1, 3))


def test_evaluation_takes_the_aggregator_at_scale_1_unless_told_otherwise():
    from networks import Token
    from retrieval.settings import ExtractionSettings, model_scales

    aggregation = LocalAggregation(HOW(backbone="resnet18", pretrained=False), model(local_dim=128))
    default = ExtractionSettings("agg.pth")
    assert model_scales(default, aggregation).scales == [1.0]
    chosen = ExtractionSettings("agg.pth", scales=[1.0, 2 ** 0.5])
    assert model_scales(chosen, aggregation).scales == [1.0, 2 ** 0.5]
    token = Token(backbone="resnet18", num_classes=None, dim=16, out_dim=8, heads=2, pretrained=False)
    assert model_scales(default, token).scales == default.scales
