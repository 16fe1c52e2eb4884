"""Faults met through the command lines (``tests/faults.py`` indexes every fault): missing paths given to
train.py and test.py as subprocesses, training flags out of range, a training set where no image is readable."""

import random
import subprocess
import sys

import pytest

from benchmarks import extract as bench_extract
from datasets.gldv2 import GLDV2_DIR, load_gldv2
from tests.conftest import ROOT
from tests.faults import SUBPROCESS_ENV, one_error_line
from tests.test_train import TINY, run, small_set
from utils.training_log import COLUMNS

# ---------------------------------------------------------------- missing paths, through the real CLIs


def test_train_cli_without_the_csv_exits_2_naming_path_and_layout(tmp_path):
    done = subprocess.run([sys.executable, "train.py", *TINY, "--data-root", str(tmp_path), "--output-dir",
                           str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=SUBPROCESS_ENV)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert str(tmp_path / "train_clean.csv") in line and "train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg" in line


def test_test_cli_without_the_gnd_pickle_exits_2_naming_path_and_layout(tmp_path):
    (tmp_path / "test" / "roxford5k" / "jpg").mkdir(parents=True)
    done = subprocess.run([sys.executable, "test.py", "--checkpoint", "none.pth", "--data-root", str(tmp_path),
                           "--datasets", "roxford5k", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=SUBPROCESS_ENV)
    assert done.returncode == 2 and done.stdout == ""
    line = one_error_line(done.stderr)
    assert str(tmp_path / "test" / "roxford5k" / "gnd_roxford5k.pkl") in line and "<data_root>/test/<name>" in line


# ---------------------------------------------------------------- issue #15: flags and unreadable training sets


@pytest.mark.parametrize("flags", [["--update-every", "0"], ["--update-every", "-2"], ["--workers", "-1"],
                                   ["--crop-scale", "1", "0.2"], ["--crop-scale", "0", "0.5"],
                                   ["--crop-scale", "0.5", "1.5"], ["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"],
                                   ["--lr", "-1"], ["--epochs", "0"], ["--clip-grad", "nan"],
                                   ["--val-fraction", "1"], ["--color-jitter", "0.4", "0.4", "0.2", "0.9"],
                                   ["--jitter-p", "2"]])
def test_bad_training_flags_exit_2_naming_the_flag_before_any_work(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "no-data", tmp_path / "run", *flags)  # flags are checked before the data root is read
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {flags[0]} ") and ": expected" in line, line


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_every_training_image_unreadable_stops_after_the_first_epoch_without_a_checkpoint(tmp_path, capsys):
    root = tmp_path / "data"
    small_set(root / GLDV2_DIR)
    split = load_gldv2(root)
    for path, _ in split.train:
        (split.root / path).write_bytes(bytes(random.Random(path).randrange(256) for _ in range(300)))
    with pytest.raises(SystemExit) as stop:
        run(root, tmp_path / "run", "--epochs", "3")
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err.splitlines()[-1])
    assert "epoch 1: no training image was readable (24 skipped)" in line and str(split.root) in line
    assert not (tmp_path / "run" / "last.pth").exists() and not (tmp_path / "run" / "metrics.csv").exists()


# ---------------------------------------------------------------- issue #22, 17: found before the work, not after it


@pytest.mark.parametrize("epoch", ["1.5", "x", "0", ""])
def test_a_metrics_csv_with_an_epoch_that_is_no_whole_number_is_found_before_training(gldv2, tmp_path, capsys, epoch):
    """Was found after a whole epoch, when the row was to be added (a ValueError traceback)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text(",".join(COLUMNS) + "\n" + ",".join([epoch, *["1"] * (len(COLUMNS) - 1)]) + "\n")
    with pytest.raises(SystemExit) as stop:
        run(gldv2, out)
    assert stop.value.code == 2
    assert one_error_line(capsys.readouterr().err) == (f"error: {out / 'metrics.csv'}, line 2: epoch {epoch!r} is "
                                                       "not a whole number of at least 1")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv"]  # no epoch was trained


@pytest.mark.parametrize("content", [b"bad\n", b"X\x15", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.j\xe0\xcf\x87\nD"])
def test_a_checkpoint_of_garbage_is_one_line_in_every_entry_point(tmp_path, capsys, content):
    """torch's weights-only unpickler lets IndexError (b"bad\\n"), struct.error and KeyError out on such bytes:
    benchmarks.extract --checkpoint (as test.py, index.py, every reader of a checkpoint) gave their traceback."""
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        bench_extract.main(["--checkpoint", str(bad), "--quick", "--out", str(tmp_path / "report.json")])
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {bad}: not a readable checkpoint, truncated or not a torch file ("), line
