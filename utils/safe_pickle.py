"""Read pickles without running code: only plain containers, numbers, strings and numpy arrays load.

Ground-truth files (``gnd_*.pkl``) come from the internet and split caches from disk; ``pickle.load`` on
either could call any function. This unpickler admits the few globals that numpy arrays need and refuses
everything else with ``UnsafePickleError``.
"""

import io
import pickle

from utils.errors import InputError

_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # Python 3 protocol-2 pickles rebuild numpy buffers through it: str -> bytes only
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(InputError):
    """A pickle that asks for a global outside the allowed plain-data set."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refuses to load {module}.{name}: only plain data may be unpickled")


def safe_load(path):
    """Unpickle ``path`` (latin1 for Python 2 pickles), refusing anything that could run code."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError) as err:
        raise InputError(f"{path}: not a readable pickle ({err.__class__.__name__}: {err})") from None
