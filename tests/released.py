"""Released-layout state_dicts filled by the rules of docs/FACTS.md, "Golden descriptors" (Token: sines) and
"The baselines" (R-MAC, SOLAR, DELG, NetVLAD, AP-GeM: seeded normals); deep-image-retrieval files written as
their code writes them."""

import functools
import math
import sys
import types

import numpy as np
import torch

from tests.conftest import DATA


def released_keys(depth, name="token"):
    """(key, shape) rows of ``released-{name}-r{depth}-keys.tsv`` in file order."""
    rows = []
    for line in (DATA / f"released-{name}-r{depth}-keys.tsv").read_text().splitlines()[1:]:
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


@functools.cache
def _baseline_fill(t, kind, shape):
    """``kind``: the key's suffix that picks its formula, or ``ndim`` for any other tensor of 2+ dims."""
    if kind == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    u = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + t), dtype=torch.float64)
    if kind == ".p":
        v = 3 + 0.1 * u
    elif kind == "running_var":
        v = 2 + 0.25 * u**2
    elif kind == "running_mean":
        v = 0.01 * u
    elif kind == "ndim":
        v = u * math.sqrt(2 / math.prod(shape[1:]))
    elif kind == "weight":
        v = 1 + 0.1 * u
    else:
        v = 0.01 * u
    return v.float()


def baseline_value(t, key, shape):
    """The baselines' rule: u ~ N(0, 1) from a generator seeded 1000 + t, shaped by the key's kind. The five
    baselines share their trunk's keys and positions, so values are cached (and handed out as copies)."""
    suffixes = ("num_batches_tracked", ".p", "running_var", "running_mean")
    kind = next((s for s in suffixes if key.endswith(s)), "ndim" if len(shape) >= 2 else key.rsplit(".", 1)[-1])
    return _baseline_fill(t, kind, shape).clone()


def baseline_state_dict(name, depth=101):
    """The golden rule's state_dict of released baseline ``name`` (rmac, solar, delg, netvlad, apgem)."""
    return {key: baseline_value(t, key, shape) for t, (key, shape) in enumerate(released_keys(depth, name))}


def baseline_inputs(shapes):
    return [torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(7 + i),
                        dtype=torch.float64) for i, shape in enumerate(shapes)]


# our DELG names -> the released ones, the trunk's as in every Token repository file (docs/FACTS.md, "The baselines")
OURS_TO_RELEASED = [("backbone.conv1.", "backbone.block1.0."), ("backbone.bn1.", "backbone.block1.1."),
                    *((f"backbone.layer{i}.", f"backbone.block{i + 1}.") for i in range(1, 5)),
                    ("arcface.", "classifier_block5."), ("local.arcface.", "classifier_block4."),
                    ("local.attention.", "attention.att_conv1."), ("local.reduction.", "reduction.")]


def released_names(state):
    """``state`` (a DELG's, or any model's trunk) in the names of the Token repository's released files."""

    def released(key):
        return next((new + key[len(old):] for old, new in OURS_TO_RELEASED if key.startswith(old)), key)
    return {released(k): v for k, v in state.items()}


# ---------------------------------------------------------------- deep-image-retrieval files, as their code writes them


class _PCA:
    """Stands in for scikit-learn's class when writing a file: pickled under its name with a fitted PCA's state."""


_PCA.__module__, _PCA.__qualname__, _PCA.__name__ = "sklearn.decomposition._pca", "PCA", "PCA"


def fitted_pca(x):
    """A ``PCA(whiten=True).fit(x)``'s attributes (scikit-learn 1.x names), computed here with numpy."""
    mean = x.mean(axis=0)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    pca = _PCA()
    variance = sing**2 / (len(x) - 1)
    pca.__dict__.update(
        n_components=None, copy=True, whiten=True, svd_solver="auto", tol=0.0, iterated_power="auto",
        n_oversamples=10, power_iteration_normalizer="auto", random_state=None, n_features_in_=x.shape[1],
        _fit_svd_solver="full", mean_=mean, n_samples_=len(x), noise_variance_=np.float64(0.0), n_components_=len(sing),
        components_=vt, explained_variance_=variance, explained_variance_ratio_=variance / variance.sum(),
        singular_values_=sing, _sklearn_version="1.9.1")
    return pca


def save_deep_image_retrieval(path, state, pca, monkeypatch, legacy=False):
    """``torch.save`` of the dict their training writes (``legacy``: in the format of torch < 1.6, as the released
    files are); the fake scikit-learn modules exist only while pickling."""
    with monkeypatch.context() as m:
        for name in ("sklearn", "sklearn.decomposition", "sklearn.decomposition._pca"):
            m.setitem(sys.modules, name, types.ModuleType(name))
        sys.modules["sklearn.decomposition._pca"].PCA = _PCA
        torch.save({"model_options": {"arch": "resnet101_rmac", "out_dim": 2048, "pooling": "gem", "gemp": 3,
                                      "without_fc": False},
                    "state_dict": state, "preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                    "pca": {"Landmarks_clean": pca}}, path, _use_new_zipfile_serialization=not legacy)
    assert "sklearn" not in sys.modules


def dirtorch_names(model):
    """An APGeM's state_dict in deep-image-retrieval's names (no ``backbone.``, ``adpool.p`` of shape (1,))."""
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if not k.startswith("arcface.")}
    if "pool.p" in state:
        state["adpool.p"] = state.pop("pool.p").reshape(1)
    return state
