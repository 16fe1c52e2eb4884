"""One writer at a time in a folder that several processes could write: an exclusive ``fcntl.flock`` on a lock file.

The kernel releases the lock when its holder's process ends, however it ends (SIGKILL, a crash, power loss), so no
lock is ever left stale and nothing has to be cleaned up: the file stays, and the next writer locks it again. While
held, the file names its holder (command, pid, host, since when) for the line that refuses a second writer. A
second writer is refused at once (no waiting: a build can take hours). Under torchrun, rank 0 alone takes the lock
and tells the other ranks whether it has it, so that all of them stop, or go on, together.

On a network file system the lock holds where the file system passes ``flock`` on to the server (NFSv4 does,
Linux emulates it with POSIX locks), as the feature store's shards need such a file system anyway.
"""

import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist

from utils.errors import InputError


def _holder():
    """``index.py build (pid 4242 on host, since ...)``: the script, its subcommand if any, the process."""
    words = [Path(sys.argv[0]).name, *(word for word in sys.argv[1:2] if not word.startswith("-"))] if sys.argv \
        else ["python"]
    command = " ".join(words)
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"{command} (pid {os.getpid()} on {socket.gethostname()}, since {since})"


def _acquire(path, what):
    """``(file descriptor holding the lock, None)``, or ``(None, the line refusing it)`` when another process holds
    it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:  # another user's lock file, a folder that cannot be written
        return None, f"{what}: cannot open its lock file {path} ({err.strerror or err})"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return None, f"{what}: in use by {holder}; run again once it has ended (its lock: {path})"
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)  # rewritten in place: a new file renamed over it would be another lock
    os.pwrite(fd, (_holder() + "\n").encode(), 0)
    return fd, None


@contextmanager
def exclusive(path, what, env=None):
    """Hold the lock file ``path`` for the ``with`` block; ``InputError`` ``"<what>: in use by <holder> ..."`` at
    once when another process holds it. ``env`` (a ``utils.distributed.DistEnv``): rank 0 locks for all ranks."""
    main = env is None or env.is_main
    fd, refused = _acquire(path, what) if main else (None, None)
    if env is not None and env.distributed:
        box = [refused]
        dist.broadcast_object_list(box, src=0)
        refused = box[0]
    if refused:
        raise InputError(refused)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
