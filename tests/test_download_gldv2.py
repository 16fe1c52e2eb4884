"""The GLDv2 downloader against a local HTTP server laid out like the CVDF mirror (CSVs, tars, md5 lists)."""

import hashlib
import os
import random
import signal
import threading
import time

import pytest

from datasets.download import main
from datasets.download.gldv2 import parse_parts
from datasets.gldv2 import image_path, load_gldv2
from tests.http_server import Server, jpeg, tar_bytes
from utils.errors import InputError

# part -> {image id: landmark id}; ids are 16 hex characters as in GLDv2
PARTS = {0: {"0a1b2c3d4e5f6071": 7, "0a1f00000000000a": 7, "1b2c3d4e5f607182": 9},
         1: {"f0e1d2c3b4a59687": 9, "f0e1d2c3b4a59688": 12, "0a1b99999999999b": 12},
         2: {"2c3d4e5f60718293": 7, "2c3d4e5f60718294": 12}}


def md5_line(data, name):
    return f"{hashlib.md5(data).hexdigest()}  {name}\n".encode()


def tar_of(images):
    return tar_bytes({f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg": jpeg((6, 5), (len(i), 3, 9)) for i in images}, mode="w")


def mirror():
    """URL path -> bytes under /gl, as https://s3.amazonaws.com/google-landmark lays them out."""
    labels = {i: lid for part in PARTS.values() for i, lid in part.items()}
    by_landmark = {}
    for i, lid in labels.items():
        by_landmark.setdefault(lid, []).append(i)
    files = {
        "/gl/metadata/train.csv": ("id,url,landmark_id\n" + "".join(
            f"{i},http://example.org/{i}.jpg,{lid}\n" for i, lid in labels.items())).encode(),
        "/gl/metadata/train_clean.csv": ("landmark_id,images\n" + "".join(
            f"{lid},{' '.join(ids)}\n" for lid, ids in sorted(by_landmark.items()))).encode(),
    }
    for part, images in PARTS.items():
        set_part(files, part, tar_of(images))
    return files


def set_part(files, part, data, md5_of=None):
    name = f"images_{part:03d}.tar"
    files[f"/gl/train/{name}"] = data
    files[f"/gl/md5sum/train/md5.images_{part:03d}.txt"] = md5_line(data if md5_of is None else md5_of, name)


@pytest.fixture
def server():
    srv = Server(mirror())
    yield srv
    srv.close()


def download(server, data_root, parts="0-1"):
    main(["gldv2", "--data-root", str(data_root), "--parts", parts, "--jobs", "2", "--base-url", f"{server.url}/gl"])


def fails(capsys, *args, code=2, **kwargs):
    with pytest.raises(SystemExit) as exit_info:
        download(*args, **kwargs)
    assert exit_info.value.code == code
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_two_parts_build_the_tree_gldv2_reads_and_a_rerun_fetches_nothing(server, tmp_path, capsys):
    download(server, tmp_path)
    gldv2 = tmp_path / "Google-landmark-v2"
    split = load_gldv2(tmp_path)
    got = {path for path, _ in split.train + split.val}
    assert got == {image_path(i) for part in (0, 1) for i in PARTS[part]}  # part 2 was not asked for
    assert split.num_classes == 3 and all((gldv2 / path).is_file() for path in got)
    assert sorted(p.name for p in (gldv2 / "download").iterdir()) == ["images_000.tar.done", "images_001.tar.done"]
    assert not list(gldv2.rglob("*.tmp"))
    out = capsys.readouterr().out
    assert "6 of the 8 images of train_clean.csv" in out and "2 missing, e.g. train/2/c/3/2c3d4e5f60718293.jpg" in out

    server.requests.clear()
    download(server, tmp_path)
    assert server.requests == []


def test_a_part_with_a_wrong_md5_is_fetched_again_then_reported(server, tmp_path, capsys):
    set_part(server.files, 1, tar_of(PARTS[1]), md5_of=b"another file")
    err = fails(capsys, server, tmp_path)
    assert "/gl/train/images_001.tar: md5" in err and "differs again" in err and "rerun" in err
    assert [path for path, _ in server.requests].count("/gl/train/images_001.tar") == 2
    work = tmp_path / "Google-landmark-v2/download"
    assert (work / "images_000.tar.done").exists() and not (work / "images_001.tar").exists()
    assert not (work / "images_001.tar.done").exists()
    assert not (tmp_path / "Google-landmark-v2" / image_path("f0e1d2c3b4a59687")).exists()


def test_an_interrupted_part_resumes(server, tmp_path, capsys):
    server.cut["/gl/train/images_000.tar"] = 3000
    assert "rerun to resume" in fails(capsys, server, tmp_path, parts="0")
    download(server, tmp_path, parts="0")
    assert ("/gl/train/images_000.tar", "bytes=3000-") in server.requests
    assert all((tmp_path / "Google-landmark-v2" / image_path(i)).is_file() for i in PARTS[0])


@pytest.mark.parametrize("member", ["../../escape.jpg", "/tmp/absolute-escape.jpg"])
def test_a_member_outside_train_is_refused(server, tmp_path, capsys, member):
    set_part(server.files, 0, tar_bytes({member: jpeg((4, 4), (1, 1, 1))}, mode="w"))
    err = fails(capsys, server, tmp_path, parts="0")
    assert f"archive member {member!r} is not a relative path inside" in err
    assert not (tmp_path / "escape.jpg").exists() and not list(tmp_path.rglob("*escape.jpg"))


def test_a_server_error_is_one_line(server, tmp_path, capsys):
    server.fail["/gl/train/images_001.tar"] = 500
    err = fails(capsys, server, tmp_path)
    assert err.startswith("error: ") and "/gl/train/images_001.tar: HTTP 500" in err


def test_parts_are_ranges_and_lists(tmp_path, capsys):
    assert parse_parts("3,7,10-12") == [3, 7, 10, 11, 12] and parse_parts("0-1,1") == [0, 1]
    for bad in ("5-2", "x", "500", "1,,2"):
        with pytest.raises(InputError, match=f"--parts '{bad}'.*expected part numbers 0-499"):
            parse_parts(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["gldv2", "--data-root", str(tmp_path / "file")])
    assert f"--data-root {tmp_path / 'file'} is a file: expected a folder" in capsys.readouterr().err


def test_ctrl_c_stops_every_running_part_at_once_and_a_rerun_resumes(server, tmp_path, capsys):
    tars = {}  # file name -> URL path
    for part in (0, 1):
        big = {f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg": jpeg((6, 5), (1, 2, 3)) for i in PARTS[part]}
        big[f"0/0/0/000000000000000{part}.jpg"] = random.Random(part).randbytes(1 << 20)
        set_part(server.files, part, tar_bytes(big, mode="w"))
        tars[f"images_00{part}.tar"] = path = f"/gl/train/images_00{part}.tar"
        server.slow[path] = 0.2  # 64 blocks of 16 KiB: 13 s for each part
    work = tmp_path / "Google-landmark-v2/download"

    def press_ctrl_c_once_both_parts_arrive():
        deadline = time.monotonic() + 60
        while len([p for p in work.glob("*.tar.part") if p.stat().st_size]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT: Python raises KeyboardInterrupt in the main thread

    threading.Thread(target=press_ctrl_c_once_both_parts_arrive, daemon=True).start()
    assert fails(capsys, server, tmp_path, code=130) == "error: interrupted"  # as every command: was exit 2
    kept = {name: (work / f"{name}.part").stat().st_size for name in tars}
    assert all(0 < kept[name] < len(server.files[path]) for name, path in tars.items())  # both stopped mid-file

    server.slow.clear()
    download(server, tmp_path)
    assert {(path, f"bytes={kept[name]}-") for name, path in tars.items()} <= set(server.requests)
    assert all((tmp_path / "Google-landmark-v2" / image_path(i)).is_file() for part in (0, 1) for i in PARTS[part])
