"""Files written whole or not at all: a temporary file next to the target, flushed to disk, then renamed."""

import os
from pathlib import Path

from utils.errors import InputError


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


def atomic_write(path, write):
    """``write(file)`` to a temporary file next to ``path``, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        tmp.unlink(missing_ok=True)
