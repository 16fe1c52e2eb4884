"""Faults of the downloaders' one extraction routine and of their flags, each caused for real (issue #15)."""

import errno
import gzip
import random
import re
import shutil
import subprocess
import tarfile

import pytest

from datasets.download import MAX_MEMBER_BYTES, DownloadError, archive, extract_archive, main
from datasets.download.fetch import MAX_ARCHIVE_BYTES, MAX_LIST_BYTES, fetch
from tests.http_server import Server, jpeg, tar_bytes, tgz
from weights import zoo


def noise(n, seed=0):
    """Incompressible bytes, so that a gzip or a disk fills as their count says."""
    return random.Random(seed).randbytes(n)


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs mounted at tmp_path/disk (needs root and a container that permits mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a 1 MiB tmpfs here (needs root and permission to mount); the in-process "
                    "fault test covers the same path")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_corrupt_archive_with_two_members_of_one_name_is_cleaned_up_and_a_rerun_works(tmp_path):
    files = {"paris/a/same.jpg": jpeg((4, 4), (1, 2, 3)), "paris/b/same.jpg": jpeg((5, 4), (3, 2, 1)),
             "paris/c/big.jpg": noise(200_000)}
    good = tgz(files)
    path = tmp_path / "paris_1-v1.tgz"
    path.write_bytes(good[: len(good) * 4 // 5])  # cut inside big.jpg, after both same.jpg were written
    with pytest.raises(DownloadError, match="corrupt archive.*rerun to download it again"):
        extract_archive(path, tmp_path / "jpg", flatten=True)
    assert not path.exists() and list((tmp_path / "jpg").iterdir()) == []  # no image, no big.jpg.tmp
    path.write_bytes(good)  # what the rerun downloads
    assert extract_archive(path, tmp_path / "jpg", flatten=True) == 2  # the second same.jpg replaced the first
    assert (tmp_path / "jpg/same.jpg").read_bytes() == files["paris/b/same.jpg"]


def test_full_disk_during_extraction_is_one_line_and_leaves_no_tmp(tmp_path, small_disk):
    path = tmp_path / "revisitop1m.1.tar.gz"
    path.write_bytes(tgz({f"1/{i}.jpg": noise(400_000, seed=i) for i in range(3)}))  # 1.2 MB into 1 MiB
    with pytest.raises(DownloadError) as failure:
        extract_archive(path, small_disk / "jpg", flatten=False)
    assert re.match(rf"cannot write {small_disk / 'jpg/1/2.jpg'}\.\d+\.tmp \(No space left on device\)",
                    str(failure.value))
    assert sorted(p.name for p in (small_disk / "jpg/1").iterdir()) == ["0.jpg", "1.jpg"]  # complete ones kept
    assert path.exists()  # kept: the rerun after freeing space needs no download
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    assert extract_archive(path, small_disk / "jpg", flatten=False) == 3


def test_full_disk_during_a_download_is_one_line(tmp_path, small_disk):
    server = Server({"/big.tar.gz": noise(2_000_000)})
    try:
        with pytest.raises(DownloadError, match=r"cannot write .*big.tar.gz.part \(No space left on device\): free "
                                                "space and rerun to resume"):
            fetch(f"{server.url}/big.tar.gz", small_disk / "big.tar.gz", MAX_ARCHIVE_BYTES)
    finally:
        server.close()


def test_full_disk_during_a_released_model_download_is_one_line(small_disk, capsys):
    release = zoo.RELEASED["R101-Token"]
    server = Server({f"/uc?id={release.drive_id}": b"PK\x03\x04" + noise(2_000_000)})
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["models", release.name, "--dest", str(small_disk), "--base-url", server.url])
    finally:
        server.close()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot write {small_disk}") and "(No space left on device)" in err


def test_write_failure_in_process_removes_the_tmp(tmp_path, monkeypatch):
    def copy_then_fail(src, dst, length):
        dst.write(src.read(10))
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "part.tar"
    path.write_bytes(tar_bytes({"a/b/c/abc.jpg": jpeg((4, 4), (0, 0, 0))}, mode="w"))
    monkeypatch.setattr(archive.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(DownloadError, match="No space left on device.*nothing half-written is left"):
        extract_archive(path, tmp_path / "train", flatten=False)
    assert list((tmp_path / "train/a/b/c").iterdir()) == [] and path.exists()


def test_member_above_the_size_cap_is_refused_before_writing(tmp_path):
    header = tarfile.TarInfo("1/a/huge.jpg")
    header.size = MAX_MEMBER_BYTES + 1  # a header announcing 100 MiB + 1 byte; the data need not follow
    path = tmp_path / "revisitop1m.7.tar.gz"
    path.write_bytes(gzip.compress(header.tobuf() + noise(1000)))
    with pytest.raises(DownloadError, match=f"'1/a/huge.jpg' is {MAX_MEMBER_BYTES + 1} bytes, above the "
                                            f"{MAX_MEMBER_BYTES} bytes allowed"):
        extract_archive(path, tmp_path / "jpg", flatten=False)
    assert not (tmp_path / "jpg").exists() or not list((tmp_path / "jpg").rglob("*"))


def test_a_url_flag_that_is_no_address_and_a_data_root_that_is_a_file_fail_cleanly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["revisitop", "--data-root", str(tmp_path), "--gnd-url", "notaurl"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: --gnd-url 'notaurl' is not a URL: expected http://host/path "
                                               "or https://host/path")
    with pytest.raises(DownloadError, match="'notaurl/x' is not a URL"):
        fetch("notaurl/x", tmp_path / "x", MAX_LIST_BYTES)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["revisitop", "--data-root", str(tmp_path / "file")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: --data-root {tmp_path / 'file'} is a file: expected a "
                                               "folder (created if missing)")


@pytest.fixture
def server():
    srv = Server({"/x.tgz": noise(1000)})
    yield srv
    srv.close()


def test_a_part_answered_where_the_whole_file_was_asked_for_is_one_line(server, tmp_path):
    server.answer["/x.tgz"] = (206, {"Content-Range": "bytes 5-9/100", "Content-Length": "5"}, b"abcde")
    expected = (f"{server.url}/x.tgz: answered the part 'bytes 5-9/100' where the whole file was asked for; check "
                "the address, or rerun later")
    with pytest.raises(DownloadError) as first:  # was FileNotFoundError: the .part it never wrote was deleted
        fetch(f"{server.url}/x.tgz", tmp_path / "x.tgz", MAX_ARCHIVE_BYTES)
    (tmp_path / "x.tgz.part").write_bytes(b"12")  # a resume answered with another range: once more from byte 0
    with pytest.raises(DownloadError) as resumed:
        fetch(f"{server.url}/x.tgz", tmp_path / "x.tgz", MAX_ARCHIVE_BYTES)
    assert str(first.value) == str(resumed.value) == expected
    assert server.requests[1:] == [("/x.tgz", "bytes=2-"), ("/x.tgz", None)] and list(tmp_path.iterdir()) == []


def test_a_redirect_loop_is_one_line(server, tmp_path, capsys):
    path = "/gnd/roxford5k/gnd_roxford5k.pkl"
    server.answer[path] = (302, {"Location": path, "Content-Length": "0"}, b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["revisitop", "--data-root", str(tmp_path), "--datasets", "roxford5k", "--gnd-url", f"{server.url}/gnd"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (  # were three lines, urllib's reason as it comes
        f"error: {server.url}{path}: redirects that never end (a loop, or more than 10 in a row; the last: HTTP 302 "
        "Found); check the address")


def test_an_endless_body_is_stopped_at_the_size_cap_and_deleted(server, tmp_path):
    server.endless.add("/x.tgz")  # 200, no Content-Length, zeros until the client hangs up
    with pytest.raises(DownloadError) as failure:
        fetch(f"{server.url}/x.tgz", tmp_path / "x.tgz", 3_000_000)
    assert str(failure.value) == (f"{server.url}/x.tgz sends more bytes than the 3000000 bytes a file of this kind "
                                  f"may have; deleted {tmp_path / 'x.tgz.part'}: this is not the published file, "
                                  "check the address")
    assert list(tmp_path.iterdir()) == []


def test_a_file_announced_above_the_size_cap_is_refused_before_a_byte_is_written(server, tmp_path):
    server.answer["/x.tgz"] = (200, {"Content-Length": str(MAX_ARCHIVE_BYTES + 1)}, b"")
    with pytest.raises(DownloadError, match=f"announces {MAX_ARCHIVE_BYTES + 1} bytes, more than the "
                                            f"{MAX_ARCHIVE_BYTES} bytes .*; nothing was written"):
        fetch(f"{server.url}/x.tgz", tmp_path / "x.tgz", MAX_ARCHIVE_BYTES)
    assert list(tmp_path.iterdir()) == []
