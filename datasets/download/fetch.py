"""One resumable HTTP download: ``fetch(url, dest)`` through ``dest.part`` and HTTP Range requests.

The bytes go to ``<dest>.part``, renamed to ``dest`` once their count matches what the server announced. A
rerun resumes the ``.part`` with ``Range: bytes=<have>-`` and starts again when the server ignores the range
or answers another one. Every failure is a ``DownloadError``: one line naming the address and what to do.
"""

import errno
import hashlib
import re
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from utils.errors import InputError

TIMEOUT_S = 60
CHUNK = 1 << 20


class DownloadError(InputError):
    """A download or an extraction that failed. Reported like bad input: one line, exit code 2."""


def file_digest(path, algorithm):
    """The hex digest (``"md5"``, ``"sha256"``) of the file at ``path``, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_range(header):
    """``(start, total)`` from ``bytes a-b/total`` or ``bytes */total`` (``None`` for what is absent)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _open(url, have):
    """The response to a GET of ``url`` from byte ``have`` on; an ``HTTPError`` is returned, not raised."""
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    except ValueError as err:  # "unknown url type": not an address at all
        raise DownloadError(f"{url!r} is not a URL ({err}): expected an address such as http://host/path") from None
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        return err
    except (urllib.error.URLError, OSError, HTTPException, ValueError) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}; check the address and the network, "
                            "then rerun") from None


def fetch(url, dest, desc=None, bar=None):
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial one. False if ``dest`` exists.

    ``bar``: a shared byte progress bar to advance (several downloads in threads); without it, one of its own.
    """
    dest = Path(dest)
    if dest.is_file():
        return False
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    response = _open(url, have)
    if isinstance(response, urllib.error.HTTPError):
        response.close()
        if response.code == 416 and have:  # nothing left past the .part: complete if the sizes agree
            if content_range(response.headers.get("Content-Range"))[1] == have:
                part.replace(dest)
                return True
            part.unlink()
            return fetch(url, dest, desc, bar)
        raise DownloadError(f"{url}: HTTP {response.code} {response.reason}")

    with response:
        start, total = content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != have:  # not the part asked for: start again from scratch
            part.unlink()
            return fetch(url, dest, desc, bar)
        if response.status == 206:
            mode = "ab"
        else:  # the server sent the whole file
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        own_bar = bar is None
        if own_bar:
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name)
        try:
            _write_body(response, url, part, mode, bar)
        finally:
            if own_bar:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; rerun to resume from {part}")
    part.replace(dest)
    return True


def _write_body(response, url, part, mode, bar):
    """Append the response body to ``part``; a full disk and a dropped connection are told apart."""
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read1(CHUNK)  # what has arrived: a stop request is seen between chunks
                except (OSError, HTTPException) as err:
                    raise DownloadError(f"{url}: interrupted ({err.__class__.__name__}: {err}); rerun to resume "
                                        f"from {part}") from None
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    except OSError as err:
        reason = err.strerror or err
        hint = "free space" if err.errno == errno.ENOSPC else "fix the folder"
        raise DownloadError(f"cannot write {part} ({reason}): {hint} and rerun to resume") from None
