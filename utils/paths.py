"""Paths, checked before any work.

- ``relative_inside``: one rule for the paths that data files list inside a data root (revisitop's ``imlist``
  and ``qimlist``, the R1M list, archive members, ``index.py``'s image lists): a listed entry names a file under
  its folder, never one outside it. An ``index.py`` image list without ``--root`` may also name absolute paths (a
  user's own list of their files); its relative entries stay inside the list's folder all the same.
- ``writable_folder`` / ``writable_file``: a folder a run writes into, or a file it writes. The check finds the
  first problem a write would meet later (a file where a folder is expected, a folder that cannot be created, a
  read-only or unwritable location) and names the flag and the path in one line.
- ``open_regular_file``: a data file opened for reading only if it is a regular file (a FIFO would wait forever
  for a writer, a device would never end).
"""

import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

from utils.errors import InputError


def relative_inside(entry):
    """``entry`` as a relative POSIX path that stays inside the folder it is relative to.

    Raises ``ValueError`` saying why not: empty, absolute, holding a ``..`` part or a NUL character.
    """
    path = PurePosixPath(entry)
    if not entry or "\0" in entry:
        raise ValueError("an empty name or one holding a NUL character")
    if path.is_absolute():
        raise ValueError("an absolute path")
    if ".." in path.parts:
        raise ValueError("a path through '..'")
    return path


def _nearest_existing(path):
    """``path`` or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_folder(path, flag):
    """Check that ``path`` is, or can be created as, a folder this process can write into; return it as a Path.

    Nothing is created: the nearest existing folder on the way is probed with a temporary file.
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == Path(os.path.abspath(path)) else f"cannot be created: {existing} is a file"
        raise InputError(f"{flag} {path}: {where}, expected a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=existing)
    except OSError as err:
        reason = err.strerror or err.__class__.__name__
        what = "is not writable" if existing == Path(os.path.abspath(path)) else f"cannot be created in {existing}"
        raise InputError(f"{flag} {path}: {what} ({reason})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def writable_file(path, flag):
    """Check that the file ``path`` can be written (its folder as ``writable_folder``); return it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder, expected a file to write")
    writable_folder(path.parent, f"{flag} {path}: its folder")
    return path


def open_regular_file(path, expected):
    """``path`` opened for binary reading, if it is a regular file; else an ``InputError`` naming it and what
    it is. Opened without blocking, so a FIFO is refused at once instead of waiting for a writer. Other
    ``OSError``s than a missing file (permission, I/O) are the caller's."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{path} not found: expected {expected}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise InputError(f"{path} is {kind}; expected {expected} (only regular files are read)")
    return os.fdopen(fd, "rb")
