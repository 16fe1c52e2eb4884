"""The downloader against a local HTTP server holding small archives in the official shapes."""

import pickle

import pytest

from datasets import download
from datasets.download import DownloadError, extract_archive, main
from datasets.download.fetch import MAX_LIST_BYTES, fetch
from datasets.images import load_rgb
from datasets.revisitop import R1M, load_revisitop
from tests.http_server import Server, jpeg, tgz


def gnd_pickle(imlist, qimlist):
    gnd = [{"bbx": [0.0, 0.0, 4.0, 4.0], "easy": [0], "hard": [1], "junk": []} for _ in qimlist]
    return pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd})


def remote_files():
    """URL path -> bytes, laid out like the official sites (under /ox, /paris, /gnd, /r1m)."""
    ox_db, ox_q = ["all_souls_000000", "radcliffe_camera_000003", "bodleian_000107"], ["all_souls_000013"]
    paris_db, paris_q = ["paris_eiffel_000000", "paris_louvre_000001", "paris_defense_000002"], ["paris_eiffel_000009"]
    ox = {f"{name}.jpg": jpeg((6 + i, 5), (40 * i, 0, 0)) for i, name in enumerate(ox_db + ox_q)}
    ox["ashmolean_000999.jpg"] = jpeg((3, 3), (0, 0, 0))  # an image the revisited lists do not use
    part1 = {"paris/eiffel/paris_eiffel_000000.jpg": jpeg((7, 5), (0, 90, 0)),
             "paris/eiffel/paris_eiffel_000009.jpg": jpeg((5, 7), (0, 80, 0)),
             "paris/eiffel/paris_eiffel_000123.jpg": b""}  # one of the corrupt originals, not listed
    part2 = {"paris/louvre/paris_louvre_000001.jpg": jpeg((8, 6), (0, 0, 70)),
             "paris/defense/paris_defense_000002.jpg": jpeg((6, 8), (0, 0, 60))}
    r1m_images = ["1/a/one.jpg", "1/b/two.jpg", "2/a/three.jpg"]
    return {
        "/ox/oxbuild_images-v1.tgz": tgz(ox),
        "/paris/paris_1-v1.tgz": tgz(part1),
        "/paris/paris_2-v1.tgz": tgz(part2),
        "/gnd/roxford5k/gnd_roxford5k.pkl": gnd_pickle(ox_db, ox_q),
        "/gnd/rparis6k/gnd_rparis6k.pkl": gnd_pickle(paris_db, paris_q),
        f"/r1m/{R1M}.txt": "\n".join(r1m_images).encode() + b"\n",
        f"/r1m/jpg/{R1M}.1.tar.gz": tgz({name: jpeg((4, 4), (9, 9, 9)) for name in r1m_images[:2]}),
        f"/r1m/jpg/{R1M}.2.tar.gz": tgz({r1m_images[2]: jpeg((4, 4), (9, 9, 9))}),
    }


@pytest.fixture
def server():
    srv = Server(remote_files())
    yield srv
    srv.close()


def cli(server, data_root, *extra):
    return main(["revisitop", "--data-root", str(data_root), "--oxford-url", f"{server.url}/ox",
                 "--paris-url", f"{server.url}/paris", "--gnd-url", f"{server.url}/gnd",
                 "--r1m-url", f"{server.url}/r1m", *extra])


def test_full_download_then_rerun_fetches_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download.revisitop, "R1M_PARTS", 2)
    cli(server, tmp_path, "--r1m")
    for name, n_db in (("roxford5k", 3), ("rparis6k", 3)):
        ds = load_revisitop(tmp_path, name)
        assert len(ds.db_paths()) == n_db
        ds.check_images()
        for path in ds.db_paths() + ds.query_paths():
            load_rgb(path)  # complete, decodable
        assert sorted(p.name for p in ds.root.iterdir()) == ["gnd_" + name + ".pkl", "jpg"]  # archives deleted
    assert (tmp_path / "test/roxford5k/jpg/ashmolean_000999.jpg").is_file()  # flattened like the rest
    assert (tmp_path / "test/rparis6k/jpg/paris_eiffel_000009.jpg").is_file()
    r1m = load_revisitop(tmp_path, R1M)
    r1m.check_images()
    assert (tmp_path / "test" / R1M / "jpg/2/a/three.jpg").is_file()
    assert not list((tmp_path / "test" / R1M).glob("*.tar.gz"))
    assert len(server.requests) == 8  # 2 pickles, 3 image archives, the R1M list and its 2 parts

    server.requests.clear()
    cli(server, tmp_path, "--r1m")
    assert server.requests == []


