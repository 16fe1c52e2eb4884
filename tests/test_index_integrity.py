"""An index that cannot be silently corrupted (issue 22: 1, 2, 5, 9), each with the real fault: a second index.py
writing the index while a first one does (real processes), a build killed while it extracts (a real SIGKILL), broken
whitenings and powers, and index folders whose files were replaced, truncated or edited."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from networks.pca_whitening import PCAWhitening
from retrieval.features import FeatureStore
from retrieval.image_index import DESCRIPTORS, LOCK, PATHS, SEARCH, ImageIndex, query
from retrieval.index_files import file_entry
from tests.conftest import mount
from tests.eval_sets import random_image, write_checkpoint
from tests.faults import SUBPROCESS_ENV, one_error_line, wait_for
from tests.test_index import BUILD, RUN, run, write_images
from tests.test_index_paths import refused
from utils.distributed import DistEnv
from utils.errors import InputError
from utils.locking import exclusive

ROOT = Path(__file__).resolve().parents[1]
CPU = DistEnv(0, 1, torch.device("cpu"))
SLOW = ["--imsize", "1024", "--shard-size", "1", "--workers", "0", "--device", "cpu", "--no-progress"]  # ~3 s/image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Folders ``cA``, ``cC`` of 6 small JPEGs each, ``big`` of 20 JPEGs of 1024 x 768 (a build of them at
    ``SLOW`` lasts a minute), a checkpoint, and an index of ``cA``."""
    base = tmp_path_factory.mktemp("integrity")
    for seed, name in enumerate(("cA", "cC")):
        write_images(base / name, 6, seed=seed, prefix=name)
    rng = np.random.default_rng(3)
    (base / "big").mkdir()
    for i in range(20):
        random_image(rng, 1024, 768).save(base / "big" / f"cB_{i:03d}.jpg", quality=90)
    checkpoint = write_checkpoint(base / "token.pth")
    run("build", "--images", base / "cA", "--checkpoint", checkpoint, "--index", base / "index", *BUILD)
    return base, checkpoint


def copy_index(base, tmp_path):
    shutil.copytree(base / "index", tmp_path / "index")
    return tmp_path / "index"


def start_index_py(*argv):
    """index.py started in its own process (not waited for)."""
    return subprocess.Popen([sys.executable, "index.py", *map(str, argv)], cwd=ROOT, env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot(folder):
    """The bytes of every file under ``folder`` but the lock file, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != LOCK}


def finds_itself(index_dir, images):
    """Each of ``images``, queried, is its own first result at 1.0000: its path goes with its descriptor."""
    results, _ = query(ImageIndex(index_dir, torch.device("cpu")), images, 2)
    return all(entry["results"][0]["path"] == image and entry["results"][0]["score"] > 0.9999
               for entry, image in zip(results, images, strict=True))


def images_of(folder):
    return sorted(str(p) for p in Path(folder).rglob("*.jpg"))


# 1: one writer at a time

def test_a_second_build_or_add_while_a_build_runs_is_refused_naming_it(indexed, tmp_path):
    """Before: both ran; each emptied and refilled the other's shards and paths, and one ended with an index whose
    paths were the other's images (cA_3.jpg found cB_3.jpg at 1.0000)."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    first = start_index_py("build", "--images", base / "big", "--checkpoint", checkpoint, "--index", index, *SLOW)
    try:
        wait_for(lambda: f"pid {first.pid} " in ((index / LOCK).read_text() if (index / LOCK).exists() else ""),
                 120, "the first build to take the index's lock")
        second = start_index_py("build", "--images", base / "cC", "--checkpoint", checkpoint, "--index", index, *BUILD)
        adding = start_index_py("add", "--images", base / "cC", "--index", index, *RUN)
        for other in (second, adding):
            out, err = other.communicate(timeout=300)
            assert other.returncode == 2, err
            assert one_error_line(err).startswith(f"error: --index {index}: in use by index.py build (pid "
                                                  f"{first.pid} on {socket.gethostname()}, since ")
            assert err.endswith(f"; run again once it has ended (its lock: {index / LOCK})\n")
        assert first.poll() is None, "the first build ended before the others were refused: nothing was tested"
    finally:
        first.kill()  # a real SIGKILL: the kernel releases its lock, no stale lock is left
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    run("build", "--images", base / "cC", "--checkpoint", checkpoint, "--index", index, *BUILD)
    assert sorted((index / PATHS).read_text().splitlines()) == images_of(base / "cC")
    assert finds_itself(index, images_of(base / "cC"))


def test_a_feature_set_being_extracted_by_another_process_is_refused(tmp_path):
    """Two test.py runs with one --output-dir: before, each emptied the other's shard folder and merged its rows."""
    features = tmp_path / "features"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nimport torch\nfrom retrieval.features import FeatureStore\n"
         "from utils.distributed import DistEnv\n"
         "def rows(spans, progress):\n    print('computing', flush=True)\n    time.sleep(600)\n    yield None\n"
         "FeatureStore(sys.argv[1], DistEnv(0, 1, torch.device('cpu')), False).load('roxford5k_db', {'k': 1}, 4, 3, "
         "rows)\n", str(features)], cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert "computing\n" in iter(holder.stdout.readline, "")  # read up to the line of its compute
        with pytest.raises(InputError) as refusal:
            FeatureStore(features, CPU, False).load("roxford5k_db", {"k": 2}, 4, 3, None)
        assert str(refusal.value).startswith(f"{features / 'roxford5k_db'}: in use by -c {features} (pid {holder.pid} "
                                             f"on {socket.gethostname()}, since ")
    finally:
        holder.kill()
        holder.communicate()
    rows, _ = FeatureStore(features, CPU, False).load(
        "roxford5k_db", {"k": 2}, 4, 3, lambda spans, progress: (np.ones((b - a, 3), np.float32) for a, b in spans))
    assert rows.shape == (4, 3)  # the killed holder left no lock behind


