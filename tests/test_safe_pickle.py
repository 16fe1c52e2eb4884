import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.released import fitted_pca, save_deep_image_retrieval
from utils.errors import InputError
from utils.safe_pickle import UnsafePickleError, safe_load


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_plain_data_and_arrays_load(tmp_path):
    data = {"imlist": ["a", "b"], "gnd": [{"bbx": [1.0, 2.0, 3.0, 4.0], "easy": np.arange(3)}], "n": np.int64(7)}
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps(data))
    out = safe_load(path)
    assert out["imlist"] == ["a", "b"] and out["n"] == 7
    np.testing.assert_array_equal(out["gnd"][0]["easy"], np.arange(3))


def test_code_running_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(UnsafePickleError, match="evil.pkl.*posix.system|evil.pkl.*nt.system"):
        safe_load(path)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_garbage_is_an_input_error(tmp_path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x04junk")
    with pytest.raises(InputError, match="junk.pkl"):
        safe_load(path)


class _ObjectArrayFromBytes:
    """Pickled as numpy writes an array, but of dtype object filled from raw bytes (read as pointers: a segfault)."""

    def __init__(self, dtype=None):
        self.dtype = np.dtype(object) if dtype is None else dtype

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (0,), b"b"),
                (1, (4,), self.dtype, False, b"\x41" * 32))


class _FloatMarkedAsObjects:
    """A ``float64`` dtype whose pickled flags (1) say it holds Python objects: numpy keeps them, the array comes out
    with ``hasobject`` over raw bytes."""

    def __reduce__(self):
        return (np.dtype, ("f8", False, True), (3, "<", None, None, None, -1, -1, 1))


class _RecordWithAnObjectField:
    """A structured ``V8`` dtype whose one field is an object, its pickled flags (0) saying it holds none: numpy
    then fills it from raw bytes, and printing or freeing the array follows those bytes as a pointer (exit 139)."""

    def __reduce__(self):
        return (np.dtype, ("V8", False, True),
                (3, "|", None, ("x",), {"x": (np.dtype(object), 0)}, 8, 1, 0))


def _load_in_child(path, defines_load):
    """Run the load in a child process: a segfault is an exit code here, not the end of pytest."""
    code = ("import sys\nfrom utils.errors import InputError\n" + defines_load +
            "\ntry:\n    print(load(sys.argv[1]))\nexcept InputError as err:\n    print(err)\n    sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("dtype", [np.dtype(object), _FloatMarkedAsObjects(), _RecordWithAnObjectField()],
                         ids=["object", "float-flagged-object", "record-with-object-field"])
def test_ground_truth_with_an_object_array_from_bytes_is_refused(tmp_path, dtype):
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"imlist": ["a"], "gnd": [{"bbx": _ObjectArrayFromBytes(dtype)}]}, protocol=2))
    out = _load_in_child(path, "from utils.safe_pickle import safe_load as load")
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "gnd_evil.pkl" in out.stdout and "only bool, int, uint, float and complex" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1


def test_released_pt_with_an_object_pca_mean_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "Resnet101-AP-GeM.pt"
    pca = fitted_pca(np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    pca.mean_ = _ObjectArrayFromBytes(_RecordWithAnObjectField())
    save_deep_image_retrieval(path, {"fc.weight": torch.zeros(2, 2)}, pca, monkeypatch)
    out = _load_in_child(path, "from weights.checkpoint import read_file\nfrom weights.released import PICKLE_MODULE\n"
                               "load = lambda path: read_file(path, 'a .pt', PICKLE_MODULE)")
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Resnet101-AP-GeM.pt" in out.stdout and "only bool, int, uint, float and complex" in out.stdout


def test_plain_arrays_of_every_number_kind_and_byte_order_still_load(tmp_path):
    arrays = [np.arange(6).astype(t).reshape(2, 3) for t in ("<f4", ">f8", "<i8", "u1", "?", "<c8")]
    arrays.append(np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    for protocol in (2, 5):
        path = tmp_path / f"arrays{protocol}.pkl"
        path.write_bytes(pickle.dumps({"arrays": arrays, "scalar": np.float32(1.5)}, protocol=protocol))
        out = safe_load(path)
        assert out["scalar"] == np.float32(1.5) and type(out["scalar"]) is np.float32
        for got, want in zip(out["arrays"], arrays, strict=True):
            assert type(got) is np.ndarray and got.dtype.kind == want.dtype.kind and got.itemsize == want.itemsize
            np.testing.assert_array_equal(got, want)
