"""The PCA whitening of descriptors at search time, as the command lines name it: a ``W.npz`` file (``--whiten-file``,
written by ``index.py whiten``) or a checkpoint's learned whitening (``--whiten NAME``). The math is
``networks.pca_whitening``."""

import io
from pathlib import Path

import numpy as np

from networks.pca_whitening import PCAWhitening
from utils.atomic import atomic_write
from utils.errors import InputError

DEFAULT_POWER = 0.25  # deep-image-retrieval's --whitenp default
MAX_POWER = 1.0  # 0.5 is full whitening; a variance raised to a power far above overflows or vanishes
BLOCK_ROWS = 65536  # rows whitened at a time (the whitening computes in float64)


def save_whitening(path, whitening):
    """``whitening`` as an ``.npz`` of its arrays at ``path``, written atomically; the path."""
    buffer = io.BytesIO()
    np.savez(buffer, **whitening.to_arrays())
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)


def read_whitening(path, flag="--whiten-file"):
    """The ``PCAWhitening`` in the ``.npz`` at ``path``; ``InputError`` naming ``flag`` and the file otherwise."""
    expected = "a whitening .npz with mean, components, variance and whiten (python index.py whiten writes one)"
    if not Path(path).is_file():
        raise InputError(f"{flag} {path} not found: expected {expected}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return PCAWhitening.from_arrays(arrays)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{flag} {path}: expected {expected} ({err})") from None


def learned_whitening(model, name):
    """The whitening ``name`` that the checkpoint's model carries (``model.whitening``, a dict of name to
    ``PCAWhitening``); ``InputError`` listing the known names otherwise."""
    known = getattr(model, "whitening", None) or {}
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise InputError(f"--whiten {name}: this checkpoint has no learned whitening of that name; known: {listed}")
    return known[name]


def check_dim(whitening, dim, source):
    """Raise ``InputError`` unless ``whitening`` takes ``dim``-dimensional descriptors."""
    if whitening.dim != dim:
        raise InputError(f"{source}: the whitening takes {whitening.dim}-d descriptors, the model gives {dim}-d")
    return whitening


def check_directions(flag, dims, count, dim):
    """Raise ``InputError`` naming ``flag`` unless a PCA of ``count`` descriptors of dimension ``dim`` has
    ``dims`` directions (``PCAWhitening.max_directions``: 0 would whiten everything to zero, more would keep
    directions of zero variance)."""
    most = PCAWhitening.max_directions(count, dim)
    if not 1 <= dims <= most:
        raise InputError(f"{flag} {dims}: expected a whole number from 1 to {most} ({count} descriptors of "
                         f"dimension {dim} have at most {most} directions)")
    return dims


def check_power(power, flag="--whiten-power"):
    """Raise ``InputError`` naming ``flag`` unless ``power`` is a number from 0 to ``MAX_POWER``: a variance
    raised to 1e308 is infinite or 0, and every whitened descriptor NaN (nan and inf are refused as well)."""
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power <= MAX_POWER:
        raise InputError(f"{flag} {power}: expected a number from 0 to {MAX_POWER:g} (0.5 full whitening, 0 a plain "
                         "PCA projection)")
    return power


def whiten_rows(whitening, x, power):
    """``whitening(x, power)`` as float32, over blocks of ``BLOCK_ROWS`` rows so that the float64 temporaries of
    a million descriptors stay small."""
    out = np.empty((len(x), whitening.components.shape[0]), dtype=np.float32)
    for start in range(0, len(x), BLOCK_ROWS):
        out[start:start + BLOCK_ROWS] = whitening(x[start:start + BLOCK_ROWS], power)
    return out


def chosen_whitening(model, whiten=None, whiten_file=None):
    """The whitening that ``--whiten NAME`` (learned, in the checkpoint) or ``--whiten-file W.npz`` names, checked
    against the model's descriptor size; None when neither is given."""
    dim = model.config.descriptor_dim
    if whiten is not None:
        return check_dim(learned_whitening(model, whiten), dim, f"--whiten {whiten}")
    if whiten_file is not None:
        return check_dim(read_whitening(whiten_file), dim, f"--whiten-file {whiten_file}")
    return None
