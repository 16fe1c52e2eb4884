"""The paths of an image collection (``datasets.collection.list_images``) and of an index: folders with link
loops, image lists with ``--root``, file names that no line-based file can hold, parts of index.json that leave the
index."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.collection import list_images
from retrieval.image_index import PATHS
from tests.eval_sets import random_image, write_checkpoint
from tests.faults import one_error_line
from tests.test_index import BUILD, RUN, run
from utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def write_jpegs(folder, names, seed=0):
    """A small JPEG at ``folder / name`` for each name; their paths as strings."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(rng, 48, 40).save(path, quality=90)
        paths.append(str(path))
    return paths


def test_a_folder_with_link_loops_lists_each_image_once(tmp_path):
    photos = tmp_path / "photos"
    images = write_jpegs(photos, ["a.jpg", "sub/b.jpg", "sub/deeper/c.jpg"])
    (photos / "self").symlink_to(".")
    (photos / "sub" / "up").symlink_to("..")
    (photos / "sub" / "deeper" / "top").symlink_to("../..")
    # in a child process with a time limit: before the fix the walk was exponential and never ended
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; from datasets.collection import list_images; "
         "print('\\n'.join(list_images(sys.argv[1])))", str(photos)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert listed == sorted(images)


def index_py(*argv):
    return subprocess.run([sys.executable, "index.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("entry, why", [
    ("../outside.jpg", "not a path through '..'"),
    ("sub/../../outside.jpg", "not a path through '..'"),
    ("ABSOLUTE", "not an absolute path"),
])
def test_an_image_list_entry_leaving_its_root_is_one_line(tmp_path, entry, why):
    root = tmp_path / "root"
    write_jpegs(root, ["in.jpg"])
    outside = write_jpegs(tmp_path, ["outside.jpg"])[0]
    entry = outside if entry == "ABSOLUTE" else entry
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\nin.jpg\n{entry}\n")
    done = index_py("build", "--images", listing, "--root", root, "--checkpoint", write_checkpoint(tmp_path / "t.pth"),
                    "--index", tmp_path / "index", "--imsize", "64", "--device", "cpu", "--workers", "0")
    assert done.returncode == 2 and not (tmp_path / "index").exists(), done.stderr
    assert done.stderr == f"error: --images {listing}: line 3 ({entry!r}) must be a path inside {root}, {why}\n"


def test_an_image_list_without_root_may_name_absolute_paths_but_stays_inside_its_folder(tmp_path):
    inside = write_jpegs(tmp_path / "lists", ["in.jpg"])[0]
    elsewhere = write_jpegs(tmp_path / "elsewhere", ["x.jpg"])[0]
    listing = tmp_path / "lists" / "list.txt"
    listing.write_text(f"in.jpg\n{elsewhere}\n")
    assert list_images(listing) == [inside, elsewhere]
    listing.write_text("in.jpg\n../elsewhere/x.jpg\n")
    with pytest.raises(InputError, match=r"line 2 \('../elsewhere/x.jpg'\) must be a path inside .*, not a path "):
        list_images(listing)


@pytest.mark.parametrize("odd", [
    ["new\nline.jpg", "carriage\rreturn.jpg", "line\u2028separator.jpg"],  # before: a traceback (zip strict)
    [os.fsdecode(b"latin1-\xe9t\xe9.jpg")],  # before: UnicodeEncodeError
], ids=["line breaks", "not UTF-8"])
def test_names_no_line_of_an_index_holds_are_left_out_with_a_warning(tmp_path, odd):
    photos = tmp_path / "photos"
    kept = write_jpegs(photos, ["plain.jpg", "sub/also plain.jpg"])
    for name in odd:  # real files of these names: a byte name through its bytes, as the OS holds it
        with open(os.fsencode(photos) + b"/" + os.fsencode(name), "wb") as f:
            f.write(Path(kept[0]).read_bytes())
    index = tmp_path / "index"
    built = index_py("build", "--images", photos, "--checkpoint", write_checkpoint(tmp_path / "t.pth"),
                     "--index", index, "--imsize", "64", "--device", "cpu", "--workers", "0", "--no-progress")
    assert built.returncode == 0, built.stderr
    warning = f"--images {photos}: {len(odd)} files left out, their names hold a line break or are not UTF-8"
    assert warning in built.stderr and "Traceback" not in built.stderr
    assert all(ascii(str(photos / name)) in built.stderr for name in odd)
    assert (index / PATHS).read_text().splitlines() == sorted(kept)
    found = index_py("query", "--index", index, kept[1], "--topk", "2", "--device", "cpu")
    assert found.returncode == 0, found.stderr
    assert f"   1  1.0000  {kept[1]}" in found.stdout


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    """An index of three images built with a small Token; a folder of one more image; the checkpoint."""
    base = tmp_path_factory.mktemp("small_index")
    write_jpegs(base / "photos", ["a.jpg", "b.jpg", "sub/c.jpg"])
    write_jpegs(base / "more", ["d.jpg"], seed=1)
    checkpoint = write_checkpoint(base / "token.pth")
    run("build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", base / "index", *BUILD)
    return base, checkpoint


