"""The authors' released files, read into our models: key names mapped onto ours, and the architecture inferred
from the keys and shapes when a file does not say it (docs/FACTS.md, "Released checkpoints", "The baselines",
"deep-image-retrieval's models").

- The Token repository's files (Token, R-MAC, SOLAR, DELG, NetVLAD) are plain state_dicts whose trunk is
  ``backbone.block1..5``; ``RELEASED_TO_OURS`` renames them.
- deep-image-retrieval's ``.pt`` files are pickled dicts (``model_options``, ``state_dict``, ``preprocess``, ``pca``)
  whose PCA whitenings are scikit-learn objects. ``PICKLE_MODULE`` reads them without scikit-learn and without
  running code: the PCA class becomes ``FittedPCA``, a bag of its attributes, and nothing else but tensors, numpy
  arrays and plain data is admitted.
- HOW's training code saves its validation history as a ``collections.defaultdict(list)``, which
  ``weights_only=True`` refuses even where allowed (torch's unpickler fills only plain dicts); ``PICKLE_MODULE``
  reads it as that defaultdict, its factory checked to be ``list``. HOW's layouts are ``weights.how``'s.
"""

import collections
import math
import re

import numpy as np

from networks.pca_whitening import PCAWhitening
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError, restricted_pickle_module

# Released key prefix -> ours, first match wins.
RELEASED_TO_OURS = [
    (r"backbone\.block1\.0\.", "backbone.conv1."),
    (r"backbone\.block1\.1\.", "backbone.bn1."),
    (r"backbone\.block([2-5])\.", lambda m: f"backbone.layer{int(m[1]) - 1}."),
    # Token
    (r"tr\.conv\.", "input_proj."),
    (r"tr\.encoder\.(\d+)\.bn\.", r"lfsa.\1.norm."),
    (r"tr\.encoder\.(\d+)\.mlp\.", r"lfsa.\1.linear."),
    (r"tr\.encoder\.(\d+)\.attn\.", r"lfsa.\1.attn."),
    (r"tr\.query$", "tokenizer.queries"),
    (r"tr\.token_norm\.", "tokenizer.proj."),
    (r"tr\.decoder\.(\d+)\.bn([12])\.", r"refinement.\1.norm\2."),
    (r"tr\.decoder\.", "refinement."),
    (r"tr\.proj\.", "projection."),
    (r"classifier\.", "arcface."),
    # SOLAR
    (r"pooling\.", "soa."),
    # DELG
    (r"classifier_block5\.", "arcface."),
    (r"classifier_block4\.", "local.arcface."),
    (r"attention\.att_conv1\.", "local.attention."),
    (r"reduction\.", "local.reduction."),
    # NetVLAD
    (r"vlad\.conv\.", "input_proj."),
    (r"vlad\.encoder\.bn\.", "lfsa.norm."),
    (r"vlad\.encoder\.mlp\.", "lfsa.linear."),
    (r"vlad\.encoder\.attn\.", "lfsa.attn."),
    (r"vlad\.centroids$", "centroids"),
    (r"vlad\.proj\.", "projection."),
]

# deep-image-retrieval's torchvision-layout names -> ours
DIRTORCH_TO_OURS = [
    (r"(conv1|bn1|layer[1-4])\.", r"backbone.\1."),
    (r"adpool\.p$", "pool.p"),
]

# (bottleneck blocks?, blocks in layer3) -> torchvision ResNet
RESNET_BY_LAYER3 = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50",
                    (True, 23): "resnet101", (True, 36): "resnet152"}


def rename(key, rules=RELEASED_TO_OURS):
    for pattern, repl in rules:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    return key


def released_to_ours(key):
    return rename(key, RELEASED_TO_OURS)


