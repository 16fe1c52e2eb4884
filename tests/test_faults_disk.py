"""Writes that fail (``tests/faults.py`` indexes every fault): a full disk, simulated and real, a read-only
folder, a file where a folder is expected, the temporary files killed writers leave."""

import errno
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import demo
import retrieval.features as features_module
import visualize
from datasets.synthetic import cli as synthetic_cli
from retrieval.features import FeatureStore
from tests.conftest import ROOT, mount
from tests.faults import SUBPROCESS_ENV, one_error_line, wait_for
from tests.test_train import run
from utils.atomic import WriteError, atomic_write, temporary_path
from utils.distributed import DistEnv
from utils.errors import InputError
from utils.training_log import COLUMNS, write_metrics_row
from weights import save_checkpoint

CPU = DistEnv(0, 1, torch.device("cpu"))


# ---------------------------------------------------------------- disk full


def _half_then_enospc(real_write, only=None):
    """A stand-in for ``np.save`` (``real_write(file, obj)``) that writes half the bytes to the file and then fails
    as a full disk does; with ``only``, just for the temporary files of the file called so."""

    def write(f, obj, *args, **kwargs):
        buffer = io.BytesIO()
        real_write(buffer, obj, *args, **kwargs)
        if only is not None and f".{only}." not in Path(f.name).name:
            return f.write(buffer.getvalue())
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def _temporary_files(folder):
    return [path for path in Path(folder).rglob("*") if path.name.endswith(".tmp")]


def _block(start, stop, offset):
    return np.arange(start, stop, dtype=np.float32)[:, None] + np.full((1, 3), offset)


def _rows(offset):
    """A fake extractor (``FeatureStore.load``'s ``compute``): rows ``i + offset`` for each span."""
    return lambda spans, progress: (_block(start, stop, offset) for start, stop in spans)


def test_disk_full_while_writing_a_feature_shard(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, CPU)
    first, _ = store.load("set_db", {"k": 1}, 5, 3, _rows(0.0), shard_size=2)
    monkeypatch.setattr(features_module.np, "save", _half_then_enospc(np.save))
    with pytest.raises(WriteError) as error:  # the first shard of another key
        store.load("set_db", {"k": 2}, 5, 3, _rows(1.0), shard_size=2)
    monkeypatch.undo()
    assert error.value.errno == errno.ENOSPC and isinstance(error.value, OSError)
    assert isinstance(error.value, InputError)  # test.py: one line "error: ...", exit code 2
    assert f"cannot write {tmp_path / 'set_db' / 'shard_00000.npy'} (No space left on device)" in str(error.value)
    assert _temporary_files(tmp_path) == [] and not (tmp_path / "set_db" / "shard_00000.npy").exists()
    again, _ = store.load("set_db", {"k": 1}, 5, 3, _rows(9.0), shard_size=2)
    np.testing.assert_array_equal(again, first)  # the complete set of the old key is intact and reused


def test_disk_full_while_writing_the_merged_features(tmp_path, monkeypatch, capsys):
    store = FeatureStore(tmp_path, CPU)
    store.load("set_db", {"k": 1}, 5, 3, _rows(0.0), shard_size=2)
    monkeypatch.setattr(features_module.np, "save", _half_then_enospc(np.save, only="set_db.npy"))
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'set_db.npy'} \\(No space left on device\\)"):
        store.load("set_db", {"k": 2}, 5, 3, _rows(1.0), shard_size=2)
    monkeypatch.undo()
    assert _temporary_files(tmp_path) == []
    assert not (tmp_path / "set_db.json").exists()  # no sidecar: neither key's set is reused from set_db.npy
    np.testing.assert_array_equal(np.load(tmp_path / "set_db.npy"), _block(0, 5, 0.0))  # old file intact
    rerun, _ = store.load("set_db", {"k": 2}, 5, 3, lambda *a: pytest.fail("recomputed a shard"), shard_size=2)
    np.testing.assert_array_equal(rerun, _block(0, 5, 1.0))  # the rerun merges the shards already written
    assert "3 of 3 shards found" in capsys.readouterr().out


def test_disk_full_while_saving_a_checkpoint(gldv2, tmp_path, monkeypatch, capsys):
    path = tmp_path / "last.pth"
    save_checkpoint({"step": 1}, path)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: _half_then_enospc(lambda f, o: real_save(o, f))(f, obj))
    with pytest.raises(WriteError, match=f"cannot write {path} \\(No space left on device\\)") as error:
        save_checkpoint({"step": 2}, path)
    assert error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == [path] and torch.load(path, weights_only=True)["step"] == 1

    with pytest.raises(SystemExit) as stop:  # train.py reports it in one line, exit code 2
        run(gldv2, tmp_path / "run", "--epochs", "1")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert f"cannot write {tmp_path / 'run' / 'last.pth'} (No space left on device)" in line
    assert [p.name for p in (tmp_path / "run").iterdir() if "pth" in p.name] == []


