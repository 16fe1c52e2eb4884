"""Checkpoints, in one place: read safely (nothing in a file runs code), written atomically, and their layout
defined once.

Read (``load_model``): the authors' released files (Token, R-MAC, SOLAR, DELG, NetVLAD: a plain state_dict in the
released layout, docs/FACTS.md, "Released checkpoints" and "The baselines", or their training wrapper
``{'epoch', 'state_dict', 'optim'}``), deep-image-retrieval's ``.pt`` files, HOW's layouts (``weights.how``), DDP's
``module.`` prefix, and ours.
Torch files load with ``weights_only=True``; a deep-image-retrieval file, whose PCA objects that refuses, and a file
of HOW's training code, whose history that refuses, are read again through a restricted unpickler that admits only
tensors, arrays, plain data, the PCA's attributes and HOW's ``collections.defaultdict(list)`` (``weights.released``).
Released names are mapped onto ours; the architecture is taken from ``model_config`` when present, else inferred
from the keys and shapes. A file that is missing, unreadable, holds NaN or infinite weights, an unusable
``model_config`` or keys that do not fit is an ``InputError`` naming it.

Ours: every file holds ``model_state`` (``state_dict`` and ``model_config``, the config's ``to_dict`` with the
model's name); train.py's ``last.pth`` / ``best.pth`` add what resuming needs (``training.checkpointer``). Written
by ``save_checkpoint``: whole or not at all.
"""

import hashlib
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import torch

from networks.aggregator import LocalAggregation
from networks.config import TokenConfig, config_from_dict
from networks.models import build_model
from utils.atomic import atomic_write, write_error
from utils.errors import InputError
from utils.paths import open_regular_file
from utils.safe_pickle import UnsafePickleError
from weights import how, released, zoo

NUMPY_MAGIC = b"\x93NUMPY"
# What torch.load raises on a file that is no checkpoint: torch's weights-only unpickler also lets IndexError (an
# empty stack: b"bad\n"), KeyError (an unknown memo) and struct.error (a short opcode argument) out on garbage.
_NOT_A_CHECKPOINT = (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, struct.error,
                     zipfile.BadZipFile)


def _unreadable(path, err):
    return InputError(f"{path}: not a readable checkpoint, truncated or not a torch file "
                      f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''})")


def read_file(path, expected="a Token checkpoint (.pth)", pickle_module=None):
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``; every failure is an ``InputError``.

    With ``pickle_module`` (a restricted one, ``utils.safe_pickle.restricted_pickle_module``), a file that
    ``weights_only`` refuses is read again through it.
    """
    try:
        with open_regular_file(path, expected) as f:
            return _load(f, path, expected, pickle_module)
    except OSError as err:
        raise _unreadable(path, err) from None


def _load(f, path, expected, pickle_module):
    if f.read(len(NUMPY_MAGIC)) == NUMPY_MAGIC:
        raise InputError(f"{path}: a numpy array file (.npy), not a torch checkpoint; expected {expected}")
    try:
        f.seek(0)
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise InputError(f"{path}: not a readable checkpoint ({err})") from None
        if pickle_module is None:
            raise InputError(f"{path}: refused to load, it holds objects that would run code when "
                             "unpickled; only tensors and plain data are accepted") from None
    except _NOT_A_CHECKPOINT as err:
        raise _unreadable(path, err) from None
    try:
        f.seek(0)
        return torch.load(f, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    except UnsafePickleError as err:
        raise InputError(f"{path}: refused to load, it holds objects that would run code when unpickled ({err}); "
                         "only tensors, arrays and plain data are accepted") from None
    except (pickle.UnpicklingError, TypeError, AttributeError, *_NOT_A_CHECKPOINT) as err:
        raise _unreadable(path, err) from None


def named_tensors(state, path, rename):
    """``state`` with ``module.`` stripped and keys renamed by ``rename``, and a map from the new names back to the
    file's; refuses entries that are not string-named tensors and weights that are NaN or infinite."""
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state_dict or a dict with 'state_dict', got {type(state).__name__}")
    ours, original = {}, {}
    for key, value in state.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise InputError(f"{path}: its state_dict entry {key!r} is not a tensor named by a string "
                             f"({type(key).__name__} -> {type(value).__name__}); not a model checkpoint")
        if value.is_meta or value.layout != torch.strided or value.is_complex() or value.is_quantized:
            raise InputError(f"{path}: tensor '{key}' is a {_kind(value)} tensor; a model's weights are plain "
                             "real tensors with values")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise InputError(f"{path}: tensor '{key}' holds NaN or infinite values; the weights are corrupt "
                             "(a diverged run or a damaged file)")
        name = rename(key.removeprefix("module."))
        ours[name], original[name] = value, key
    return ours, original