def count(state, prefix):
    """The number of numbered blocks ``prefix0.``, ``prefix1.``, ... in ``state``."""
    indices = {int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def infer_backbone(state, path):
    bottleneck = any(k.startswith("backbone.layer1.0.conv3.") for k in state)
    depth = (bottleneck, count(state, "backbone.layer3."))
    if depth not in RESNET_BY_LAYER3:
        raise InputError(f"{path}: backbone with {depth[1]} blocks in layer3 is not a torchvision ResNet")
    return RESNET_BY_LAYER3[depth]


def infer_token_config(state, path):
    """Token constructor arguments read off the keys and shapes of ``state`` (our names)."""
    if "input_proj.0.weight" not in state or "projection.0.weight" not in state:
        missing = "input_proj.0.weight" if "input_proj.0.weight" not in state else "projection.0.weight"
        raise InputError(f"{path}: not a Token checkpoint, no key '{missing}' (released name "
                         "'tr.conv.0.weight' / 'tr.proj.0.weight')")
    config = dict(model="token", backbone=infer_backbone(state, path), dim=state["input_proj.0.weight"].shape[0],
                  out_dim=state["projection.0.weight"].shape[0], lfsa_blocks=count(state, "lfsa."))
    if "tokenizer.queries" in state or "tokenizer.centres" in state or "tokenizer.ema_centres" in state:
        kind, centres = next((kind, state[f"tokenizer.{name}"])
                             for kind, name in (("attention", "queries"), ("learned", "centres"), ("vq", "ema_centres"))
                             if f"tokenizer.{name}" in state)
        blocks = count(state, "refinement.")
        config.update(aggregation="tokens", tokenizer=kind, num_tokens=centres.shape[1], refinement_blocks=blocks,
                      cross_attention=blocks == 0 or "refinement.0.cross_attn.q.weight" in state,
                      self_attention=blocks == 0 or "refinement.0.self_attn.q.weight" in state)
    else:
        config["aggregation"] = "gem" if "pool.p" in state else "spoc"
    return config


def unknown_layout(path, top_level):
    """The error for a file of no layout this code knows, naming its ``top_level`` keys."""
    shown = ", ".join(map(repr, top_level[:8])) + (f" ... ({len(top_level)} in all)" if len(top_level) > 8 else "")
    return InputError(f"{path}: not a model checkpoint this code knows: none of the keys that tell a model "
                      "(Token 'tr.conv.0.weight', R-MAC / SOLAR / DELG 'whiten.weight', NetVLAD 'vlad.centroids', "
                      "deep-image-retrieval 'fc.weight', HOW '_version', 'meta' or 'features.*'); its top-level "
                      f"keys: {shown or 'none'}")


def _whitened(state, model):
    out_dim = state["whiten.weight"].shape[0]
    return dict(model=model, out_dim=out_dim, arcface_scale=math.sqrt(out_dim))


def infer_config(state, path, top_level=None):
    """The ``model_config`` of any model file without one (our names), read off its keys and shapes: the model is
    told by a key only it has (``centroids``: NetVLAD, ``soa.``: SOLAR, ``local.``: DELG, ``input_proj.``: Token,
    ``whiten``: R-MAC, ``fc``: deep-image-retrieval's); the ArcFace scales are sqrt(descriptor size) as released.
    HOW's layouts are told apart before (``weights.how``). ``top_level``: the file's top-level keys, named when none
    of these is there (default: ``state``'s)."""
    if "centroids" in state:
        centroids = state["centroids"]
        config = dict(model="netvlad", dim=centroids.shape[1], clusters=centroids.shape[2])
    elif "soa.f.0.weight" in state and "whiten.weight" in state:
        config = _whitened(state, "solar")
    elif "local.reduction.weight" in state and "whiten.weight" in state:
        local_dim = state["local.reduction.weight"].shape[0]
        config = dict(_whitened(state, "delg"), local_dim=local_dim, local_scale=math.sqrt(local_dim))
    elif "input_proj.0.weight" in state:
        return infer_token_config(state, path)
    elif "whiten.weight" in state:
        config = _whitened(state, "rmac")
    elif "fc.weight" in state:
        out_dim = state["fc.weight"].shape[0]
        config = dict(model="apgem", out_dim=out_dim, pooling="gem" if "pool.p" in state else "mac",
                      arcface_scale=math.sqrt(out_dim))
    else:
        raise unknown_layout(path, list(state) if top_level is None else top_level)
    return dict(config, backbone=infer_backbone(state, path))


# ---------------------------------------------------------------- deep-image-retrieval


class FittedPCA:
    """What a pickled scikit-learn ``PCA`` holds, as plain attributes (``mean_``, ``components_``, ...); no
    scikit-learn code is imported or run to read it."""

    def __setstate__(self, state):
        self.__dict__.update(state)


PCA_CLASSES = [("sklearn.decomposition._pca", "PCA"), ("sklearn.decomposition.pca", "PCA")]  # sklearn >= / < 0.22


def history(factory):
    """HOW's validation history, ``collections.defaultdict(list)``; any other factory is refused."""
    if factory is not list:
        raise UnsafePickleError(f"refuses a collections.defaultdict of {factory!r}: only HOW's defaultdict(list)")
    return collections.defaultdict(list)


HISTORY_CLASSES = {("collections", "defaultdict"): history, ("builtins", "list"): list,
                   ("__builtin__", "list"): list}  # protocol 2 (torch.save's) writes Python 2's module name
PICKLE_MODULE = restricted_pickle_module(tensors=True, substitutes={
    **{cls: FittedPCA for cls in PCA_CLASSES}, **HISTORY_CLASSES})


def is_deep_image_retrieval(obj):
    return isinstance(obj, dict) and "model_options" in obj and "state_dict" in obj


def pca_whitening(pca, name, path):
    """The ``PCAWhitening`` of a fitted ``PCA`` read from ``path``'s ``pca[name]``."""
    needed = ("mean_", "components_", "explained_variance_", "whiten")
    missing = [attr for attr in needed if not hasattr(pca, attr)]
    if not isinstance(pca, FittedPCA) or missing:
        raise InputError(f"{path}: pca[{name!r}] is not a fitted scikit-learn PCA "
                         f"(no {', '.join(missing) or 'PCA object'})")
    arrays = [np.asarray(getattr(pca, attr), dtype=np.float64) for attr in needed[:3]]
    try:
        return PCAWhitening(*arrays, whiten=bool(pca.whiten))
    except ValueError as err:
        raise InputError(f"{path}: pca[{name!r}]: {err}") from None


def from_deep_image_retrieval(obj, path):
    """(state_dict as in the file, whitenings, preprocess) of a deep-image-retrieval file's dict; refuses the
    variant without an ``fc`` layer."""
    options = obj["model_options"] if isinstance(obj["model_options"], dict) else {}
    if options.get("without_fc"):
        raise InputError(f"{path}: a model without its fc layer (model_options without_fc) is not supported")
    pcas, preprocess = obj.get("pca") or {}, obj.get("preprocess")
    if not isinstance(pcas, dict):
        raise InputError(f"{path}: its 'pca' is a {type(pcas).__name__}, expected a dict of fitted PCAs by name")
    whitenings = {name: pca_whitening(pca, name, path) for name, pca in pcas.items()}
    return obj["state_dict"], whitenings, dict(preprocess) if isinstance(preprocess, dict) else {}


def dirtorch_to_ours(key):
    return rename(key, DIRTORCH_TO_OURS)


def dirtorch_shapes(state):
    """A deep-image-retrieval state_dict in our names with our shapes: their GeM power has shape (1,), ours is a
    scalar."""
    if "pool.p" in state:
        state = {**state, "pool.p": state["pool.p"].reshape(())}
    return state
