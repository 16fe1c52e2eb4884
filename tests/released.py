"""Released-layout state_dicts filled by the rule of docs/FACTS.md, "Golden descriptors"."""

import math

import torch

from tests.conftest import DATA


def released_keys(depth):
    """(key, shape) rows of ``released-token-r{depth}-keys.tsv`` in file order."""
    rows = []
    for line in (DATA / f"released-token-r{depth}-keys.tsv").read_text().splitlines()[1:]:
        key, shape, _ = line.split("\t")
        rows.append((key, () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))))
    return rows


def fan_in(key, shape):
    """The product of all dims but the first; the token queries ``tr.query`` (1 x L x d) count d, as the rule says."""
    return shape[-1] if key == "tr.query" else math.prod(shape[1:])


def filled_value(t, key, shape):
    n = math.prod(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    s = torch.sin(0.37 * (t + 1) + 0.013 * torch.arange(n, dtype=torch.float64)).reshape(shape)
    if key.endswith("running_var"):
        v = 1 + 0.25 * s**2
    elif key.endswith("running_mean"):
        v = 0.1 * s
    elif len(shape) >= 2:
        v = s / math.sqrt(fan_in(key, shape))
    elif key.endswith("weight"):
        v = 1 + 0.1 * s
    else:
        v = 0.1 * s
    return v.float()


def released_state_dict(depth, num_classes=97):
    """The golden rule's state_dict; ``classifier.weight`` resized to ``num_classes`` rows (97 in the golden)."""
    state = {}
    for t, (key, shape) in enumerate(released_keys(depth)):
        if key == "classifier.weight":
            shape = (num_classes, shape[1])
        state[key] = filled_value(t, key, shape)
    return state


def golden_inputs(shapes):
    out = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        n = math.prod(shape)
        s = torch.sin(0.001 * torch.arange(n, dtype=torch.float64) * 7.0).reshape(shape)
        out.append((s.float() * 2.0).double())
    return out
