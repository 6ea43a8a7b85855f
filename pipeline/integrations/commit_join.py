"""Where a flow run waits for its stages' background commits: before its final state.

A stage of a flow run hands the commit of its computed result to the process's commit
thread (:mod:`pipeline.store.pending`) and its task run completes at once, so the next stage
computes while the result is written. The join is the flow run's: when the flow function
has returned, and before the run proposes its terminal state, every commit of its stages is
waited for (Prefect's ``FlowRunEngine.handle_success``, wrapped here once). So a flow run
that reports Completed has every stage result durable in the store; one whose commits failed
reports Failed with one :class:`~pipeline.errors.StoreError` naming each result that was not
cached (its objects may be written, its manifest is not: a rerun computes it again). A flow
run that fails or crashes for another reason still has its commits finished, by its end-of-
run hook (``run_artifact.RunEnd``) and, at the latest, when the process exits.

Commits are deferred only in the process that runs the flow run (its thread pool included):
the caller side of a stage call opens the flow run's group here, and a stage body running in
a worker process (process pool, Dask) finds no open group and commits before it returns.
Async flows, and Prefect versions without the hook, commit synchronously too.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from prefect.context import FlowRunContext

from ..config import settings
from ..errors import StoreError
from ..store.pending import Pending, commits

_lock = threading.Lock()
_installed: bool | None = None


def _install() -> bool:
    """Wrap ``FlowRunEngine.handle_success`` so that it joins the run's commits first (once)."""
    global _installed
    with _lock:
        if _installed is None:
            try:
                from prefect.flow_engine import FlowRunEngine

                original = FlowRunEngine.handle_success
            except (ImportError, AttributeError):  # another Prefect: commit synchronously
                _installed = False
                return False

            @functools.wraps(original)
            def handle_success(self: Any, result: Any) -> Any:
                flow_run = getattr(self, "flow_run", None)
                if flow_run is not None:
                    join(str(flow_run.id))
                return original(self, result)

            FlowRunEngine.handle_success = handle_success
            _installed = True
    return _installed


def open_flow_run() -> None:
    """On the caller side of a stage call: let the current flow run's stages commit in the
    background (when configured, the flow is synchronous and the join is in place)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow is None or ctx.flow.isasync:
        return
    if settings().commits != "background" or not _install():
        return
    group = str(ctx.flow_run.id)
    if not commits().accepts(group):
        commits().open(group)


def current_group() -> str | None:
    """The group a stage body may defer its commit to: its flow run's, if open in this process."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    group = str(ctx.flow_run.id)
    return group if commits().accepts(group) else None


def join(group: str) -> None:
    """Wait for every commit of ``group``; raise one StoreError naming those that failed."""
    failed = commits().join(group)
    if failed:
        raise StoreError(_failure_message(failed))


def finish(group: str) -> list[Pending]:
    """Wait for every commit of ``group`` and return the failed ones (a run that already failed)."""
    return commits().join(group)


def _failure_message(failed: list[Pending]) -> str:
    n = len(failed)
    head = f"{n} stage result{'s were' if n > 1 else ' was'} not committed, so not cached (a rerun computes "
    head += "them again)" if n > 1 else "it again)"
    return head + ": " + "; ".join(f"{p.what}: {_reason(p.error)}" for p in failed)


def _reason(e: BaseException | None) -> str:
    return str(e) if isinstance(e, StoreError) else f"{type(e).__name__}: {e}"


__all__ = ["open_flow_run", "current_group", "join", "finish"]
