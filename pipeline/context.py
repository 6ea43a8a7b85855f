"""The run context: one small frozen object that says which store stages use, the run id,
what is forced, whether this is a dry run, which stage's body is executing, and how many
calls the run's task runner runs at once.

Set once per run (``with run_context(store=..., force=...)``) and read by every library
default: :func:`current_store`, ``StageCache()``, a Checkpointer inside a stage, ``tune``.
It lives in a context variable, so threads started with a copy of the caller's context
(Prefect's thread pool) see it. Worker *processes* have no context variables: a call that
crosses into one is wrapped by :func:`carry`, which pickles the context with the call and
activates it around the call in the worker — the one place the context is shipped.

:func:`use_store` changes the store of the process (a plain call, for the rest of the
process) or of a block (as a context manager, restored on exit).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .config import settings
from .store import Store
from .store.locks import Leasing


@dataclass(frozen=True)
class Force:
    """Stages to recompute although cached (``"*"``: all), and everything downstream.

    ``tainted`` is the one mutable part of a run's context: the content fingerprints of
    outputs recomputed by force in this run. A stage any of whose inputs or params has a
    tainted fingerprint is a dependant of a forced stage, and is forced too. It is shared
    by reference within a process and copied into worker processes with the call."""

    stages: frozenset[str]
    tainted: set[str] = field(default_factory=set, compare=False)

    @classmethod
    def of(cls, stages: Iterable[str]) -> Force:
        return cls(frozenset(stages))

    def applies(self, stage: str, fingerprints: Iterable[str]) -> bool:
        if "*" in self.stages or stage in self.stages:
            return True
        return any(fp in self.tainted for fp in fingerprints)

    def taint(self, fingerprints: Iterable[str]) -> None:
        self.tainted.update(fp for fp in fingerprints if fp)

    def everything(self) -> Force:
        """What a forced stage's body runs under: every stage it calls recomputes too (a
        forced search retrains its trials), on the same ledger of tainted outputs."""
        return self if "*" in self.stages else Force(frozenset({"*"}), self.tainted)


@dataclass(frozen=True)
class RunningStage:
    """The stage whose body is executing: where its training checkpoints belong."""

    store: Store
    stage: str
    key: str
    run_id: str
    forced: bool = False
    """Computed by force: its Checkpointer starts from scratch instead of resuming."""


@dataclass(frozen=True)
class RunContext:
    store: Store | None = None
    """The store stages use; None: the configured one (``[tool.pipeline] store``)."""
    run_id: str | None = None
    """The run stages report to; None: the Prefect flow run's id, if any."""
    force: Force | None = None
    plan: Any = None
    """A :class:`pipeline.plan.Plan` during a dry run: stage calls plan instead of running."""
    stage: RunningStage | None = None
    parallel: int = 1
    """How many calls the run's task runner runs at once (its Dask workers' threads): a
    search run with a ``map_fn`` asks that many trials at a time."""
    lease: Leasing | None = None
    """How missing stage keys are leased; None: as configured (``[tool.pipeline] lease``)."""

    def leasing(self) -> Leasing:
        if self.lease is not None:
            return self.lease
        return Leasing() if settings().lease else Leasing.off()

    def replace(self, **changes: Any) -> RunContext:
        return dataclasses.replace(self, **changes)


_process = RunContext()  # the process's context outside any run_context block (see use_store)
_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("pipeline_run_context", default=None)


def current() -> RunContext:
    """The context of this thread/task: the innermost ``run_context`` block, else the process's."""
    ctx = _current.get()
    return _process if ctx is None else ctx


@contextlib.contextmanager
def activate(ctx: RunContext) -> Iterator[RunContext]:
    """Within this block ``ctx`` is the context (as it is, not derived from the current one)."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextlib.contextmanager
def run_context(**changes: Any) -> Iterator[RunContext]:
    """Within this block the current context with ``changes`` (store, run_id, force, plan, lease)."""
    if isinstance(changes.get("store"), (str, os.PathLike)):
        changes["store"] = open_store(changes["store"])
    with activate(current().replace(**changes)) as ctx:
        yield ctx


def open_store(store: Store | str | os.PathLike) -> Store:
    """``store`` itself, or the store at that URL/path with the configured durability (and
    the configured mirrors, when it is the configured store)."""
    if isinstance(store, Store):
        return store
    s = settings()
    same = os.fspath(store) == s.store or ("://" not in os.fspath(store) and os.path.abspath(store) == s.store)
    return Store(store, fsync=s.fsync, mirrors=s.mirrors if same else (), mirror_mode=s.mirror_mode)


@functools.lru_cache(maxsize=4)
def _configured(url: str, fsync: bool, mirrors: tuple[str, ...] = (), mirror_mode: str = "sync") -> Store:
    # The configured default, opened once per settings (not per stage call: on S3 opening
    # reads store.json). Nothing registers stores here; a chosen store lives in the context.
    return Store(url, fsync=fsync, mirrors=mirrors, mirror_mode=mirror_mode)


def current_store() -> Store:
    """The store stages use: the context's (:func:`use_store`, the run's), else the configured one."""
    store = current().store
    if store is not None:
        return store
    s = settings()
    return _configured(s.store, s.fsync, s.mirrors, s.mirror_mode)


def current_stage() -> RunningStage | None:
    """The stage being computed in this thread/task (None outside a stage body)."""
    return current().stage


def use_store(store: Store | str | os.PathLike) -> StoreChoice:
    """Make stages use ``store`` (a :class:`Store`, URL or path).

    As a plain call, ``use_store("s3://bucket/ckpt")`` sets the store for the rest of the
    process (and of the current run, if one is active); as a context manager, ``with
    use_store(path) as store:`` sets it for the block and restores the previous store on exit.
    Worker processes of a run get it with each call (no environment variable)."""
    return StoreChoice(open_store(store))


class StoreChoice:
    """A store chosen by :func:`use_store`, in effect from the call until :meth:`restore`."""

    def __init__(self, store: Store) -> None:
        global _process
        self.store = store
        self._previous = _process
        _process = _process.replace(store=store)
        ctx = _current.get()
        self._token = None if ctx is None else _current.set(ctx.replace(store=store))

    def restore(self) -> None:
        """Undo the choice: the store before it is the store again."""
        global _process
        _process = self._previous
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"<store choice {self.store.url!r}>"


class Carried:
    """``fn`` with the run context it was called under, for a call that runs elsewhere (a
    worker process, a Dask worker): pickled with the call, activated around it there."""

    def __init__(self, fn: Callable[..., Any], context: RunContext) -> None:
        self.fn = fn
        self.context = context
        functools.update_wrapper(self, fn)  # same name and signature, for task runners

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with activate(self.context):
            return self.fn(*args, **kwargs)


def carry(fn: Callable[..., Any]) -> Carried:
    """``fn`` carrying the current run context (see :class:`Carried`)."""
    if isinstance(fn, Carried):
        fn = fn.fn
    return Carried(fn, current())


__all__ = [
    "RunContext",
    "Force",
    "RunningStage",
    "current",
    "activate",
    "run_context",
    "current_store",
    "current_stage",
    "use_store",
    "StoreChoice",
    "open_store",
    "carry",
    "Carried",
]
