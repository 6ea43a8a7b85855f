"""When to save, what to keep, when to stop: small frozen policy objects.

A policy sees a tiny :class:`Record` per step (step number, metrics, wall time) and answers
one question: ``should_save(record, history)`` or ``should_keep(records)``. Policies of
one kind compose with ``|``::

    save = EveryNEpochs(2) | EveryNSeconds(300) | OnImprovement("val_loss", mode="min")
    keep = LatestN(2) | BestK(3, "val_loss", mode="min")

The keep policies (``LatestN``, ``BestK``, ``Pinned``…) are the store's retention vocabulary
(``pipeline.store.keep``), re-exported here: the same classes serve ``gc``.

A step number counts completed epochs: the checkpoint written after epoch index 4 (the
fifth epoch) is step 5, and resuming from it starts at epoch index 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import ConfigError
from ..store.keep import (  # what to keep: one vocabulary with gc's retention (pipeline.store.keep)
    AnyKeep,
    BestK,
    FailedRuns,
    KeepAll,
    KeepPolicy,
    LatestN,
    MaxBytes,
    OlderThan,
    Pinned,
    Record,
    check_mode,
    retained,
)
from ..store.keep import check_metric as _check_metric
from ..store.keep import check_positive as _check_positive
from ..store.keep import flatten as _flatten


@dataclass(frozen=True)
class History:
    """What a save policy may look back on: every earlier step, the saved ones, the start."""

    seen: Sequence[Record] = ()
    saved: Sequence[Record] = ()
    start: float = 0.0
    total: int | None = None
    """Epochs planned, when the loop said (``Checkpointer.epochs(state, total)``)."""


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when ``value`` improves on ``best`` by more than ``min_delta`` (NaN never does)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def best_of(records: Sequence[Record], metric: str, mode: str) -> Record | None:
    """The record with the best value of ``metric`` (the earliest among equals)."""
    best: Record | None = None
    for r in sorted(records, key=lambda r: r.step):
        v = r.metrics.get(metric)
        if v is not None and is_better(v, None if best is None else best.metrics[metric], mode):
            best = r
    return best


# -- save decisions --------------------------------------------------------------------------
class SavePolicy:
    """Decides whether the step just finished is checkpointed."""

    monitors: tuple[str, ...] = ()

    def should_save(self, record: Record, history: History) -> bool:
        raise NotImplementedError

    def __or__(self, other: object) -> AnySave:
        if not isinstance(other, SavePolicy):
            raise ConfigError(f"cannot combine save policy {self!r} with {other!r}: `|` joins policies of one kind")
        return AnySave(_flatten(self, AnySave) + _flatten(other, AnySave))


@dataclass(frozen=True)
class EveryNEpochs(SavePolicy):
    """Save after every ``n``-th epoch (steps n, 2n, 3n…)."""

    n: int = 1

    def __post_init__(self) -> None:
        _check_positive(self.n, "n", "EveryNEpochs")

    def should_save(self, record: Record, history: History) -> bool:
        return record.step % self.n == 0


@dataclass(frozen=True)
class EveryNSeconds(SavePolicy):
    """Save when ``seconds`` have passed since the last save (or since training started)."""

    seconds: float = 300.0

    def __post_init__(self) -> None:
        _check_positive(self.seconds, "seconds", "EveryNSeconds", minimum=0)

    def should_save(self, record: Record, history: History) -> bool:
        last = history.saved[-1].time if history.saved else history.start
        return record.time - last >= self.seconds


@dataclass(frozen=True)
class OnImprovement(SavePolicy):
    """Save when ``metric`` beats every earlier step by more than ``min_delta``."""

    metric: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _check_metric(self.metric, "OnImprovement")
        check_mode(self.mode, "OnImprovement")
        _check_positive(self.min_delta, "min_delta", "OnImprovement", minimum=0)
        object.__setattr__(self, "monitors", (self.metric,))

    def should_save(self, record: Record, history: History) -> bool:
        best = best_of(history.seen, self.metric, self.mode)
        value = record.metrics.get(self.metric)
        return value is not None and is_better(value, best and best.metrics[self.metric], self.mode, self.min_delta)


@dataclass(frozen=True)
class AnySave(SavePolicy):
    """Save when any of ``policies`` says so."""

    policies: tuple[SavePolicy, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "monitors", tuple(m for p in self.policies for m in p.monitors))

    def should_save(self, record: Record, history: History) -> bool:
        return any(p.should_save(record, history) for p in self.policies)


@dataclass(frozen=True)
class SkipFinal(SavePolicy):
    """Save as ``policy`` says, except after the final planned epoch.

    For training whose final result is committed right afterwards anyway (a search trial's
    result, a stage's return value): that last checkpoint would only be superseded. Saves
    that early stopping forces (a new best with ``restore_best``, the stop) still happen.
    Without a planned total (``epochs()`` not called) nothing is skipped."""

    policy: SavePolicy = field(default_factory=lambda: EveryNEpochs(1))

    def __post_init__(self) -> None:
        if not isinstance(self.policy, SavePolicy):
            raise ConfigError(f"SkipFinal wraps a save policy (EveryNEpochs, OnImprovement…), not {self.policy!r}")
        object.__setattr__(self, "monitors", self.policy.monitors)

    def should_save(self, record: Record, history: History) -> bool:
        final = history.total is not None and record.step >= history.total
        return not final and self.policy.should_save(record, history)


def members(policy: object) -> tuple:
    """The plain policies inside a composed one (``|``, ``SkipFinal``), in order."""
    if isinstance(policy, (AnySave, AnyKeep)):
        return tuple(m for p in policy.policies for m in members(p))
    if isinstance(policy, SkipFinal):
        return members(policy.policy)
    return (policy,)


# -- early stopping --------------------------------------------------------------------------
@dataclass(frozen=True)
class StopState:
    """Early-stopping counters; saved in every checkpoint."""

    best: float | None = None
    best_step: int | None = None
    wait: int = 0
    stopped: bool = False


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the state holds the best epoch's entries once training stops (or
    at ``Checkpointer.finish``); every improvement is then checkpointed so the best state
    survives a crash."""

    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = False

    def __post_init__(self) -> None:
        _check_metric(self.monitor, "EarlyStopping")
        check_mode(self.mode, "EarlyStopping")
        _check_positive(self.patience, "patience", "EarlyStopping", minimum=0)
        _check_positive(self.min_delta, "min_delta", "EarlyStopping", minimum=0)

    @property
    def monitors(self) -> tuple[str, ...]:
        return (self.monitor,)

    def update(self, state: StopState, record: Record) -> tuple[StopState, bool]:
        """The counters after ``record``, and whether it was an improvement."""
        value = record.metrics[self.monitor]
        if is_better(value, state.best, self.mode, self.min_delta):
            return StopState(float(value), record.step, 0, False), True
        wait = state.wait + 1
        return StopState(state.best, state.best_step, wait, wait >= self.patience), False


__all__ = [
    "Record",
    "History",
    "SavePolicy",
    "EveryNEpochs",
    "EveryNSeconds",
    "OnImprovement",
    "AnySave",
    "SkipFinal",
    "members",
    "KeepPolicy",
    "KeepAll",
    "LatestN",
    "BestK",
    "AnyKeep",
    "OlderThan",
    "MaxBytes",
    "Pinned",
    "FailedRuns",
    "retained",
    "EarlyStopping",
    "StopState",
    "is_better",
    "best_of",
]
