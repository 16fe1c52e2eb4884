import os
import pickle

import numpy as np
import pytest

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