# ---------------------------------------------------------------- issue #15: real full disks, read-only folders


@pytest.fixture
def full_disk(tmp_path):
    """A 10 MiB tmpfs: metrics.csv and the curves fit, a resnet18 checkpoint (~90 MB) does not."""
    target = tmp_path / "small-disk"
    target.mkdir()
    mount("-t", "tmpfs", "-o", "size=10m", "tmpfs", str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_real_full_disk_inside_torch_save_is_one_line_and_leaves_no_temporary_file(full_disk, gldv2, capsys):
    """On a full disk torch's zip writer raises ``RuntimeError: ... unexpected pos``, not an ``OSError``."""
    with pytest.raises(WriteError, match=f"cannot write {full_disk / 'big.pth'} \\(No space left on device\\)"):
        save_checkpoint({"w": torch.zeros(4 * 2**20)}, full_disk / "big.pth")  # 16 MiB
    assert list(full_disk.iterdir()) == []

    out = full_disk / "run"
    with pytest.raises(SystemExit) as stop:
        run(gldv2, out, "--epochs", "1")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert f"cannot write {out / 'last.pth'} (No space left on device)" in line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "training_curves.png"]


def test_a_read_only_folder_is_named_before_any_work(read_only, tmp_path, capsys):
    with pytest.raises(WriteError, match=f"cannot write {read_only / 'old.txt'} \\(Read-only file system\\)"):
        atomic_write(read_only / "old.txt", lambda f: f.write(b"new"))  # the clean-up does not hide the cause
    assert (read_only / "old.txt").read_text() == "old"

    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--output-dir", str(read_only / "eval"), "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert f"--output-dir {read_only / 'eval'}" in line and "Read-only file system" in line

    metrics = tmp_path / "metrics.csv"
    write_metrics_row(metrics, {column: 1 for column in COLUMNS})
    with pytest.raises(SystemExit) as stop:
        visualize.main(["curves", "--metrics", str(metrics), "--out", str(read_only / "curves.png")])
    assert stop.value.code == 2
    assert f"--out {read_only / 'curves.png'}" in one_error_line(capsys.readouterr().err)


def test_a_file_where_a_folder_is_expected_is_named_by_its_flag(gldv2, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    calls = {"train.py --output-dir": lambda: run(gldv2, file, "--epochs", "1"),
             "train.py --output-dir under it": lambda: run(gldv2, file / "run", "--epochs", "1"),
             "demo.py --run-dir": lambda: demo.main(["--quick", "--run-dir", str(file), "--data-root",
                                                     str(tmp_path / "world")]),
             "demo.py --data-root": lambda: demo.main(["--quick", "--run-dir", str(tmp_path / "demo"),
                                                       "--data-root", str(file)]),
             "synthetic --root": lambda: synthetic_cli.main(["--root", str(file / "world"), "--quiet"])}
    for name, call in calls.items():
        with pytest.raises(SystemExit) as stop:
            call()
        assert stop.value.code == 2, name
        line = one_error_line(capsys.readouterr().err)
        assert str(file) in line and "expected a folder" in line, (name, line)
    assert not (tmp_path / "world").exists() and not (tmp_path / "demo").exists()  # nothing was started

    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--output-dir", str(file), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and f"--output-dir {file}: is a file, expected a folder" in one_error_line(done.stderr)


# ---------------------------------------------------------------- issue #15: temporary files of killed writers


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_a_live_ones_is_kept(tmp_path):
    def writer(name):
        code = ("import sys, time; from utils.atomic import atomic_write; "
                "atomic_write(sys.argv[1], lambda f: (f.write(b'x' * 1000), f.flush(), time.sleep(120)))")
        return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / name)], cwd=ROOT, env=SUBPROCESS_ENV)

    killed, alive = writer("last.pth"), writer("best.pth")
    try:
        temporaries = {proc: temporary_path(tmp_path / name, proc.pid) for proc, name in ((killed, "last.pth"),
                                                                                           (alive, "best.pth"))}
        for proc, tmp in temporaries.items():
            wait_for(lambda tmp=tmp, proc=proc: tmp.exists() or proc.poll() is not None, 60, "a writer's tmp")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert temporaries[killed].exists()  # what a kill leaves behind

        save_checkpoint({"step": 1}, tmp_path / "other.pth")
        assert not temporaries[killed].exists() and temporaries[alive].exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other.pth", temporaries[alive].name])
    finally:
        for proc in (killed, alive):
            proc.kill()
            proc.wait()
