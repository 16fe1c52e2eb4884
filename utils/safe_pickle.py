"""Read pickles without running code: only plain containers, numbers, strings and numpy arrays load.

Ground-truth files (``gnd_*.pkl``) come from the internet and split caches from disk; ``pickle.load`` on
either could call any function. This unpickler admits the few globals that numpy arrays need and refuses
everything else with ``UnsafePickleError``. ``restricted_pickle_module`` gives ``torch.load`` the same unpickler
(``pickle_module=``), admitting torch's tensor rebuilders too and mapping named classes onto stand-ins that only
hold data (a file's scikit-learn objects, read without scikit-learn).

numpy's own rebuilders trust their input: a dtype's ``__setstate__`` may mark ``f8`` as holding objects, and an
object array filled from raw bytes reads them as pointers (a segfault). So numpy's globals are replaced by
checked stand-ins: a dtype is only a plain number type (bool, int, uint, float, complex) rebuilt from its name and
byte order, and every array is built from bytes of such a dtype, or refused.
"""

import io
import pickle
import types

import numpy as np

from utils.errors import InputError

_ALLOWED = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # Python 3 protocol-2 pickles rebuild numpy buffers through it: str -> bytes only
}


class UnsafePickleError(InputError):
    """A pickle that asks for a global outside the allowed plain-data set, or an array that is not plain numbers."""


_PLAIN_KINDS = "biufc"


def _refuse_dtype(what):
    raise UnsafePickleError(f"refuses a numpy array of {what}: "
                            "only bool, int, uint, float and complex may be unpickled")


class _Dtype:
    """Stands for ``numpy.dtype`` in a pickle: keeps the name and byte order, never numpy's ``__setstate__``."""

    def __init__(self, name, align=False, copy=False):
        self.name, self.byteorder, self.flags = name, "=", None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or any(part is not None for part in state[2:5]):
            _refuse_dtype("a structured or sub-array type")
        self.byteorder, self.flags = state[1], state[7] if len(state) > 7 else None

    def resolve(self):
        dtype = _plain_dtype(self.name)
        if self.byteorder not in ("<", ">", "=", "|"):
            _refuse_dtype(f"byte order {self.byteorder!r}")
        if self.flags is not None and self.flags != dtype.flags:
            _refuse_dtype(f"type {dtype} with the flags {self.flags!r} of another type")
        return dtype if self.byteorder in ("=", "|") else dtype.newbyteorder(self.byteorder)


def _plain_dtype(spec):
    """The numpy dtype ``spec`` names (a ``_Dtype``, or a type code as str/bytes), if it is plain numbers."""
    if isinstance(spec, _Dtype):
        return spec.resolve()
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 8:
        _refuse_dtype(f"type {type(spec).__name__}")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        _refuse_dtype(f"type {spec!r}")
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        _refuse_dtype(f"type {dtype}")
    return np.dtype(dtype.str)


def _raw_bytes(data):
    if isinstance(data, str):  # Python 2 pickles read with encoding="latin1"
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"refuses a numpy array built from {type(data).__name__}: only raw bytes of numbers")
    return bytes(data)


class _Array(np.ndarray):
    """Stands for ``numpy.ndarray`` while unpickling: only plain-number dtypes, filled only from bytes."""

    def __new__(cls, shape, dtype="f8"):
        return super().__new__(cls, shape, _plain_dtype(dtype))

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("refuses a numpy array state that is not (shape, dtype, order, bytes)")
        version, (shape, dtype, fortran, data) = state[:-4] or (1,), state[-4:]
        super().__setstate__((*version, shape, _plain_dtype(dtype), bool(fortran), _raw_bytes(data)))


def _reconstruct(subtype, shape, typecode):
    if subtype is not _Array:
        raise UnsafePickleError("refuses to rebuild an array of a class other than numpy.ndarray")
    return _Array(shape, typecode)


def _frombuffer(buffer, dtype, shape, order):
    array = np.frombuffer(_raw_bytes(buffer), dtype=_plain_dtype(dtype))
    return array.reshape(shape, order=order).copy().view(_Array)


def _scalar(dtype, data):
    dtype, data = _plain_dtype(dtype), _raw_bytes(data)
    if len(data) != dtype.itemsize:
        raise UnsafePickleError(f"refuses a numpy {dtype} scalar of {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype)[0]


_NUMPY = {("numpy", "ndarray"): _Array, ("numpy", "dtype"): _Dtype}
for _module in ("numpy.core", "numpy._core"):
    _NUMPY.update({(f"{_module}.multiarray", "_reconstruct"): _reconstruct,
                   (f"{_module}.multiarray", "scalar"): _scalar, (f"{_module}.numeric", "_frombuffer"): _frombuffer})


def _plain(obj):
    """``obj`` with the unpickler's checked arrays as plain ``numpy.ndarray`` (dicts and lists changed in place)."""
    if isinstance(obj, _Array):
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _plain(value)
    elif isinstance(obj, list):
        obj[:] = [_plain(value) for value in obj]
    elif isinstance(obj, tuple):
        return tuple(_plain(value) for value in obj)
    elif isinstance(obj, _Dtype):
        return obj.resolve()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        _plain(vars(obj))
    return obj


# torch.save's tensors (its unpickler resolves the storage classes itself)
_TORCH_TENSORS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                  ("torch._utils", "_rebuild_tensor")}


class _RestrictedUnpickler(pickle.Unpickler):
    allowed = _ALLOWED
    substitutes = {}

    def find_class(self, module, name):
        if (module, name) in _NUMPY:
            return _NUMPY[module, name]
        if (module, name) in self.substitutes:
            return self.substitutes[module, name]
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refuses to load {module}.{name}: only plain data may be unpickled")

    def load(self):
        return _plain(super().load())


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
