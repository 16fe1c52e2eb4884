"""Fetch the data and the released models into the layouts the rest of the project reads.

    python -m datasets.download revisitop --data-root DIR [--datasets roxford5k rparis6k] [--r1m]
    python -m datasets.download gldv2 --data-root DIR [--parts 0-499] [--jobs N]
    python -m datasets.download models [NAME ...] --dest DIR

One module per source (``revisitop``, ``gldv2``, ``models``) over two shared ones: ``fetch`` (a resumable
HTTP download through ``<file>.part`` and Range requests) and ``archive`` (the one extraction routine,
temporary names and renames, members checked). ``cli`` holds the flags. Every failure is a ``DownloadError``:
one line naming the file or address and what to do, exit code 2.
"""

import utils.command  # noqa: F401  (first: Ctrl-C while the modules below import is one line, exit 130)

# isort: split
from datasets.download.archive import MAX_MEMBER_BYTES, extract_archive
from datasets.download.cli import main
from datasets.download.fetch import DownloadError, fetch
from datasets.download.revisitop import download_r1m, download_revisitop

__all__ = ["MAX_MEMBER_BYTES", "DownloadError", "download_r1m", "download_revisitop", "extract_archive", "fetch",
           "main"]