def test_fetch_resumes_a_part_file_with_range(server, tmp_path):
    data = server.files["/paris/paris_1-v1.tgz"]
    dest = tmp_path / "paris_1-v1.tgz"
    (tmp_path / "paris_1-v1.tgz.part").write_bytes(data[:100])
    assert fetch(f"{server.url}/paris/paris_1-v1.tgz", dest, MAX_LIST_BYTES)
    assert server.requests == [("/paris/paris_1-v1.tgz", "bytes=100-")]
    assert dest.read_bytes() == data and not (tmp_path / "paris_1-v1.tgz.part").exists()
    assert not fetch(f"{server.url}/paris/paris_1-v1.tgz", dest, MAX_LIST_BYTES) and len(server.requests) == 1


def test_fetch_interrupted_then_resumed(server, tmp_path):
    path = "/ox/oxbuild_images-v1.tgz"
    data, dest = server.files[path], tmp_path / "ox.tgz"
    server.cut[path] = 333
    with pytest.raises(DownloadError, match="rerun to resume"):
        fetch(server.url + path, dest, MAX_LIST_BYTES)
    assert (tmp_path / "ox.tgz.part").stat().st_size == 333 and not dest.exists()
    fetch(server.url + path, dest, MAX_LIST_BYTES)
    assert server.requests[-1] == (path, "bytes=333-") and dest.read_bytes() == data


def test_fetch_restarts_when_range_is_ignored(server, tmp_path):
    path = "/gnd/roxford5k/gnd_roxford5k.pkl"
    server.ignore_range = True
    (tmp_path / "gnd.pkl.part").write_bytes(b"stale bytes from another file")
    fetch(server.url + path, tmp_path / "gnd.pkl", MAX_LIST_BYTES)
    assert (tmp_path / "gnd.pkl").read_bytes() == server.files[path]


def test_fetch_complete_part_is_kept(server, tmp_path):
    path = "/gnd/rparis6k/gnd_rparis6k.pkl"
    (tmp_path / "gnd.pkl.part").write_bytes(server.files[path])
    fetch(server.url + path, tmp_path / "gnd.pkl", MAX_LIST_BYTES)  # the server answers 416 with the full size
    assert (tmp_path / "gnd.pkl").read_bytes() == server.files[path]


def test_missing_file_fails_cleanly(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["revisitop", "--data-root", str(tmp_path), "--datasets", "roxford5k",
              "--oxford-url", f"{server.url}/nowhere", "--gnd-url", f"{server.url}/gnd"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "/nowhere/oxbuild_images-v1.tgz: HTTP 404" in err


def test_unreadable_ground_truth_names_the_file(server, tmp_path):
    server.files["/gnd/roxford5k/gnd_roxford5k.pkl"] = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="gnd_roxford5k.pkl: not a readable pickle.*delete"):
        download.download_revisitop(tmp_path, "roxford5k", f"{server.url}/ox", f"{server.url}/gnd")


def test_corrupt_archive_is_deleted(tmp_path):
    archive = tmp_path / "broken.tgz"
    archive.write_bytes(tgz({"a.jpg": jpeg((4, 4), (1, 2, 3)) * 50})[:-20])  # truncated: no gzip trailer
    with pytest.raises(DownloadError, match="corrupt archive.*rerun"):
        extract_archive(archive, tmp_path / "jpg", flatten=True)
    assert not archive.exists()
    good = tgz({"b.jpg": jpeg((4, 4), (1, 2, 3))})
    archive.write_bytes(good[:-8] + bytes(4) + good[-4:])  # every tar member intact, the gzip CRC wrong
    with pytest.raises(DownloadError, match="corrupt archive.*BadGzipFile"):
        extract_archive(archive, tmp_path / "jpg", flatten=True)
    assert not archive.exists() and not (tmp_path / "jpg" / "b.jpg").exists()
    archive.write_bytes(good)
    assert extract_archive(archive, tmp_path / "jpg", flatten=True) == 1 and (tmp_path / "jpg" / "b.jpg").is_file()


def test_member_outside_jpg_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tgz({"../escape.jpg": b"x"}))
    with pytest.raises(DownloadError, match="not a relative path"):
        extract_archive(archive, tmp_path / "jpg", flatten=False)
    assert not (tmp_path / "escape.jpg").exists()


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["revisitop", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-root", "--datasets", "--r1m", "--oxford-url", "--paris-url", "--gnd-url", "--r1m-url"):
        assert flag in text
    # --data-root is the one data root of train.py and test.py: the test sets go to DATA_ROOT/test/<name>/.
    assert "DATA_ROOT/test/<name>/" in text and "DATA_ROOT/Google-landmark-v2/" in text


@pytest.mark.parametrize("command, flags", [("gldv2", ("--data-root", "--parts", "--jobs", "--base-url")),
                                            ("models", ("NAME", "--dest", "--base-url", "R101-AP-GeM-LM18"))])
def test_help_of_gldv2_and_models_explains_every_flag(capsys, command, flags):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in flags)
