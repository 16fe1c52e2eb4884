"""Files written whole or not at all: a temporary file next to the target, flushed to disk, then renamed
(``atomic_write``; JSON files: ``save_json``, read back by ``read_json``).

The temporary file is ``.<name>.<host>.<pid>.tmp``. A process killed while writing (SIGKILL, power loss) leaves
it behind; the next write into that folder by any process on the same host removes the ones whose process is
gone. Files of other hosts are left alone: on a shared folder their writer may be alive elsewhere.
"""

import io
import json
import os
import re
import socket
from pathlib import Path

from utils.errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_SWEPT = set()  # folders this process has already cleared of dead processes' temporary files


class WriteError(InputError, OSError):
    """A file that could not be written (disk full, no permission). Also an ``OSError`` with its ``errno``; as an
    ``InputError`` the scripts report it in one line with exit code 2. The temporary file is gone and the
    previous file, if any, is intact."""


def write_error(path, err):
    """``WriteError`` naming ``path`` and the cause of the ``OSError`` ``err``."""
    reason = err.strerror or str(err) or err.__class__.__name__
    error = WriteError(f"cannot write {path} ({reason}); nothing half-written was left, the previous file (if "
                       "any) is intact: free space or fix the folder and run again")
    error.errno = err.errno
    return error


class _RecordingWriter(io.BufferedWriter):
    """A buffered file that remembers the first ``OSError`` of a write. Writers that call ``write`` from C++
    (``torch.save``'s zip writer) turn a full disk into a ``RuntimeError`` without its errno; this keeps it."""

    os_error = None

    def write(self, data):
        try:
            return super().write(data)
        except OSError as err:
            self.os_error = self.os_error or err
            raise


def temporary_path(path, pid=None):
    """The temporary file ``atomic_write`` uses for ``path`` in the process ``pid`` (default: this one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}.{pid or os.getpid()}.tmp")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files of ``atomic_write`` in ``folder`` left by dead processes of this host; the
    paths removed. Files that cannot be listed or removed (a read-only folder) are left."""
    pattern = re.compile(rf"^\..+\.{re.escape(_HOST)}\.(\d+)\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write(path, write):
    """``write(file)`` to a temporary file next to ``path``, flushed to disk, then renamed over ``path``.

    Any failure of the write, the flush or the rename that comes from the file system (disk full, read-only, no
    permission) raises ``WriteError`` naming ``path``, also when the writer reported it as another exception; the
    temporary file is removed where the file system allows. Other exceptions (a bug in ``write``) pass through.
    """
    path = Path(path)
    folder = path.parent.resolve()
    if folder not in _SWEPT:
        remove_stale_temporaries(folder)
        _SWEPT.add(folder)
    tmp = temporary_path(path)
    f = None
    try:
        f = _RecordingWriter(io.FileIO(tmp, "w"))
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # KeyboardInterrupt too: no temporary file is left behind
        _remove_quietly(tmp)
        cause = err if isinstance(err, OSError) else getattr(f, "os_error", None)
        if cause is None or not isinstance(err, Exception):
            raise
        raise write_error(path, cause) from err


def _remove_quietly(path):
    """Remove ``path`` if it exists; a failure here (a read-only folder) must not hide the error being raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def save_json(path, obj):
    """``obj`` as strict JSON (no NaN or Infinity, which strict parsers reject: an undefined value is None),
    written atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=False).encode()))


def read_json(path):
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