def _kind(value):
    return "meta" if value.is_meta else "complex" if value.is_complex() else str(value.layout).removeprefix("torch.")


def read_checkpoint(path):
    """The file's state_dict (our names, ``module.`` stripped), its ``model_config`` (a dict, the one in the file
    or one inferred from the keys) and a map from our names back to the names in the file (for error messages).

    A deep-image-retrieval file also gives its whitenings and preprocessing: ``extras`` =
    ``{"whitening": ..., "preprocess": ...}``; an aggregator's, the record of its extractor: ``{"extractor": ...}``
    (``extractor_record``); empty for any other file.
    """
    obj = read_file(path, "a model checkpoint (.pth, or a deep-image-retrieval .pt)", released.PICKLE_MODULE)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state_dict or a dict with 'state_dict', got {type(obj).__name__}")
    extras = {}
    if released.is_deep_image_retrieval(obj):
        raw, whitening, preprocess = released.from_deep_image_retrieval(obj, path)
        extras = {"whitening": whitening, "preprocess": preprocess}
        state, original = named_tensors(raw, path, released.dirtorch_to_ours)
        state = released.dirtorch_shapes(state)
    elif "model_config" not in obj and how.is_how(obj):
        state, original = named_tensors(obj.get("state_dict", obj), path, how.how_to_ours)
        return state, how.how_config(obj, state, path), original, extras
    elif "state_dict" not in obj and not any(torch.is_tensor(value) for value in obj.values()):
        raise released.unknown_layout(path, list(obj))
    else:
        state, original = named_tensors(obj.get("state_dict", obj), path, released.released_to_ours)
    config = obj.get("model_config") if not extras else None
    if "extractor" in obj:  # an aggregator's: the extractor it was trained on
        extras = {"extractor": obj["extractor"]}
    return state, config or released.infer_config(state, path, list(obj)), original, extras


def config_of(settings, path, model=None):
    """The config of a ``model_config`` dict read from ``path`` (a ``model`` config class when given)."""
    try:
        return model.from_dict(settings) if model else config_from_dict(settings)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: its model_config cannot be used: {err}") from None


