"""Released models by name: gdown against a local HTTP server standing in for Google Drive's /uc?id= endpoint."""

import hashlib
import io
import re
import socket

import pytest
import torch

from datasets.download import main, models
from tests.http_server import Server
from utils.errors import InputError
from weights import zoo

TOKEN = zoo.RELEASED["R50-Token"]
PATH = f"/uc?id={TOKEN.drive_id}"


def checkpoint_bytes(value):
    """A real torch checkpoint of 1.2 MB: more than two of the 512 KiB chunks gdown writes at a time."""
    buffer = io.BytesIO()
    torch.save({"w": torch.full((300_000,), float(value))}, buffer)
    return buffer.getvalue()


@pytest.fixture
def server():
    srv = Server({PATH: checkpoint_bytes(1)})
    yield srv
    srv.close()


def fetch_models(base_url, dest, *names):
    main(["models", *names, "--dest", str(dest), "--base-url", base_url])


def fails(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        fetch_models(*args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_download_records_the_sha256_then_a_rerun_fetches_nothing(server, tmp_path):
    fetch_models(server.url, tmp_path, "R50-Token")
    path = tmp_path / TOKEN.file
    assert path.read_bytes() == server.files[PATH]
    digest = hashlib.sha256(server.files[PATH]).hexdigest()
    assert (tmp_path / f"{TOKEN.file}.sha256").read_text().split() == [digest, TOKEN.file]
    assert torch.load(zoo.resolve("R50-Token", tmp_path), weights_only=True)["w"][0] == 1
    assert not list(tmp_path.glob("*.part"))
    n_requests = len(server.requests)
    fetch_models(server.url, tmp_path, "R50-Token")
    assert len(server.requests) == n_requests


def test_interrupted_download_resumes_with_a_range(server, tmp_path, capsys):
    server.cut[PATH] = 700_000  # the connection drops mid-file; gdown keeps the whole chunks received
    err = fails(capsys, server.url, tmp_path, "R50-Token")
    assert "rerun to resume" in err and PATH in err
    (partial,) = tmp_path.glob(f"{TOKEN.file}*.part")
    kept = partial.stat().st_size
    assert 0 < kept < len(server.files[PATH]) and not (tmp_path / TOKEN.file).exists()
    fetch_models(server.url, tmp_path, "R50-Token")
    assert (PATH, f"bytes={kept}-") in server.requests
    assert (tmp_path / TOKEN.file).read_bytes() == server.files[PATH] and not partial.exists()


def test_a_partial_file_restarts_when_the_server_ignores_the_range(server, tmp_path, capsys):
    server.cut[PATH] = 700_000
    fails(capsys, server.url, tmp_path, "R50-Token")
    server.ignore_range = True  # answers 200 with the whole file: gdown refuses to splice, the rerun starts afresh
    fetch_models(server.url, tmp_path, "R50-Token")
    assert (tmp_path / TOKEN.file).read_bytes() == server.files[PATH]
    assert not list(tmp_path.glob("*.part"))


def test_a_file_that_differs_from_its_recorded_sha256_is_fetched_once_more(server, tmp_path, capsys):
    fetch_models(server.url, tmp_path, "R50-Token")
    path = tmp_path / TOKEN.file
    path.write_bytes(checkpoint_bytes(2))  # a wrong file in its place
    fetch_models(server.url, tmp_path, "R50-Token")
    assert path.read_bytes() == server.files[PATH] and "downloading it again" in capsys.readouterr().out

    path.write_bytes(checkpoint_bytes(2))
    server.files[PATH] = checkpoint_bytes(3)  # and the published file is not the one first downloaded either
    err = fails(capsys, server.url, tmp_path, "R50-Token")
    assert f"{path}: SHA-256" in err and "again differs" in err and f"delete {path}.sha256" in err


def test_an_html_page_instead_of_the_checkpoint_is_reported(server, tmp_path, capsys):
    server.files[PATH] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    err = fails(capsys, server.url, tmp_path, "R50-Token")
    assert "an HTML page" in err and TOKEN.address in err and f"put it at {tmp_path / TOKEN.file}" in err
    assert not (tmp_path / TOKEN.file).exists() and not (tmp_path / f"{TOKEN.file}.sha256").exists()


def test_offline_names_the_address_and_where_to_put_the_file(tmp_path, capsys):
    with socket.socket() as sock:  # a port that nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = fails(capsys, f"http://127.0.0.1:{port}", tmp_path, "R50-Token")
    assert err.startswith(f"error: cannot reach http://127.0.0.1:{port}{PATH}")
    assert TOKEN.address in err and f"put it at {tmp_path / TOKEN.file}" in err


def test_unknown_name_and_a_dest_that_is_a_file_fail_cleanly(server, tmp_path, capsys):
    assert "'R99-Token' is not a released model: expected one of R50-Token, R101-Token" in fails(
        capsys, server.url, tmp_path, "R99-Token")
    (tmp_path / "file").write_text("x")
    assert f"--dest {tmp_path / 'file'} is a file" in fails(capsys, server.url, tmp_path / "file", "R50-Token")


def test_resolve_a_path_a_name_or_says_how_to_fetch_it(tmp_path):
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"x")
    assert zoo.resolve(mine, tmp_path / "models") == mine
    with pytest.raises(InputError) as missing:
        zoo.resolve("R101-AP-GeM", tmp_path)
    assert str(missing.value) == (
        f"{tmp_path / 'Resnet101-AP-GeM.pt'} not found: expected the released R101-AP-GeM checkpoint from "
        "https://drive.google.com/file/d/1UWJGDuHtzaQdFhSMojoYVQjmCXhIwVvy/view; fetch it with: "
        f"python -m datasets.download models R101-AP-GeM --dest {tmp_path}")
    with pytest.raises(InputError, match="nothing.pth not found: expected a model checkpoint file$"):
        zoo.resolve(tmp_path / "nothing.pth", tmp_path)
    with pytest.raises(InputError, match="R101-Tokn not found: expected a model checkpoint file or a released model "
                                         "name .*R101-HOW"):
        zoo.resolve("R101-Tokn", tmp_path)
    assert zoo.RELEASED["R101-HOW"].model == "HOW"


def test_an_endless_body_through_gdown_is_stopped_at_the_size_cap(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(models, "MAX_CHECKPOINT_BYTES", 3_000_000)  # the cap in bytes, small for the test
    server.endless.add(PATH)  # 200, no Content-Length, zeros until gdown hangs up (44 GB in 30 s before)
    err = fails(capsys, server.url, tmp_path, "R50-Token")
    assert re.fullmatch(rf"error: {re.escape(server.url + PATH)} sends more bytes than the 3000000 bytes a file of "
                        rf"this kind may have; deleted {re.escape(str(tmp_path / TOKEN.file))}.{{8}}\.part: this is "
                        "not the published file, check the address", err)
    assert list(tmp_path.iterdir()) == []
    server.endless.clear()
    server.answer[PATH] = (200, {"Content-Length": "3000001"}, bytes(600_000))  # announced above: stops at chunk 1
    assert "announces 3000001 bytes, more than the 3000000 bytes" in fails(capsys, server.url, tmp_path, "R50-Token")
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_loop_through_gdown_is_one_line(server, tmp_path, capsys):
    server.answer[PATH] = (302, {"Location": PATH, "Content-Length": "0"}, b"")
    assert fails(capsys, server.url, tmp_path, "R50-Token") == (
        f"error: {server.url}{PATH}: Exceeded 30 redirects; download {TOKEN.address} in a browser and put it at "
        f"{tmp_path / TOKEN.file}")
