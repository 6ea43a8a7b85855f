"""Commits in flight: stage results a background thread writes while the next stage computes.

A job (encode a result's objects, write and fsync them, commit its manifest last) is handed
to the process's one commit thread under a *group* (a flow run) and an *ident* (stage, key).
The caller goes on at once; :meth:`Commits.join` of the group waits for every job of it and
returns the ones that failed, so that the owner of the group reports them as one error. A
failed job leaves no manifest: its result is simply not cached. A job that never ran (the
process was killed) is lost the same way, and a rerun computes it again; nothing already
committed is touched.

Bounded: at most :data:`DEPTH` jobs are in flight (queued or running); a submit beyond that
waits for the oldest, so the values held for writing stay bounded. A group is accepted only
in the process that opened it (a forked or spawned worker has its own, empty registry), so a
job is only ever queued where its group's join will run. A program that exits with jobs in
flight finishes them first (atexit; the thread is a daemon so that an idle one never holds
the interpreter).
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

DEPTH = 2
"""Jobs in flight at most (the one being written and the one queued behind it)."""


@dataclass(eq=False)
class Pending:
    """One job: what it writes, its outcome once done (its ``result`` or its ``error``)."""

    what: str
    group: str
    ident: tuple[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _then: list[Callable[[Any], None]] = field(default_factory=list, repr=False)
    _finally: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def then(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(result)`` once the job succeeded (now, here, if it already has); never
        after a failure. A failure of ``fn`` while the job is in flight is the job's failure."""
        with self._lock:
            if not self.done.is_set():
                self._then.append(fn)
                return
        if self.error is None:
            fn(self.result)

    def when_done(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the job is done, failed or not (now, here, if it already is)."""
        with self._lock:
            if not self.done.is_set():
                self._finally.append(fn)
                return
        fn()


class Commits:
    """The process's commit queue (see the module docstring)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._queue: collections.deque[tuple[Pending, Callable[[], Any]]] = collections.deque()
        self._groups: dict[str, list[Pending]] = {}
        self._open: dict[str, int] = {}  # group -> pid of the process that opened it
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    def open(self, group: str) -> None:
        """Accept jobs of ``group`` in this process from now on (until its join)."""
        with self.cond:
            self._open[group] = os.getpid()

    def accepts(self, group: str | None) -> bool:
        return group is not None and self._open.get(group) == os.getpid()

    def submit(self, group: str, ident: tuple[str, str], what: str, job: Callable[[], Any]) -> Pending:
        """Queue ``job`` (after at most ``DEPTH - 1`` others); its result or failure is kept."""
        pending = Pending(what, group, ident, _lock=self.cond)
        with self.cond:
            self.cond.wait_for(lambda: self._in_flight < DEPTH)
            self._in_flight += 1
            self._groups.setdefault(group, []).append(pending)
            self._queue.append((pending, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="pipeline-commit-writer", daemon=True)
                self._thread.start()
            self.cond.notify_all()
        return pending

    def _work(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: bool(self._queue))
                pending, job = self._queue.popleft()
            try:
                pending.result = job()
            except BaseException as e:  # kept for the join of its group
                pending.error = e
            job = None  # the value it holds is freed now, not at the next job
            while True:  # what waits for the result, then done (under the lock ``then`` takes)
                with self.cond:
                    if pending.error is not None or not pending._then:
                        pending._then.clear()
                        pending.done.set()
                        self._in_flight -= 1
                        self.cond.notify_all()
                        finals, pending._finally = pending._finally, []
                        break
                    fn = pending._then.pop(0)
                try:
                    fn(pending.result)
                except BaseException as e:
                    pending.error = e
            for final in finals:  # (a lease released): failures here change nothing committed
                try:
                    final()
                except Exception as e:
                    print(f"pipeline: after committing {pending.what}: {type(e).__name__}: {e}", file=sys.stderr)

    def wait_for(self, ident: tuple[str, str]) -> None:
        """Until no job for ``ident`` is in flight (a later call of the same stage key reads
        the committed result instead of computing it again)."""
        with self.cond:
            found = [p for jobs in self._groups.values() for p in jobs if p.ident == ident and not p.done.is_set()]
        for p in found:
            p.done.wait()

    def join(self, group: str) -> list[Pending]:
        """Wait for every job of ``group``, close it, and return those that failed."""
        with self.cond:
            self._open.pop(group, None)
            jobs = self._groups.pop(group, [])
        for p in jobs:
            p.done.wait()
        return [p for p in jobs if p.error is not None]

    def join_all(self) -> list[Pending]:
        failed = []
        for group in list(self._groups):
            failed += self.join(group)
        return failed


_registry = Commits()


def commits() -> Commits:
    """The commit queue of this process."""
    return _registry


def _fresh_in_child() -> None:
    global _registry
    _registry = Commits()  # the parent's thread and jobs do not exist in a forked child


os.register_at_fork(after_in_child=_fresh_in_child)


@atexit.register
def _finish_at_exit() -> None:
    for p in _registry.join_all():
        print(f"pipeline: committing {p.what} failed: {type(p.error).__name__}: {p.error}", file=sys.stderr)


NO_SNAPSHOT: Any = object()
_JSON_ITEMS = 4096


def snapshot(value: Any) -> Any:
    """A copy of ``value`` that no later in-place change of ``value`` can reach, made without
    copying its data, or ``NO_SNAPSHOT`` when there is none (that result commits at once).

    pandas frames and series under copy-on-write (pandas 3): a shallow copy, whose data any
    write through ``value`` copies first. Arrow tables: themselves (immutable). Small plain
    JSON values: a deep copy. Tuples and str-keyed dicts of those: part by part."""
    tp = type(value)
    if value is None or tp in (bool, int, float, str, bytes):
        return value
    if tp is tuple or (tp is dict and all(type(k) is str for k in value)):
        items = value.items() if tp is dict else enumerate(value)
        parts = {k: snapshot(v) for k, v in items}
        if any(p is NO_SNAPSHOT for p in parts.values()):
            return NO_SNAPSHOT
        return parts if tp is dict else tuple(parts.values())
    if tp is list and len(value) <= _JSON_ITEMS and all(type(x) in (bool, int, float, str) or x is None for x in value):
        return list(value)
    module = tp.__module__.partition(".")[0]
    if module == "pandas" and _copy_on_write():
        import pandas as pd

        if tp in (pd.DataFrame, pd.Series):
            return value.copy(deep=False)
    if module == "pyarrow":
        import pyarrow as pa

        if tp is pa.Table:
            return value
    return NO_SNAPSHOT


def _copy_on_write() -> bool:
    import pandas as pd

    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    return bool(getattr(pd.options.mode, "copy_on_write", False) is True)


__all__ = ["Commits", "Pending", "commits", "snapshot", "NO_SNAPSHOT", "DEPTH"]
