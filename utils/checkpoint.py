"""Training checkpoints: written atomically, found for ``--resume``, read back with ``weights_only=True``."""

import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch

from utils.atomic import atomic_write, write_error
from utils.errors import InputError

log = logging.getLogger(__name__)

LAST = "last.pth"
BEST = "best.pth"
REQUIRED = ("step", "steps_per_epoch", "state_dict", "model_config", "optimizer", "scheduler", "scaler", "args",
            "best_top1_err")


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


def load_checkpoint(path):
    """A train.py checkpoint as a dict, on the CPU, loaded with ``weights_only=True`` (no code runs)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: refused to load, it holds more than tensors and plain data ({err})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable checkpoint, truncated or not a torch file "
                         f"({err.__class__.__name__})") from None
    missing = [key for key in REQUIRED if not isinstance(obj, dict) or key not in obj]
    if missing:
        raise InputError(f"{path}: not a train.py checkpoint to resume from, no {', '.join(missing)}")
    return obj
