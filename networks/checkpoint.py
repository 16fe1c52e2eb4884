"""Checkpoints, in one place: read safely (``weights_only=True``: nothing in a file runs code), written atomically,
and their layout defined once.

Read: the authors' released files (a plain state_dict in the released layout, docs/FACTS.md, "Released
checkpoints", or their training wrapper ``{'epoch', 'state_dict', 'optim'}``), DDP's ``module.`` prefix, and ours.
Released names are mapped onto ours; the architecture is taken from ``model_config`` when present, else inferred
from the keys and shapes.

Ours: every file holds ``model_state`` (``state_dict`` and ``model_config``); train.py's ``last.pth`` /
``best.pth`` add what resuming needs (``training_state``).
"""

import logging
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch

from networks.config import TokenConfig
from networks.token import Token
from utils.atomic import atomic_write, write_error
from utils.errors import InputError

log = logging.getLogger(__name__)

LAST = "last.pth"
BEST = "best.pth"
TRAINING_KEYS = ("step", "steps_per_epoch", "state_dict", "model_config", "optimizer", "scheduler", "scaler", "args",
                 "best_top1_err", "epoch")

# Released key prefix -> ours, first match wins.
RELEASED_TO_OURS = [
    (r"backbone\.block1\.0\.", "backbone.conv1."),
    (r"backbone\.block1\.1\.", "backbone.bn1."),
    (r"backbone\.block([2-5])\.", lambda m: f"backbone.layer{int(m[1]) - 1}."),
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
]

# (bottleneck blocks?, blocks in layer3) -> torchvision ResNet
RESNET_BY_LAYER3 = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50",
                    (True, 23): "resnet101", (True, 36): "resnet152"}


def released_to_ours(key):
    for pattern, repl in RELEASED_TO_OURS:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    return key


