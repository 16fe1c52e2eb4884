"""One resumable HTTP download: ``fetch(url, dest, limit)`` through ``dest.part`` and HTTP Range requests.

The bytes go to ``<dest>.part``, renamed to ``dest`` once their count matches what the server announced. A
rerun resumes the ``.part`` with ``Range: bytes=<have>-`` and starts again from the first byte when the server
ignores the range or answers another one. No download may bring more than ``limit`` bytes (one of the ``MAX_*``
below, by kind of file): a server that announces more is refused before a byte is written, one that sends more
(an endless body) is stopped there and its ``.part`` deleted. Every failure is a ``DownloadError``: one line
naming the address and what to do.
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
# The most bytes one download may bring, by kind of file: several times every published file of that kind (a
# gnd_*.pkl or md5 list is kilobytes, revisitop1m.txt tens of MB, GLDv2's train.csv about 0.5 GB, a GLDv2 part
# about 1 GB, the ROxf archive about 2 GB, a released checkpoint under 1 GB), and far below a disk.
MAX_LIST_BYTES = 256 * 2**20
MAX_CSV_BYTES = 4 * 2**30
MAX_ARCHIVE_BYTES = 16 * 2**30
MAX_CHECKPOINT_BYTES = 4 * 2**30


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


def too_large(url, limit, announced=None, deleted=None):
    """The one line for a file of more than ``limit`` bytes, ``announced`` by the server or sent past the limit;
    ``deleted``: the partial file that the caller deletes (None: nothing was written)."""
    what = f"announces {announced} bytes, more" if announced is not None else "sends more bytes"
    done = f"deleted {deleted}" if deleted else "nothing was written"
    return DownloadError(f"{url} {what} than the {limit} bytes a file of this kind may have; {done}: this is not the "
                         "published file, check the address")


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


def _http_error(url, response):
    """One line for an HTTP error answer (urllib's redirect-loop reason spans three lines)."""
    reason = str(response.reason).strip().splitlines()
    if 300 <= response.code < 400:
        return DownloadError(f"{url}: redirects that never end (a loop, or more than "
                             f"{urllib.request.HTTPRedirectHandler.max_redirections} in a row; the last: HTTP "
                             f"{response.code} {reason[-1] if reason else ''}); check the address")
    return DownloadError(f"{url}: HTTP {response.code} {reason[0] if reason else ''}".rstrip())


def _body(url, part):
    """``(response, have, total)``: a response whose body continues ``part`` from byte ``have`` (a 206 for the
    range asked) or replaces it (``have`` 0); ``None`` when ``part`` already holds the whole file."""
    have = part.stat().st_size if part.is_file() else 0
    response = _open(url, have)
    start, total = content_range(response.headers.get("Content-Range"))
    if have:
        if response.status == 416 and total == have:  # nothing left past the .part
            response.close()
            return None
        if response.status == 206 and start == have:
            return response, have, total
        if response.status in (206, 416):  # not the range asked for: from the first byte again
            response.close()
            part.unlink()
            have, response = 0, _open(url, 0)
    if isinstance(response, urllib.error.HTTPError):
        response.close()
        raise _http_error(url, response)
    if response.status == 206:  # a part where the whole file was asked for
        response.close()
        raise DownloadError(f"{url}: answered the part {response.headers.get('Content-Range')!r} where the whole "
                            "file was asked for; check the address, or rerun later")
    length = response.headers.get("Content-Length")
    return response, 0, int(length) if length and length.isdigit() else None


def fetch(url, dest, limit, desc=None, bar=None):
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial one. False if ``dest`` exists.

    ``limit``: the most bytes the file may have (a ``MAX_*`` of this module). ``bar``: a shared byte progress bar
    to advance (several downloads in threads); without it, one of its own.
    """
    dest = Path(dest)
    if dest.is_file():
        return False
    part = dest.with_name(dest.name + ".part")
    answer = _body(url, part)
    if answer is not None:
        response, have, total = answer
        with response:
            if total is not None and total > limit:
                raise too_large(url, limit, announced=total)
            own_bar = bar is None
            if own_bar:
                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=desc or dest.name)
            try:
                _write_body(response, url, part, have, limit, bar)
            finally:
                if own_bar:
                    bar.close()
        size = part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"{url}: got {size} of {total} bytes; rerun to resume from {part}")
    part.replace(dest)
    return True


def _write_body(response, url, part, have, limit, bar):
    """Write the response body to ``part`` after its first ``have`` bytes (0: the whole file); a full disk and
    a dropped connection are told apart; past ``limit`` bytes the ``part`` is deleted."""
    size = have
    try:
        with open(part, "ab" if have else "wb") as out:
            while True:
                try:
                    chunk = response.read1(CHUNK)  # what has arrived: a stop request is seen between chunks
                except (OSError, HTTPException) as err:
                    raise DownloadError(f"{url}: interrupted ({err.__class__.__name__}: {err}); rerun to resume "
                                        f"from {part}") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    except OSError as err:
        reason = err.strerror or err
        hint = "free space" if err.errno == errno.ENOSPC else "fix the folder"
        raise DownloadError(f"cannot write {part} ({reason}): {hint} and rerun to resume") from None
    if size > limit:
        part.unlink()
        raise too_large(url, limit, deleted=part)
