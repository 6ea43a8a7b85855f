"""Waiting on a Dask worker for tasks submitted to its own cluster, without a deadlock.

A stage submitted to a DaskTaskRunner runs on a worker thread. If its body submits more work
to the same cluster (a search's trials through ``prefect_map()``, stages ``.submit()``-ed from
a stage) and waits for it while holding that thread, then with one worker, or with every
worker running such a stage, no thread is free to run the work: the flow hangs. Dask's answer
(its docs, "Launch Tasks from Tasks") is to leave the worker's thread pool while waiting:
``distributed.secede()`` opens a slot for another task, ``distributed.rejoin()`` takes one
back. These helpers do that, and are no-ops outside a worker.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from typing import Iterator


def worker_thread() -> str | None:
    """None outside a Dask worker; "task": a worker's thread running a task (it can leave the
    pool); "other": another thread of a worker process that sees the worker (a copied context:
    the worker waits for it, and it cannot free the worker)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker
    from distributed.threadpoolexecutor import thread_state as pool_thread
    from distributed.worker import thread_state as task_thread

    try:
        get_worker()
    except ValueError:
        return None
    return "task" if hasattr(task_thread, "start_time") and hasattr(pool_thread, "executor") else "other"


def _secede() -> bool:
    """Leave the worker's thread pool (True), unless this thread is out of it already (False)."""
    from distributed import secede
    from distributed.threadpoolexecutor import thread_state

    if not getattr(thread_state, "proceed", True):
        return False  # seceded already (leave_the_pool, or the user's own secede())
    secede()
    return True


@contextlib.contextmanager
def off_the_pool() -> Iterator[None]:
    """On a worker's task thread: out of the worker's thread pool for the block, back in after
    (rejoining waits for the next free slot). Elsewhere: nothing."""
    if worker_thread() != "task" or not _secede():
        yield
        return
    try:
        yield
    finally:
        from distributed.threadpoolexecutor import rejoin

        rejoin()


def leave_the_pool(what: str) -> None:
    """Before ``what`` submits work to the cluster and waits for it in ways we don't see (a
    future's result, ``prefect.futures.wait``, ``as_completed``): on a worker's task thread,
    leave the pool for the rest of the task (it ends outside the pool, as Dask allows). From
    another thread of a worker, warn: it may wait for ever if no worker thread is free."""
    where = worker_thread()
    if where == "task":
        _secede()
    elif where == "other":
        warnings.warn(
            f"{what} submits to Dask from a thread of a Dask worker that is not its task's own "
            f"({threading.current_thread().name!r}), which cannot free its worker: it waits for ever if no "
            "other worker thread is free (submit from the stage's own thread)",
            RuntimeWarning,
            stacklevel=3,
        )


__all__ = ["worker_thread", "off_the_pool", "leave_the_pool"]
