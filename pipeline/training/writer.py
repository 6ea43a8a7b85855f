"""How checkpoints are written: the policies ``Sync()`` and ``Background()``, and the Writer.

The training thread hands over a job (serialise a snapshot, commit its manifest). Under
``Sync()`` the job runs inline. Under ``Background()`` it runs in the writer's one background
thread (started at the first job; ``close()`` hands it back to an idle pool, where the next
writer of the process picks it up, or it ends after ``IDLE_SECONDS``: no thread start per
save, nor per trial of a search), and at
most one is in flight: a new job waits for the previous one, or, with
``Background(skip_when_busy=True)``, is dropped (unless forced). A job's failure is kept and
raised by the next :meth:`Writer.check` — at the next ``step()`` or at ``close()`` — never
lost: a program that exits without closing waits for the write in flight and has its
failure printed.

A Writer may also run its jobs on another, open Writer's thread (its *lane*, ``sharing(lane)``
while Writers are created): a search runs its trials' checkpoint writes on the thread that
commits its trials, one thread per search instead of one handed over per trial. Each Writer
still waits only for its own jobs and hears only its own failures; the lane runs them all in
the order submitted. A lane that has closed takes no more jobs: its Writers then start their own.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import queue
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import CheckpointError, ConfigError, PipelineError
from ..store.codecs import preload as preload_codecs


class WritePolicy:
    """How a Checkpointer writes its checkpoints."""

    asynchronous = False
    skip_when_busy = False


@dataclass(frozen=True)
class Sync(WritePolicy):
    """Write in the training thread: ``step()`` returns once the checkpoint is committed."""


@dataclass(frozen=True)
class Background(WritePolicy):
    """Write in a background thread after an in-memory snapshot (the default): training
    waits only for the snapshot. At most one write is in flight; a save due while one is
    running waits for it, or with ``skip_when_busy=True`` is dropped (saves forced by early
    stopping never are)."""

    skip_when_busy: bool = False
    asynchronous = True

    def __post_init__(self) -> None:
        if not isinstance(self.skip_when_busy, bool):
            raise ConfigError(f"Background(skip_when_busy=) takes True or False, not {self.skip_when_busy!r}")


def check_writer(policy: object) -> WritePolicy:
    if not isinstance(policy, WritePolicy):
        raise ConfigError(f"writer= takes Sync() or Background(skip_when_busy=...), not {policy!r}")
    return policy


_OPEN: weakref.WeakSet[_Jobs] = weakref.WeakSet()
IDLE_SECONDS = 5.0
"""How long a writer thread whose writer closed waits for the next writer to work for."""
_IDLE = threading.Lock()
_idle = 0  # writer threads waiting on _HANDOFF and not yet claimed
_HANDOFF: queue.SimpleQueue[_Jobs] = queue.SimpleQueue()


def _forget_idle_threads() -> None:
    """In a forked child: the parent's idle threads do not exist here."""
    global _IDLE, _idle, _HANDOFF
    _IDLE, _idle, _HANDOFF = threading.Lock(), 0, queue.SimpleQueue()


os.register_at_fork(after_in_child=_forget_idle_threads)


def _serve(jobs: _Jobs) -> None:
    """A writer thread: works off one writer's jobs until it stops, then the next writer's."""
    global _idle
    while True:
        jobs.work()
        del jobs  # (a dropped Writer's _Jobs is not kept alive by an idle thread)
        with _IDLE:
            _idle += 1
        try:
            jobs = _HANDOFF.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _IDLE:
                if _idle > 0:  # unclaimed: end
                    _idle -= 1
                    return
            jobs = _HANDOFF.get()  # claimed just now: its jobs are on the way


def _start(jobs: _Jobs) -> None:
    """Hand ``jobs`` to an idle writer thread, or start one."""
    global _idle
    with _IDLE:
        claimed = _idle > 0
        if claimed:
            _idle -= 1
    if claimed:
        _HANDOFF.put(jobs)
    else:
        threading.Thread(target=_serve, args=(jobs,), name="pipeline-checkpoint-writer", daemon=True).start()


@atexit.register
def _finish_at_exit() -> None:
    """A program that ends without ``close()`` completes the write in flight and hears why
    it failed, if it did. (Writer threads are daemons, so that an idle one never holds the
    interpreter; they keep running while atexit handlers run, so waiting here finishes the
    write.)"""
    for jobs in list(_OPEN):
        jobs.wait()
        failure = jobs.take_error()
        if failure is not None:
            what, e = failure
            print(f"pipeline: writing {what} failed: {type(e).__name__}: {e}", file=sys.stderr)