def test_a_lock_file_that_cannot_be_opened_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(InputError, match=rf"^--index x: cannot open its lock file {tmp_path / 'a-file' / LOCK} \("):
        with exclusive(tmp_path / "a-file" / LOCK, "--index x"):
            pytest.fail("the lock was taken")


# 2: a part's paths and rows are committed together

def test_add_after_a_build_killed_while_extracting_pairs_each_path_with_its_own_rows(indexed, tmp_path):
    """Before: the killed build had already rewritten features/collection.txt (cB's paths) over cA's rows, and add
    made an index of cB's paths with cA's descriptors, exit 0. Now the build extracts into a part of its own."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    listing = tmp_path / "cB.txt"  # as many images as cA: the old add paired them silently, row for row
    listing.write_text("".join(f"{path}\n" for path in images_of(base / "big")[:6]))
    killed = start_index_py("build", "--images", listing, "--checkpoint", checkpoint, "--index", index, *SLOW)
    wait_for(lambda: any((index / "features").glob("collection-*/shard_*.npy")) or killed.poll() is not None, 120,
             "a shard of the second build")
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the build ended before it was killed: nothing was tested"
    summary = run("add", "--images", base / "cC", "--index", index, *RUN)
    assert summary["added"] == 6
    assert sorted((index / PATHS).read_text().splitlines()) == images_of(base / "cA") + images_of(base / "cC")
    assert finds_itself(index, images_of(base / "cA")[::2] + images_of(base / "cC")[::2])


def test_a_build_that_fails_after_its_extraction_leaves_the_index_as_it_was(indexed, tmp_path, capsys):
    """A folder of files none of which is an image fails once they are extracted: before, the failed build had
    replaced features/collection.* with their NaN rows, and the add that followed made an index of cC alone."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    (tmp_path / "junk").mkdir()
    for name in ("notes.txt", "broken.jpg"):
        (tmp_path / "junk" / name).write_text("not an image")
    before = {name: data for name, data in snapshot(index).items() if not name.startswith("features/")}
    with pytest.raises(SystemExit) as stop:
        run("build", "--images", tmp_path / "junk", "--checkpoint", checkpoint, "--index", index, *BUILD)
    assert stop.value.code == 2
    assert one_error_line(capsys.readouterr().err) == "error: none of the 2 files could be read as an image " \
                                                      f"({tmp_path / 'junk' / 'broken.jpg'}, ...); the index is left " \
                                                      "as it was"
    assert {name: data for name, data in snapshot(index).items() if not name.startswith("features/")} == before
    assert run("add", "--images", base / "cC", "--index", index, *RUN)["added"] == 6
    assert sorted((index / PATHS).read_text().splitlines()) == images_of(base / "cA") + images_of(base / "cC")
    assert finds_itself(index, images_of(base / "cA")[:2] + images_of(base / "cC")[:2])


