"""Read pickles without running code: only plain containers, numbers, strings and numpy arrays load.

Ground-truth files (``gnd_*.pkl``) come from the internet and split caches from disk; ``pickle.load`` on
either could call any function. This unpickler admits the few globals that numpy arrays need and refuses
everything else with ``UnsafePickleError``. ``restricted_pickle_module`` gives ``torch.load`` the same unpickler
(``pickle_module=``), admitting torch's tensor rebuilders too and mapping named classes onto stand-ins that only
hold data (a file's scikit-learn objects, read without scikit-learn).
"""

import io
import pickle
import types

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


# torch.save's tensors (its unpickler resolves the storage classes itself)
_TORCH_TENSORS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                  ("torch._utils", "_rebuild_tensor")}


class _RestrictedUnpickler(pickle.Unpickler):
    allowed = _ALLOWED
    substitutes = {}

    def find_class(self, module, name):
        if (module, name) in self.substitutes:
            return self.substitutes[module, name]
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refuses to load {module}.{name}: only plain data may be unpickled")


def restricted_pickle_module(tensors=False, substitutes=None):
    """A stand-in for the ``pickle`` module (``Unpickler``, ``load``) for ``torch.load(..., weights_only=False,
    pickle_module=...)``: plain data and numpy arrays, torch tensors if ``tensors``, and each
    ``(module, name)`` of ``substitutes`` read as the class it maps to (instances rebuilt by their ``__setstate__``)."""
    allowed = _ALLOWED | (_TORCH_TENSORS if tensors else set())
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": allowed, "substitutes": dict(substitutes or {})})
    module = types.ModuleType("restricted_pickle")
    module.Unpickler, module.UnpicklingError = unpickler, pickle.UnpicklingError
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()
    return module


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
