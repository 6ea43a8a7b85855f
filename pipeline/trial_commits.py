"""A search's trial commits, in a background thread while the next trial trains.

Committing a finished trial waits for the disk: its object and its manifest are each fsynced
with their directory (4 fsyncs, 2 more for a new best), milliseconds each, which a short trial
felt in full when its search waited for them before asking the next trial. A search run in
one process instead hands each trial's commit — save and commit the result (the protocol of
every stage, fsync included), then release its lease, drop its epoch checkpoints, commit a new
best and the run's trial event — to one committer thread, and trains the next trial meanwhile.
The trials' epoch checkpoints are written on that same thread (a lane, ``training.writer.sharing``):
one background thread per search, none handed over per trial.

What it guarantees (the order of a synchronous search, shifted by one trial):

- a trial is *reported* (``on_trial``, the search's result) only once its commit has landed;
- at most one commit is in flight: before a trial is told to the study, the one before it has
  landed (its failure is raised there, as the exception the commit raised, not later);
- the parts of one commit run in order (result, lease, checkpoints, best, event), so the best
  record never points at objects not yet committed, and a trial's epoch checkpoints are gone
  only once its result is durable;
- a kill at any instant leaves a trial either committed or not there (then it is trained again,
  resuming from its epoch checkpoints) — never reported and lost.
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable

from .cache import CachedStage
from .store import Manifest
from .training.writer import Background, Writer


class Deferred:
    """Set around one trial's stage call: the trial stage puts its save and lease here instead
    of committing in the call (``armed``: the next save is deferred; a forced trial's is not)."""

    __slots__ = ("armed", "save", "lease", "checkpoints")

    def __init__(self) -> None:
        self.armed = False
        self.save: tuple[Any, Any, float] | None = None
        self.lease: Any = None
        self.checkpoints: Any = None
        """What the trial's Checkpointer knows of its checkpoints (``Checkpointer.known()``):
        the commit drops them without listing and reading them again."""

    def release(self) -> None:
        """Release the lease now: the call ended without a result to commit."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()


DEFERRED: contextvars.ContextVar[Deferred | None] = contextvars.ContextVar("pipeline_deferred_trial", default=None)


class DeferringStage(CachedStage):
    """A stage whose call, inside a :class:`Deferred`, returns the computed result with no
    manifest yet: its save and its lease are left in the Deferred, for :meth:`commit_now` in
    the committer thread (a forced call is committed in the call: it taints its outputs)."""

    def _compute(self, ctx: Any, key: Any, forced: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        deferred = DEFERRED.get()
        if deferred is not None:
            deferred.armed = not forced
        return super()._compute(ctx, key, forced, args, kwargs)

    def save(self, key: Any, value: Any, compute_seconds: float) -> Manifest:
        deferred = DEFERRED.get()
        if deferred is None or not deferred.armed:
            return super().save(key, value, compute_seconds)
        deferred.armed, deferred.save = False, (key, value, compute_seconds)
        return None  # type: ignore[return-value]  # committed by commit_now, in the committer thread

    def commit_now(self, key: Any, value: Any, compute_seconds: float) -> Manifest:
        """The deferred save: persist and commit (the stage protocol, fsync included)."""
        return super().save(key, value, compute_seconds)

    def release_lease(self, lease: Any) -> None:
        deferred = DEFERRED.get()
        if deferred is not None and deferred.save is not None:
            deferred.lease = lease  # held until the deferred commit has landed
        else:
            lease.release()


class Commit:
    """One trial's commit: ``steps`` run in order in the committer thread; the first that
    raises ends it and its exception is raised by :meth:`Committer.land`, which else calls
    ``then(report)`` in the search's thread."""

    def __init__(self, what: str, steps: list[Callable[[], Any]], then: Callable[[bool], None]) -> None:
        self.what, self.steps, self.then = what, steps, then
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for step in self.steps:
                step()
        except BaseException as e:  # raised in the search's thread by land()
            self.error = e


class Committer:
    """The search's committer thread (a background writer: the thread is reused, none is started
    per trial) and the one commit in flight."""

    def __init__(self) -> None:
        self._writer = Writer(Background())
        self._pending: Commit | None = None

    def lane(self) -> Writer:
        """The committer's writer: the trials' checkpoint writers run on its thread too
        (``training.writer.sharing``), one thread per search, started at the first job (a
        fully cached search starts none)."""
        return self._writer

    def submit(self, commit: Commit) -> None:
        """Land the commit in flight, then start ``commit``."""
        self.land()
        self._pending = commit
        self._writer.submit(commit.what, commit.run)

    def land(self, report: bool = True) -> None:
        """Until the commit in flight (if any) has landed; raise its failure, else run its
        ``then(report)`` in this thread (the search's bookkeeping, and reporting the trial)."""
        commit, self._pending = self._pending, None
        if commit is None:
            return
        self._writer.wait()
        if commit.error is not None:
            raise commit.error
        commit.then(report)

    def close(self, report: bool = True) -> None:
        """Land the commit in flight; hand the thread back."""
        try:
            self.land(report)
        finally:
            self._writer.close()


__all__ = ["Deferred", "DEFERRED", "DeferringStage", "Commit", "Committer"]