def read_file(path, expected="a Token checkpoint (.pth)"):
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``; every failure is an ``InputError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path} not found: expected {expected}") from None
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise InputError(f"{path}: refused to load, it holds objects that would run code when "
                             "unpickled; only tensors and plain data are accepted") from None
        raise InputError(f"{path}: not a readable checkpoint ({err})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable checkpoint, truncated or not a torch file "
                         f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def read_checkpoint(path):
    """The file's state_dict (our names, ``module.`` stripped), its ``model_config`` or None, and a map from
    our names back to the names in the file (for error messages)."""
    obj = read_file(path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state_dict or a dict with 'state_dict', got {type(obj).__name__}")
    config = obj.get("model_config")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise InputError(f"{path}: its state_dict holds entries that are not named tensors; not a model checkpoint")
    ours, original = {}, {}
    for key, value in state.items():
        stripped = key.removeprefix("module.")
        name = released_to_ours(stripped)
        ours[name], original[name] = value, key
    return ours, config, original


def _count(state, prefix):
    indices = {int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def infer_config(state, path):
    """Token constructor arguments read off the keys and shapes of ``state`` (our names)."""
    if "input_proj.0.weight" not in state or "projection.0.weight" not in state:
        missing = "input_proj.0.weight" if "input_proj.0.weight" not in state else "projection.0.weight"
        raise InputError(f"{path}: not a Token checkpoint, no key '{missing}' (released name "
                         "'tr.conv.0.weight' / 'tr.proj.0.weight')")
    bottleneck = any(k.startswith("backbone.layer1.0.conv3.") for k in state)
    depth = (bottleneck, _count(state, "backbone.layer3."))
    if depth not in RESNET_BY_LAYER3:
        raise InputError(f"{path}: backbone with {depth[1]} blocks in layer3 is not a torchvision ResNet")
    config = dict(backbone=RESNET_BY_LAYER3[depth], dim=state["input_proj.0.weight"].shape[0],
                  out_dim=state["projection.0.weight"].shape[0], lfsa_blocks=_count(state, "lfsa."))
    if "tokenizer.queries" in state or "tokenizer.centres" in state or "tokenizer.ema_centres" in state:
        kind, centres = next((kind, state[f"tokenizer.{name}"])
                             for kind, name in (("attention", "queries"), ("learned", "centres"), ("vq", "ema_centres"))
                             if f"tokenizer.{name}" in state)
        blocks = _count(state, "refinement.")
        config.update(aggregation="tokens", tokenizer=kind, num_tokens=centres.shape[1], refinement_blocks=blocks,
                      cross_attention=blocks == 0 or "refinement.0.cross_attn.q.weight" in state,
                      self_attention=blocks == 0 or "refinement.0.self_attn.q.weight" in state)
    else:
        config["aggregation"] = "gem" if "pool.p" in state else "spoc"
    return config


def check_fits(model, state, original, path):
    """Raise an InputError naming the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    name = lambda key: f"'{key}'" + (f" (in the file: '{original[key]}')" if original.get(key, key) != key else "")  # noqa: E731
    for key in expected:
        if key not in state:
            raise InputError(f"{path} does not fit Token({model.config.backbone}): missing key {name(key)}")
    for key in state:
        if key not in expected:
            raise InputError(f"{path} does not fit Token({model.config.backbone}): unexpected key {name(key)}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise InputError(f"{path} does not fit Token({model.config.backbone}): key {name(key)} has shape "
                             f"{tuple(value.shape)}, the model expects {tuple(expected[key].shape)}")


def load_token(path):
    """Build the Token that ``path`` holds, load its weights and return it in eval mode.

    The ArcFace classifier is loaded when the file has one (``model.arcface``), else left out.
    """
    state, config, original = read_checkpoint(path)
    try:
        config = TokenConfig.from_dict(config if config else infer_config(state, path))
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: its model_config does not describe a Token: {err}") from None
    num_classes = state["arcface.weight"].shape[0] if "arcface.weight" in state else None
    model = Token(config, num_classes=num_classes, pretrained=False)
    check_fits(model, state, original, path)
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------- ours


def model_state(model):
    """What every checkpoint of ours holds about the model: its weights and its ``TokenConfig``."""
    return {"state_dict": model.state_dict(), "model_config": model.config.to_dict()}


def training_state(model, optimizer, scheduler, scaler, args, step, steps_per_epoch, best_top1_err,
                   epoch_totals=None):
    """train.py's ``last.pth`` / ``best.pth``: ``model_state`` plus what resuming needs (``TRAINING_KEYS``).

    ``epoch_totals`` (saved mid-epoch: the epoch's loss sum, image counts and seconds so far) lets the resumed
    epoch's metrics cover the whole epoch; files without it (older, or saved at an epoch end) start from zero."""
    return {**model_state(model), "epoch": step // steps_per_epoch, "step": step, "steps_per_epoch": steps_per_epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "args": vars(args), "best_top1_err": best_top1_err, "epoch_totals": epoch_totals or {}}


def load_training_state(path):
    """A train.py checkpoint to resume from, as a dict on the CPU."""
    obj = read_file(path, "a train.py checkpoint such as last.pth")
    missing = [key for key in TRAINING_KEYS if not isinstance(obj, dict) or key not in obj]
    if missing:
        raise InputError(f"{path}: not a train.py checkpoint to resume from, no {', '.join(missing)}")
    return obj


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


def find_resume(resume, output_dir):
    """The checkpoint ``--resume`` names: None (start fresh), a path, or ``auto`` = ``output_dir/last.pth``
    when it exists (else None, said in the log)."""
    if resume is None:
        return None
    if resume == "auto":
        last = Path(output_dir) / LAST
        if last.is_file():
            return last
        log.info("--resume auto: no %s yet, starting a fresh run", last)
        return None
    if not Path(resume).is_file():
        raise InputError(f"--resume {resume}: not found; expected a train.py checkpoint such as {LAST}")
    return Path(resume)