def refused(capsys, *argv):
    """The one error line of ``index.py argv`` run in this process, which must exit 2 having printed nothing."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run(*argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == "", argv
    return one_error_line(err)


@pytest.mark.parametrize("where", ["relative", "absolute"])
@pytest.mark.parametrize("command", ["build", "add"])
def test_a_part_of_index_json_leaving_the_index_is_refused(small_index, tmp_path, capsys, command, where):
    """Before: build deleted victim.npy/.txt/.json beside the index (features/../../victim), add read them into
    paths.txt; an absolute part did the same anywhere."""
    base, checkpoint = small_index
    index = tmp_path / "index"
    shutil.copytree(base / "index", index)
    victim = tmp_path / "victim"
    np.save(victim.with_suffix(".npy"), np.ones((1, 32), np.float32))
    victim.with_suffix(".txt").write_text("/etc/shadow\n")
    victim.with_suffix(".json").write_text("{}")
    part = "../../victim" if where == "relative" else str(victim)
    meta = json.loads((index / "index.json").read_text())
    (index / "index.json").write_text(json.dumps({**meta, "parts": [*meta["parts"], part]}))
    paths = (index / PATHS).read_text()
    argv = {"build": ["build", "--images", base / "photos", "--checkpoint", checkpoint, "--index", index, *BUILD],
            "add": ["add", "--images", base / "more", "--index", index, *RUN]}[command]
    assert refused(capsys, *argv) == f"error: {index / 'index.json'}: the part {part!r} is not one index.py writes " \
                                     "(collection-<12 hex digits> or add-<12 hex digits>); build the index in a new " \
                                     "folder"
    assert all(victim.with_suffix(suffix).is_file() for suffix in (".npy", ".txt", ".json"))
    assert (index / PATHS).read_text() == paths


def test_an_index_folder_that_cannot_be_written_is_named_before_any_work(small_index, read_only, tmp_path, capsys):
    """A real read-only mount (root ignores chmod) and a file: before, build and add ended in tracebacks."""
    base, checkpoint = small_index
    shutil.copytree(base / "index", read_only.parent / "source" / "index")  # seen read-only through the mount
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    build = ["build", "--images", base / "photos", "--checkpoint", checkpoint, *BUILD, "--index"]
    add = ["add", "--images", base / "more", *RUN, "--index"]
    cases = [(build, read_only / "new", f"cannot be created in {read_only} (Read-only file system)"),
             (add, read_only / "index", "is not writable (Read-only file system)"),
             (build, file, "is a file, expected a folder"),
             (add, file, "is a file, expected a folder"),
             (build, file / "index", f"cannot be created: {file} is a file, expected a folder")]
    for argv, index, why in cases:
        assert refused(capsys, *argv, index) == f"error: --index {index}: {why}"
    found = run("query", "--index", read_only / "index", base / "photos" / "a.jpg", "--device", "cpu")
    assert found is None and "1.0000" in capsys.readouterr().out  # a read-only index is still searched


def test_query_and_whiten_outputs_that_cannot_be_written_are_named_before_any_work(small_index, read_only, tmp_path,
                                                                                   capsys):
    """Before: the query (model, descriptors, search) or the whitening ran, then writing its file failed."""
    base, _ = small_index
    query = ["query", "--index", base / "index", base / "photos" / "a.jpg", "--device", "cpu"]
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    cases = [([*query, "--json"], read_only / "r.json", f"its folder {read_only}: is not writable (Read-only file "
                                                        "system)"),
             ([*query, "--figure"], file / "r.png", f"its folder {file}: is a file, expected a folder"),
             (["whiten", "--index", base / "index", "--out"], read_only / "W.npz",
              f"its folder {read_only}: is not writable (Read-only file system)")]
    for argv, path, why in cases:
        assert refused(capsys, *argv, path) == f"error: {argv[-1]} {path}: {why}"
    run(*query, "--json", tmp_path / "new" / "r.json")  # a folder that does not exist yet is created
    assert json.loads((tmp_path / "new" / "r.json").read_text())[0]["results"][0]["path"] == str(
        base / "photos" / "a.jpg")
