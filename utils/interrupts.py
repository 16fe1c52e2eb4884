"""Ctrl-C that is never lost.

Python ignores an exception raised in an at-fork hook or in a destructor (it prints "Exception ignored in ...").
A SIGINT that lands while a process forks (a DataLoader starting its workers) may have its handler run in such a
hook (``logging``'s lock release after a fork, for one): its ``KeyboardInterrupt`` is then dropped and the run
goes on. ``interrupts_deferred`` holds SIGINT over such a block and raises ``KeyboardInterrupt`` at its end.
"""

import contextlib
import signal
import threading


@contextlib.contextmanager
def interrupts_deferred():
    """Within the block, a SIGINT is only noted; on leaving the block, ``KeyboardInterrupt`` is raised if one came.

    For short blocks (the interrupt waits for their end). Only where Python's own SIGINT handler is in place, in
    the main thread (signal handlers live there): an ignored SIGINT (``SIG_IGN``) or another program's handler
    is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    noted = []
    signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if noted:
        raise KeyboardInterrupt
