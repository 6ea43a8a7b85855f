"""How checkpoints are written: the policies ``Sync()`` and ``Background()``, and the Writer.

The training thread hands over a job (serialise a snapshot, commit its manifest). Under
``Sync()`` the job runs inline. Under ``Background()`` it runs in a background thread and at
most one is in flight: a new job waits for the previous one, or, with
``Background(skip_when_busy=True)``, is dropped (unless forced). A job's failure is kept and
raised by the next :meth:`Writer.check` — at the next ``step()`` or at ``close()`` — never
lost: a program that exits without closing waits for the write in flight and has its
failure printed.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable

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


_OPEN: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    """A program that ends without ``close()`` hears why its last write failed. (The write
    itself has finished: writer threads are not daemons, so the interpreter waits for them
    before it runs this.)"""
    for writer in list(_OPEN):
        writer.wait()
        failure = writer._take_error()
        if failure is not None:
            what, e = failure
            print(f"pipeline: writing {what} failed: {type(e).__name__}: {e}", file=sys.stderr)


class Writer:
    """Runs checkpoint jobs as its :class:`WritePolicy` says."""

    def __init__(self, policy: WritePolicy) -> None:
        self.policy = check_writer(policy)
        self.asynchronous = asynchronous = policy.asynchronous
        self._thread: threading.Thread | None = None
        self._error: tuple[str, BaseException] | None = None
        self._lock = threading.Lock()
        if asynchronous:
            _OPEN.add(self)
            preload_codecs()  # the writer thread must not import them lazily (see preload)

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def will_skip(self, force: bool = False) -> bool:
        """True when a job submitted now would be dropped (check before taking a snapshot)."""
        return self.asynchronous and self.policy.skip_when_busy and not force and self.busy()

    def submit(self, what: str, job: Callable[[], None], *, force: bool = False) -> bool:
        """Run ``job`` (now, or in the background); False when it was skipped as busy."""
        self.check()
        if not self.asynchronous:
            self._run(what, job)
            self.check()
            return True
        if self.will_skip(force):
            return False
        self.wait()
        self.check()
        self._thread = threading.Thread(
            target=self._run, args=(what, job), name="pipeline-checkpoint-writer", daemon=False
        )
        self._thread.start()
        return True

    def _run(self, what: str, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # kept and raised in the training thread
            with self._lock:
                if self._error is None:
                    self._error = (what, e)

    def wait(self) -> None:
        """Until the write in flight (if any) is done."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def _take_error(self) -> tuple[str, BaseException] | None:
        with self._lock:
            failure, self._error = self._error, None
        return failure

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
        _OPEN.discard(self)
        self.wait()
        self.check()
