"""HOW's checkpoint layouts (docs/FACTS.md, "HOW checkpoints"), read into ``networks.HOW``.

Told apart in this order (the recommended loader of the HOW facts): a dict with ``state_dict`` is unwrapped and a
``module.`` prefix stripped (``weights.checkpoint.named_tensors``);

- ``_version`` (``'how/2020'``, HOW's training code): the architecture from ``net_params``;
- ``meta`` with ``skip_layer`` (HOW's older files): the architecture from ``meta``, the reduction named ``whiten``;
- otherwise a bare state_dict, the architecture inferred from its keys: ``features.*`` (HOW's names) or the Token
  repository's ``backbone.block1.{0,1}``, ``backbone.block2..5`` (read as ``features.0, 1, 4, 5, 6, 7``), with the
  reduction as ``dim_reduction.*`` or ``whiten.*``. A Token-style file with ``whiten.*`` and a ``block5`` is R-MAC's
  layout (its released file), so such a file counts as HOW only with ``dim_reduction.*`` or without ``block5``.
"""

from utils.errors import InputError
from weights.released import RESNET_BY_LAYER3, count, rename

VERSION = "how/2020"
HOW_TO_OURS = [
    (r"backbone\.block1\.0\.", "features.0."),
    (r"backbone\.block1\.1\.", "features.1."),
    (r"backbone\.block([2-5])\.", lambda m: f"features.{int(m[1]) + 2}."),
    (r"whiten\.", "dim_reduction."),
]


def how_to_ours(key):
    return rename(key, HOW_TO_OURS)


def _state_keys(obj):
    state = obj.get("state_dict", obj)
    return [key.removeprefix("module.") for key in state if isinstance(key, str)] if isinstance(state, dict) else []


def is_how(obj):
    """Whether ``obj``, a checkpoint's top-level dict without our ``model_config``, is in one of HOW's layouts."""
    if "_version" in obj or isinstance(obj.get("meta"), dict) and "skip_layer" in obj["meta"]:
        return True
    keys = _state_keys(obj)
    if any(key.startswith("features.") for key in keys):
        return True
    token_style = any(key.startswith("backbone.block1.") for key in keys)
    block5 = any(key.startswith("backbone.block5.") for key in keys)
    return token_style and ("dim_reduction.weight" in keys or "whiten.weight" in keys and not block5)


def _setting(settings, key, path, where):
    if not isinstance(settings, dict) or key not in settings:
        raise InputError(f"{path}: a HOW checkpoint without {where}['{key}']")
    return settings[key]


def how_config(obj, state, path):
    """The ``model_config`` of HOW checkpoint ``obj`` whose state_dict, in our names, is ``state``."""
    if "_version" in obj:
        if obj["_version"] != VERSION:
            raise InputError(f"{path}: HOW checkpoint version {obj['_version']!r}, this code reads {VERSION!r}")
        params = obj.get("net_params")
        architecture = _setting(params, "architecture", path, "net_params")
        skip_layer = _setting(params, "skip_layer", path, "net_params")
        kernel = _setting(_setting(params, "smoothing", path, "net_params"), "kernel_size", path,
                          "net_params['smoothing']")
        dim = _setting(_setting(params, "dim_reduction", path, "net_params"), "dim", path,
                       "net_params['dim_reduction']")
    elif "meta" in obj:
        meta = obj["meta"]
        architecture, skip_layer, dim = (_setting(meta, key, path, "meta")
                                         for key in ("architecture", "skip_layer", "dim"))
        kernel = meta.get("feat_pool_k", 3)
    else:
        architecture, skip_layer, dim, kernel = _inferred(state, path)
    if kernel != 3:
        raise InputError(f"{path}: HOW with smoothing kernel {kernel!r}; this code has HOW's 3x3 smoothing only")
    return {"model": "how", "backbone": architecture, "skip_layer": skip_layer, "out_dim": dim}


def _inferred(state, path):
    """(architecture, skip_layer, dim, smoothing kernel) read off a bare HOW state_dict's keys and shapes."""
    if "dim_reduction.weight" not in state:
        raise InputError(f"{path}: HOW weights without a reduction layer ('dim_reduction.weight' or 'whiten.weight')")
    depth = ("features.6.0.conv3.weight" in state, count(state, "features.6."))
    if depth not in RESNET_BY_LAYER3:
        raise InputError(f"{path}: HOW trunk with {depth[1]} blocks in layer3 (features.6) is not a torchvision ResNet")
    skip_layer = 0 if any(key.startswith("features.7.") for key in state) else 1
    return RESNET_BY_LAYER3[depth], skip_layer, state["dim_reduction.weight"].shape[0], 3
