"""Ctrl-C and SIGTERM: unwind a command as an exception does, let running writes finish, one line."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that it unwinds
    the same way: whatever cleans up after Ctrl-C (temporary outputs removed, the local cluster
    shut down) cleans up after ``kill``, ``timeout``, ``docker stop`` and ``scancel`` too."""


class Stopped(BaseException):
    """A Ctrl-C or SIGTERM on its way out of a command, past click (which would print a blank
    line for a KeyboardInterrupt and turn it into ``Abort``); ``__cause__`` is the signal's,
    ``command`` the name of the command it stopped."""

    command: str | None = None


#: Set once the command has saved its output (and says "wrote ..."): a signal after that stops
#: nothing, and the command ends as it would, exit 0; an exit status of 130 or 143 would say the
#: output is as it was, when it has been replaced.
_saved = threading.Event()


def output_saved() -> None:
    """Say that the command's output is saved: signals from now on are let pass."""
    _saved.set()


@contextmanager
def unwinding_on_signals() -> Iterator[None]:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt and Terminated, and silence logging
    from then on.

    Shutting a cluster down under way makes asyncio and distributed log tracebacks (tasks
    cancelled under a gather: "Task exception was never retrieved ... AllExit"); the command
    says it was interrupted, in one line. A second SIGTERM (``scancel`` sends more) does not
    cut the cleanup short; a second Ctrl-C does, as a user may want. The handlers are set only
    in the main thread, where Python runs them, and ignored signals stay ignored; the previous
    handlers come back on return (tests run commands in-process), except that after a SIGTERM
    a default one stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    disabled = logging.root.manager.disable
    stopping = False
    terminated = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal stopping, terminated
        if _saved.is_set() or (terminated and signum == signal.SIGTERM):
            return
        stopping = True
        terminated = signum == signal.SIGTERM
        logging.disable(logging.CRITICAL)
        _let_zarr_writes_finish()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    _saved.clear()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if terminated and signum == signal.SIGTERM and handler is signal.SIG_DFL:
                # The process is on its way out: a repeated SIGTERM now would only turn its
                # exit status 143 into a kill, as the interpreter shuts down.
                handler = signal.SIG_IGN
            signal.signal(signum, handler)
        if stopping:
            gc.collect()  # asyncio reports a cancelled task when it is collected
            logging.disable(disabled)


@contextmanager
def running_tasks_finish_on_failure() -> Iterator[None]:
    """Within, a computation on Dask's threads that fails or is interrupted returns only when
    its running tasks have finished (see ``_let_running_tasks_finish``).

    Entered by each command as it starts, after its command line is read: importing Dask here
    would slow ``--help`` noticeably.
    """
    from dask.callbacks import Callback

    with Callback(finish=_let_running_tasks_finish):
        yield


def _let_zarr_writes_finish(timeout: float = 10) -> None:
    """Wait for the writes under way on Zarr's event loop (run in a thread of its own).

    A write this thread was waiting for goes on after the signal's exception, and may put its
    chunk back into the temporary output that is being removed (seen after 2 of 16 signals
    during ``ingest``). Called in the signal handler: nothing later runs before that removal.
    """
    import asyncio

    sync = sys.modules.get("zarr.core.sync")  # no import in a signal handler; none, no writes
    loop = (getattr(sync, "loop", None) or [None])[0]
    if loop is None or not loop.is_running():
        return

    async def settled() -> None:
        writes = asyncio.all_tasks() - {asyncio.current_task()}
        if writes:
            await asyncio.wait(writes, timeout=timeout)

    with suppress(Exception):
        asyncio.run_coroutine_threadsafe(settled(), loop).result(timeout + 1)


def _let_running_tasks_finish(dsk: Any, state: Any, failed: bool) -> None:
    """After a computation on Dask's threads in this process failed or was interrupted, wait
    for its tasks still running (a Dask callback).

    Left to themselves, they go on writing chunks into the temporary output that is being
    removed, and leave it behind: ``.NAME.*.tmp`` with a chunk or two, after 3 of 4 SIGTERMs
    during ``synth``. Tasks run first in first out, so the pool's threads are all free once
    each has reached a barrier put behind them.
    """
    import dask.threaded

    pool = dask.threaded.default_pool  # the one of computations from the main thread
    if not failed or pool is None or threading.current_thread() is not threading.main_thread():
        return
    barrier = threading.Barrier(pool._max_workers + 1, timeout=30)
    try:
        for _ in range(pool._max_workers):
            pool.submit(barrier.wait)
        barrier.wait()
    except (threading.BrokenBarrierError, RuntimeError):  # a task that runs on; a pool shut down
        barrier.abort()