def fill(disk, leave):
    """Fill the file system of ``disk`` but for ``leave`` bytes (a file ``filler`` of what it takes)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as err:
        assert err.errno == errno.ENOSPC
    os.ftruncate(fd, os.fstat(fd).st_size - leave)
    os.close(fd)


def test_add_after_a_build_stopped_by_a_full_disk_pairs_each_path_with_its_own_rows(indexed, tmp_path, capsys):
    """A real full disk (a 1 MiB tmpfs with one page left): before, the build had rewritten features/collection.txt
    when its first shard no longer fitted, and the add that followed paired cC's paths with cA's rows, exit 0."""
    base, checkpoint = indexed
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    try:
        index = copy_index(base, disk)
        fill(disk, 4096)
        with pytest.raises(SystemExit) as stop:
            run("build", "--images", base / "cC", "--checkpoint", checkpoint, "--index", index, *BUILD)
        error = one_error_line(capsys.readouterr().err)
        assert stop.value.code == 2 and error.startswith(f"error: cannot write {index / 'features'}/"), error
        assert "(No space left on device)" in error
        (disk / "filler").unlink()
        assert run("add", "--images", base / "cC", "--index", index, *RUN)["added"] == 6
        assert sorted((index / PATHS).read_text().splitlines()) == images_of(base / "cA") + images_of(base / "cC")
        assert finds_itself(index, images_of(base / "cA")[1::2] + images_of(base / "cC")[1::2])
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# 5: whitenings and powers are checked before any work

def whitening_file(path, **broken):
    """A W.npz of a whitening of 32-d descriptors with the arrays ``broken`` put in."""
    arrays = PCAWhitening.fit(np.random.default_rng(0).standard_normal((40, 32))).to_arrays()
    np.savez(path, **{**arrays, **{k: v(arrays[k]) for k, v in broken.items()}})
    return path


def with_value(value, at=3):
    def put(array):
        array = array.copy()
        array.flat[at] = value
        return array
    return put


BROKEN = {"nan mean": {"mean": with_value(np.nan)}, "inf direction": {"components": with_value(np.inf)},
          "zero variance": {"variance": with_value(0.0)}, "negative variance": {"variance": with_value(-1.0)}}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_whitening_file_is_refused_and_the_index_left_as_it_was(indexed, tmp_path, capsys, case):
    """Before: exit 0 and queries with no results (every whitened descriptor NaN)."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    before = snapshot(index)
    w = whitening_file(tmp_path / "W.npz", **BROKEN[case])
    why = "the whitening's variances must be finite numbers greater than 0" if "variance" in case else \
        "the whitening's mean and directions must be finite numbers (a NaN or inf is there)"
    line = f"error: --whiten-file {w}: expected a whitening .npz with mean, components, variance and whiten"
    build = ["build", "--images", base / "cA", "--checkpoint", checkpoint, "--index", index, *BUILD]
    for argv in ([*build, "--whiten-file", w], ["query", "--index", index, images_of(base / "cA")[0], "--whiten-file",
                                                w, "--device", "cpu"]):
        error = refused(capsys, *argv)
        assert error.startswith(line) and why in error, error
    assert snapshot(index) == before


@pytest.mark.parametrize("power", ["1e308", "-0.5", "1.5"])
def test_a_whitening_power_out_of_range_is_refused_before_any_work(indexed, tmp_path, capsys, power):
    """Before: --whiten-power 1e308 returned nothing (variances to that power are inf or 0); build --whiten-power nan
    rewrote the index, then a traceback left it broken."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    before = snapshot(index)
    w = whitening_file(tmp_path / "W.npz")
    line = f"error: --whiten-power {float(power)}: expected a number from 0 to 1 (0.5 full whitening, 0 a plain PCA " \
           "projection)"
    assert refused(capsys, "build", "--images", base / "cA", "--checkpoint", checkpoint, "--index", index,
                   "--whiten-file", w, "--whiten-power", power, *BUILD) == line
    assert refused(capsys, "query", "--index", index, images_of(base / "cA")[0], "--whiten-power", power,
                   "--device", "cpu") == line
    assert snapshot(index) == before
    assert refused(capsys, "build", "--images", base / "cA", "--checkpoint", checkpoint, "--index", index,
                   "--whiten-power", "nan", *BUILD) == "error: --whiten-power nan: expected a finite number (nan and " \
                                                       "inf are refused)"
    assert snapshot(index) == before


# 9: what is read is what index.json lists

def _pickled(path):
    np.save(path, np.array([{"not": "descriptors"}], dtype=object), allow_pickle=True)


def _nan_row(path):
    rows = np.load(path)
    rows[1] = np.nan
    np.save(path, rows)


TAMPERED = {
    "garbage search.faiss": (SEARCH, lambda p: p.write_bytes(b"garbage" * 100)),
    "truncated search.faiss": (SEARCH, lambda p: p.write_bytes(p.read_bytes()[:200])),
    "pickled descriptors.npy": (DESCRIPTORS, _pickled),
    "mis-shaped descriptors.npy": (DESCRIPTORS, lambda p: np.save(p, np.load(p)[:, :16])),
    "a NaN row in descriptors.npy": (DESCRIPTORS, _nan_row),
    "paths.txt of another order": (PATHS, lambda p: p.write_text("\n".join(sorted(p.read_text().split(),
                                                                                  reverse=True)) + "\n")),
    "pickled features/<part>.npy": ("PART.npy", _pickled),
    "features/<part>.txt of another order": ("PART.txt", lambda p: p.write_text("".join(sorted(
        p.read_text().splitlines(keepends=True), reverse=True)))),
}


def _reader(base, index, name):
    """The command that reads ``name``: query for the search files, whiten for the raw descriptors, add for a
    part's."""
    if name.startswith("features/"):
        return ["add", "--images", base / "cC", "--index", index, *RUN]
    if name == DESCRIPTORS:
        return ["whiten", "--index", index, "--out", index.parent / "W.npz"]
    return ["query", "--index", index, images_of(base / "cA")[0], "--device", "cpu"]