class _Jobs:
    """The queue one writer thread works off, and what it reports back to each job's owner
    (the ``_Jobs`` of the Writer that submitted it: this one, or one using it as its lane).
    Held by the thread and its Writer, not the Writer by the thread: a Writer dropped without
    ``close()`` is collected and its thread stops after the job in flight."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[_Jobs, str, Callable[[], None]] | None] = queue.SimpleQueue()
        self.done = threading.Condition()
        self.pending = 0
        self.error: tuple[str, BaseException] | None = None
        self.gate = threading.Lock()
        self.open = False
        """Served by a thread that has not been told to stop: other Writers may queue jobs here."""

    def put(self, what: str, job: Callable[[], None], owner: _Jobs | None = None) -> None:
        owner = self if owner is None else owner
        with owner.done:
            owner.pending += 1
        self.queue.put((owner, what, job))

    def put_if_open(self, what: str, job: Callable[[], None], owner: _Jobs) -> bool:
        """Queue another Writer's job here unless this queue's thread was told to stop."""
        with self.gate:
            if self.open:
                self.put(what, job, owner)
            return self.open

    def stop(self) -> None:
        with self.gate:
            self.open = False
            self.queue.put(None)

    def work(self) -> None:
        while (item := self.queue.get()) is not None:
            owner, what, job = item
            item = None
            try:
                job()
            except BaseException as e:  # kept and raised in the training thread
                with owner.done:
                    if owner.error is None:
                        owner.error = (what, e)
            finally:
                job = None  # the snapshot it holds is freed now, not at the next job
                with owner.done:
                    owner.pending -= 1
                    owner.done.notify_all()
            owner = None

    def wait(self, pending: int = 0) -> None:
        """Until at most ``pending`` jobs are in flight."""
        with self.done:
            self.done.wait_for(lambda: self.pending <= pending)

    def take_error(self) -> tuple[str, BaseException] | None:
        if self.error is None:  # (every step() asks: no lock while nothing failed; set under it)
            return None
        with self.done:
            failure, self.error = self.error, None
        return failure


_LANE: contextvars.ContextVar[Writer | None] = contextvars.ContextVar("pipeline_writer_lane", default=None)


@contextlib.contextmanager
def sharing(lane: Writer) -> Iterator[Writer]:
    """Background Writers created in this block run their jobs on ``lane``'s thread (while it
    is open; see the module docstring)."""
    token = _LANE.set(lane)
    try:
        yield lane
    finally:
        _LANE.reset(token)


class Writer:
    """Runs checkpoint jobs as its :class:`WritePolicy` says: inline, or in one background
    thread of its own (started at the first job, kept until :meth:`close`) or of its lane
    (:func:`sharing`), one job at a time."""

    def __init__(self, policy: WritePolicy, *, depth: int = 1) -> None:
        self.policy = check_writer(policy)
        self.asynchronous = policy.asynchronous
        self.depth = depth
        """Jobs in flight at most (queued or running); a caller holding ``depth`` snapshot
        buffers calls :meth:`ready` before it fills one."""
        self._jobs = _Jobs()
        self._started = False
        self._closed = False
        lane = _LANE.get() if self.asynchronous else None
        self._lane: Writer | None = lane if lane is not None and lane.asynchronous else None
        if self.asynchronous:
            preload_codecs()  # the writer thread must not import them lazily (see preload)

    def busy(self) -> bool:
        return self._jobs.pending > 0

    def will_skip(self, force: bool = False) -> bool:
        """True when a job submitted now would be dropped (check before taking a snapshot)."""
        return self.asynchronous and self.policy.skip_when_busy and not force and self.busy()

    def submit(self, what: str, job: Callable[[], None], *, force: bool = False) -> bool:
        """Run ``job`` (now, or in the background); False when it was skipped as busy."""
        self.check()
        if not self.asynchronous:
            try:
                job()
            except BaseException as e:
                self._jobs.error = (what, e)
            self.check()
            return True
        if self.will_skip(force):
            return False
        self.ready()
        lane = self._lane
        if lane is not None:
            if not lane._closed and lane.start()._jobs.put_if_open(what, job, self._jobs):
                _OPEN.add(self._jobs)  # (a program that exits waits for it)
                return True
            self._lane = None  # the lane closed: a thread of its own from now on
        self.start()
        self._jobs.put(what, job)
        return True

    def start(self) -> Writer:
        """Start the background thread now, if not yet (a lane starts at its first job, its own
        or that of a Writer sharing it; once closed it takes no more from those)."""
        self._closed = False
        if self.asynchronous and not self._started:
            self._started = True
            self._jobs.open = True
            _start(self._jobs)
            _OPEN.add(self._jobs)
            weakref.finalize(self, self._jobs.stop)
        return self

    def ready(self) -> None:
        """Until fewer than ``depth`` jobs are in flight (so the oldest snapshot buffer is
        free again); raise the failure of an earlier write."""
        self._jobs.wait(self.depth - 1)
        self.check()

    def wait(self) -> None:
        """Until the write in flight (if any) is done."""
        self._jobs.wait()

    def _take_error(self) -> tuple[str, BaseException] | None:
        return self._jobs.take_error()

    def check(self) -> None:
        """Raise the failure of an earlier write, once."""
        failure = self._take_error()
        if failure is None:
            return
        what, e = failure
        if isinstance(e, CheckpointError):
            raise e
        detail = str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}"
        raise CheckpointError(f"writing {what} failed: {detail}") from e

    def close(self) -> None:
        """Wait for the write in flight, hand the thread back, raise a failure."""
        self._closed = True
        self.wait()
        if self._started:
            self._started = False
            self._jobs.stop()
        _OPEN.discard(self._jobs)
        self.check()