def check_fits(model, state, original, path):
    """Raise an InputError naming the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    what = f"{type(model).__name__}({model.config.backbone})"
    name = lambda key: f"'{key}'" + (f" (in the file: '{original[key]}')" if original.get(key, key) != key else "")  # noqa: E731
    for key in expected:
        if key not in state:
            raise InputError(f"{path} does not fit {what}: missing key {name(key)}")
    for key in state:
        if key not in expected:
            raise InputError(f"{path} does not fit {what}: unexpected key {name(key)}")
    for key, value in state.items():
        if expected[key].is_floating_point() and not value.is_floating_point():
            raise InputError(f"{path} does not fit {what}: key {name(key)} is a {value.dtype} tensor, the model "
                             "expects floating-point values")
        if value.shape != expected[key].shape:
            raise InputError(f"{path} does not fit {what}: key {name(key)} has shape "
                             f"{tuple(value.shape)}, the model expects {tuple(expected[key].shape)}")


def _build_and_load(config, state, original, path):
    """The model of ``config`` holding ``state``'s tensors (float32), built on the meta device: no time is spent
    initialising weights that the file replaces."""
    num_classes = state["arcface.weight"].shape[0] if "arcface.weight" in state else None
    with torch.device("meta"):
        model = build_model(config, num_classes=num_classes, pretrained=False)
    check_fits(model, state, original, path)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return model.eval()


def load_model(path, models_dir=zoo.MODELS_DIR):
    """The model that ``path`` holds, with its weights, in eval mode: any released file of the Token repository
    (Token, R-MAC, SOLAR, DELG, NetVLAD), a deep-image-retrieval ``.pt`` (AP-GeM and its siblings; its PCA
    whitenings in ``model.whitening``, a dict name -> ``PCAWhitening``) or a checkpoint of ours. ``path`` may
    also be a released model's name (``weights.zoo``, e.g. ``R101-SOLAR``), looked up in ``models_dir``.

    The ArcFace classifier is loaded when the file has one (``model.arcface``), else left out. An aggregator's file
    (train.py --model aggregator) gives a ``networks.LocalAggregation``: the aggregator behind the extractor that the
    file records (``load_extractor``).
    """
    path = zoo.resolve(path, models_dir)
    state, settings, original, extras = read_checkpoint(path)
    model = _build_and_load(config_of(settings, path), state, original, path)
    if model.config.model == "aggregator":
        return LocalAggregation(load_extractor(extras.pop("extractor", None), path), model)
    for name, value in extras.items():
        setattr(model, name, value)
    return model


def load_token(path, models_dir=zoo.MODELS_DIR):
    """``load_model`` for a file that must hold a Token: anything else is an ``InputError`` saying so."""
    path = zoo.resolve(path, models_dir)
    state, settings, original = _read_token(path)
    return _build_and_load(config_of(settings, path, TokenConfig), state, original, path)


def _read_token(path):
    obj = read_file(path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state_dict or a dict with 'state_dict', got {type(obj).__name__}")
    state, original = named_tensors(obj.get("state_dict", obj), path, released.released_to_ours)
    return state, obj.get("model_config") or released.infer_token_config(state, path), original


# ---------------------------------------------------------------- ours


def model_state(model):
    """What every checkpoint of ours holds about the model: its weights and its config; an aggregator's also the
    record of its extractor (``model.extractor_record``, set by train.py)."""
    record = getattr(model, "extractor_record", None)
    return {"state_dict": model.state_dict(), "model_config": model.config.to_dict(),
            **({"extractor": record} if record else {})}


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extractor_record(path):
    """What an aggregator's checkpoint records of the extractor of its local features: the file's absolute path,
    its size and the SHA-256 of its bytes (the same weights copied elsewhere keep it; retrained ones do not)."""
    if not os.path.isfile(path):
        raise InputError(f"--extractor {path}: not found; expected a model file with local features (HOW)")
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def find_extractor(record, path):
    """The file of the extractor that aggregator checkpoint ``path`` records: at its recorded path, else of the same
    name beside the checkpoint; an ``InputError`` when it is in neither place or its bytes differ."""
    if not (isinstance(record, dict) and isinstance(record.get("path"), str) and isinstance(record.get("sha256"), str)):
        raise InputError(f"{path}: an aggregator checkpoint without the record of its extractor (train.py --model "
                         "aggregator writes one); it cannot be evaluated")
    places = [Path(record["path"]), Path(path).parent / Path(record["path"]).name]
    found = next((place for place in places if place.is_file()), None)
    if found is None:
        raise InputError(f"{path}: its extractor {record['path']} is missing (nor beside the checkpoint); the "
                         "aggregator reads that file's local features: put it back")
    digest = file_sha256(found)
    if digest != record["sha256"]:
        raise InputError(f"{path}: its extractor {found} differs from the one it was trained on (SHA-256 "
                         f"{digest[:12]}..., recorded {record['sha256'][:12]}...): it aggregates that one's features")
    return found


def load_extractor(record, path):
    """The extractor model that aggregator checkpoint ``path`` records (``find_extractor``), in eval mode."""
    extractor = load_model(find_extractor(record, path))
    if not callable(getattr(extractor, "forward_local", None)):
        raise InputError(f"{path}: its extractor {record['path']} has no local features")
    return extractor


def save_checkpoint(obj, path):
    """``torch.save`` to a temporary file next to ``path``, flushed to disk, then renamed over ``path``.

    A kill or an error at any point leaves either the previous file or the new one, never half a file; a
    failed write (disk full) raises ``WriteError`` (an ``OSError`` and an ``InputError``) naming ``path``.
    """
    path = Path(path)
    atomic_write(path, lambda f: torch.save(obj, f))
    _fsync_directory(path.parent)


def copy_checkpoint(src, dst):
    """Make ``dst`` the same checkpoint as ``src``, atomically: a hard link where the file system allows (no
    second write of a large file; ``src`` is later replaced, never modified in place), else a byte copy."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        raise write_error(dst, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

