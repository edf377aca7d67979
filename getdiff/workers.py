"""Process pools whose workers die with the parent (SIGKILL included) and leave termination
signals to it, so a killed or interrupted command never leaves a worker behind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Make this worker die when ``parent`` does (SIGKILL included): the kernel's parent-death
    signal on Linux, else a thread watching the parent's pid. Without it a worker blocks forever
    on its task queue, whose write end the other workers keep open."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _start_pool_worker(parent: int, initializer: Any, initargs: tuple) -> None:
    # Termination signals are the parent's to handle (it then kills its workers): a worker
    # reacting to the terminal's Ctrl-C itself would print its own traceback.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(
    processes: int, initializer: Any = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers die with this process; an exception leaving the block (a
    signal's Terminated, an input error) kills the workers instead of waiting for their tasks."""
    pool = ProcessPoolExecutor(
        processes, initializer=_start_pool_worker, initargs=(os.getpid(), initializer, initargs)
    )
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.kill()
        for worker in workers:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                worker.join(5)
        raise
    pool.shutdown(wait=True)
