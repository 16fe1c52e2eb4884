"""The released checkpoints of ``weights/zoo.py``, fetched from Google Drive by their ids through ``gdown``.

Each file goes to ``DEST/<file>``. gdown writes it to ``<file><8 characters>.part`` first and, with
``resume=True``, continues the one partial file it finds there with an HTTP Range request. After the first
complete download the file's SHA-256 is recorded in ``<file>.sha256``; a later run checks the file against
it and downloads a mismatching file once more before giving up. A file that is neither a torch zip archive
(``PK\\x03\\x04``) nor a legacy pickle (``\\x80``) is deleted and reported: Drive answers an HTML page instead
of the file when its daily quota is used up or when it wants a virus-scan confirmation. A file announced or
received past ``MAX_CHECKPOINT_BYTES`` is stopped there (gdown's progress callback) and its partial file deleted.
"""

import gdown
import requests
from gdown.exceptions import DownloadError as GdownError
from gdown.exceptions import FileURLRetrievalError

from datasets.download.fetch import MAX_CHECKPOINT_BYTES, TIMEOUT_S, DownloadError, file_digest, too_large
from utils.atomic import atomic_write

DRIVE_URL = "https://drive.google.com"
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy (pre-1.6) pickle


def drive_url(release, base_url=DRIVE_URL):
    """The download address of ``release`` under ``base_url`` (Google Drive's ``/uc?id=`` endpoint)."""
    return f"{base_url.rstrip('/')}/uc?id={release.drive_id}"


def _by_hand(release, path):
    return f"download {release.address} in a browser and put it at {path}"


def _first_line(err):
    return str(err).splitlines()[0].rstrip(".")


def _partial_files(path):
    return sorted(path.parent.glob(f"{path.name}????????.part"))


def _size_cap(url, path):
    """gdown's progress callback: a ``DownloadError`` (which ends gdown's download) once the file is announced or
    received past ``MAX_CHECKPOINT_BYTES``."""
    def check(received, total):
        announced = total if total is not None and total > MAX_CHECKPOINT_BYTES else None
        if announced or received > MAX_CHECKPOINT_BYTES:  # gdown has written its one partial file
            raise too_large(url, MAX_CHECKPOINT_BYTES, announced, deleted=_partial_files(path)[0])

    return check


def _gdown(release, path, url):
    """One gdown call; every failure becomes one ``DownloadError`` line."""
    try:
        gdown.download(url=url, output=str(path), resume=True, timeout=TIMEOUT_S, progress=_size_cap(url, path))
    except DownloadError:  # past the size cap: what was written is not the file
        for partial in _partial_files(path):
            partial.unlink()
        raise
    except (requests.ConnectionError, requests.Timeout) as err:
        raise DownloadError(f"cannot reach {url} ({err.__class__.__name__}): offline? rerun when online, or "
                            f"{_by_hand(release, path)}") from None
    except requests.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.response.status_code} {err.response.reason}; rerun later, or "
                            f"{_by_hand(release, path)}") from None
    except FileURLRetrievalError:
        raise DownloadError(f"{url}: Google Drive did not hand out the file (quota exceeded or access denied); "
                            f"rerun tomorrow, or {_by_hand(release, path)}") from None
    except requests.RequestException as err:
        raise DownloadError(f"{url}: {_first_line(err)}; {_by_hand(release, path)}") from None  # a redirect loop
    except OSError as err:  # a full disk or an unwritable folder while gdown writes the partial file
        raise DownloadError(f"cannot write {err.filename or path.parent} ({err.strerror or err}): free space or "
                            "fix the folder and rerun to resume") from None


def _download(release, path, base_url):
    """Fetch ``release`` to ``path``, resuming a partial file; a server that ignores the range starts afresh."""
    url = drive_url(release, base_url)
    try:
        _gdown(release, path, url)
    except GdownError as err:
        if "byte range" not in str(err):  # an interrupted transfer: the partial file is kept for the rerun
            raise DownloadError(f"{url}: {_first_line(err)}; rerun to resume it") from None
        for partial in _partial_files(path):
            partial.unlink()
        try:
            _gdown(release, path, url)
        except GdownError as again:
            raise DownloadError(f"{url}: {_first_line(again)}; rerun to resume it") from None


def check_checkpoint_bytes(path, release, url):
    """Raise ``DownloadError`` (deleting the file) unless ``path`` starts like a torch checkpoint."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(CHECKPOINT_MAGIC):
        return
    path.unlink()
    if head.lstrip().startswith(b"<"):
        what = "an HTML page (Google Drive's quota or virus-scan page), not a checkpoint"
    else:
        what = f"not a torch checkpoint (it starts with {head[:8]!r}, neither a zip archive nor a pickle)"
    raise DownloadError(f"{url} gave {what}; deleted {path}: rerun later, or {_by_hand(release, path)}")


def fetch_release(release, dest, base_url=DRIVE_URL):
    """``dest/<file>`` of ``release``, downloaded unless present and matching its recorded SHA-256."""
    path, record = dest / release.file, dest / f"{release.file}.sha256"
    recorded = record.read_text().split()[0] if record.is_file() and record.stat().st_size else None
    url = drive_url(release, base_url)
    for attempt in range(2):
        if not path.is_file():
            _download(release, path, base_url)
        check_checkpoint_bytes(path, release, url)
        digest = file_digest(path, "sha256")
        if recorded is None:
            atomic_write(record, lambda f, d=digest: f.write(f"{d}  {release.file}\n".encode()))
            return path
        if digest == recorded:
            return path
        if attempt == 0:
            print(f">> {path}: SHA-256 {digest} is not the {recorded} recorded in {record}: downloading it again")
            path.unlink()
    raise DownloadError(f"{path}: SHA-256 {digest} again differs from the {recorded} recorded in {record} at its "
                        f"first download: the file at {url} changed or arrives corrupt; delete {record} to accept "
                        "the new file")


def download_models(releases, dest, base_url=DRIVE_URL):
    """Fetch each ``release`` into ``dest`` (created), then list the files with what loads them."""
    dest.mkdir(parents=True, exist_ok=True)
    for release in releases:
        path = fetch_release(release, dest, base_url)
        loads = f"loaded by {release.model}" if release.model else "downloaded only, no model of ours loads it"
        print(f">> {release.name}: {path} ({loads})")