@pytest.mark.parametrize("case", TAMPERED)
def test_a_file_that_is_not_the_one_index_json_lists_is_refused_in_one_line(indexed, tmp_path, capsys, case):
    """Before: tracebacks (faiss's reader, numpy's pickle refusal, zip strict), or wrong paths at 1.0000, or an
    image silently missing (its NaN row)."""
    base, _ = indexed
    index = copy_index(base, tmp_path)
    name, tamper = TAMPERED[case]
    name = name.replace("PART", f"features/{json.loads((index / 'index.json').read_text())['parts'][0]}")
    tamper(index / name)
    assert refused(capsys, *_reader(base, index, name)) == (
        f"error: --index {index}: {name} is not the file index.json lists (another size or SHA-256): a build or add "
        "was interrupted or is running, or the file was replaced or edited; run build again")


@pytest.mark.parametrize("case, why", [
    ("foreign search.faiss", "searches 6 vectors of size 32, the index 5 of size 32"),
    ("pickled descriptors.npy", "not a readable .npy of descriptors (Object arrays cannot be loaded when "
                                "allow_pickle=False)"),
    ("mis-shaped descriptors.npy", "holds float32 (6, 16), the index float32 (6, 32)"),
    ("a NaN row in descriptors.npy", "row 1 is not finite"),
])
def test_an_index_json_edited_to_list_a_crafted_file_is_refused_in_one_line(indexed, tmp_path, capsys, case, why):
    """What is read is also checked against what index.json says the index holds (count, size, type, finite)."""
    base, _ = indexed
    index = copy_index(base, tmp_path)
    meta = json.loads((index / "index.json").read_text())
    if case == "foreign search.faiss":
        name = SEARCH
        meta["count"] = 5
        (index / PATHS).write_text("\n".join((index / PATHS).read_text().split()[:5]) + "\n")
        meta["files"][PATHS] = file_entry(index / PATHS)
    else:
        name, tamper = TAMPERED[case]
        tamper(index / name)
    meta["files"][name] = file_entry(index / name)
    (index / "index.json").write_text(json.dumps(meta))
    assert refused(capsys, *_reader(base, index, name)) == f"error: {index / name}: {why}; run build again"


def test_an_index_of_an_earlier_index_py_asks_for_a_build_which_replaces_it(indexed, tmp_path, capsys):
    """An index as the index.py before these checks left it: no SHA-256 in index.json, its part named collection."""
    base, checkpoint = indexed
    index = copy_index(base, tmp_path)
    meta = json.loads((index / "index.json").read_text())
    for suffix in (".npy", ".json", ".txt"):
        (index / "features" / f"{meta['parts'][0]}{suffix}").rename(index / "features" / f"collection{suffix}")
    del meta["files"]
    (index / "index.json").write_text(json.dumps({**meta, "parts": ["collection"]}))
    assert refused(capsys, "query", "--index", index, images_of(base / "cA")[0], "--device", "cpu") == (
        f"error: --index {index}: its index.json lists no SHA-256 of its files (an index.py before they were checked "
        "wrote it); run build again")
    assert run("build", "--images", base / "cA", "--checkpoint", checkpoint, "--index", index, *BUILD)["count"] == 6
    assert not list((index / "features").glob("collection.*"))  # the old part is gone once the new index is written
    assert finds_itself(index, images_of(base / "cA")[:2])

