"""When to save, what to keep, when to stop: small frozen policy objects.

A policy sees a tiny :class:`Record` per step (step number, metrics, wall time) and answers
one question: ``should_save(record, history)`` or ``should_keep(records)``. Policies of
one kind compose with ``|``::

    save = EveryNEpochs(2) | EveryNSeconds(300) | OnImprovement("val_loss", mode="min")
    keep = LatestN(2) | BestK(3, "val_loss", mode="min")

A step number counts completed epochs: the checkpoint written after epoch index 4 (the
fifth epoch) is step 5, and resuming from it starts at epoch index 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import ConfigError

MODES = ("min", "max")


@dataclass(frozen=True)
class Record:
    """What a policy sees of one step."""

    step: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    time: float = 0.0


@dataclass(frozen=True)
class History:
    """What a save policy may look back on: every earlier step, the saved ones, the start."""

    seen: Sequence[Record] = ()
    saved: Sequence[Record] = ()
    start: float = 0.0
    total: int | None = None
    """Epochs planned, when the loop said (``Checkpointer.epochs(state, total)``)."""


def check_mode(mode: object, owner: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"{owner}: mode must be 'min' or 'max', not {mode!r}")
    return mode  # type: ignore[return-value]


def _check_positive(value: object, name: str, owner: str, *, minimum: float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ConfigError(f"{owner}: {name} must be a number >= {minimum}, not {value!r}")


def _check_metric(metric: object, owner: str) -> None:
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"{owner}: the monitored metric must be a metric name (a string), not {metric!r}")


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


# -- preservation ----------------------------------------------------------------------------
class KeepPolicy:
    """Decides which committed checkpoints survive; the rest are pruned."""

    monitors: tuple[str, ...] = ()

    def should_keep(self, records: Sequence[Record]) -> set[int]:
        """The steps to keep among ``records``."""
        raise NotImplementedError

    def __or__(self, other: object) -> AnyKeep:
        if not isinstance(other, KeepPolicy):
            raise ConfigError(f"cannot combine keep policy {self!r} with {other!r}: `|` joins policies of one kind")
        return AnyKeep(_flatten(self, AnyKeep) + _flatten(other, AnyKeep))


@dataclass(frozen=True)
class KeepAll(KeepPolicy):
    """Never prune."""

    def should_keep(self, records: Sequence[Record]) -> set[int]:
        return {r.step for r in records}


@dataclass(frozen=True)
class LatestN(KeepPolicy):
    """Keep the ``n`` highest steps."""

    n: int = 1

    def __post_init__(self) -> None:
        _check_positive(self.n, "n", "LatestN")

    def should_keep(self, records: Sequence[Record]) -> set[int]:
        return set(sorted(r.step for r in records)[-self.n :])


@dataclass(frozen=True)
class BestK(KeepPolicy):
    """Keep the ``k`` steps with the best ``metric`` (earlier steps win ties; NaN never counts)."""

    k: int = 1
    metric: str = "val_loss"
    mode: str = "min"

    def __post_init__(self) -> None:
        _check_positive(self.k, "k", "BestK")
        _check_metric(self.metric, "BestK")
        check_mode(self.mode, "BestK")
        object.__setattr__(self, "monitors", (self.metric,))

    def should_keep(self, records: Sequence[Record]) -> set[int]:
        scored = [r for r in records if self.metric in r.metrics and not math.isnan(r.metrics[self.metric])]
        sign = 1.0 if self.mode == "min" else -1.0
        scored.sort(key=lambda r: (sign * r.metrics[self.metric], r.step))
        return {r.step for r in scored[: self.k]}


@dataclass(frozen=True)
class AnyKeep(KeepPolicy):
    """Keep a step when any of ``policies`` keeps it."""

    policies: tuple[KeepPolicy, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "monitors", tuple(m for p in self.policies for m in p.monitors))

    def should_keep(self, records: Sequence[Record]) -> set[int]:
        kept: set[int] = set()
        for p in self.policies:
            kept |= p.should_keep(records)
        return kept


def retained(records: Sequence[Record], keep: KeepPolicy | None, protected: set[int] = frozenset()) -> set[int]:
    """The steps that survive pruning: what ``keep`` keeps, plus the protected steps."""
    if keep is None:
        return {r.step for r in records}
    return keep.should_keep(records) | ({r.step for r in records} & set(protected))


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


def _flatten(policy: object, kind: type) -> tuple:
    return tuple(policy.policies) if isinstance(policy, kind) else (policy,)


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
    "retained",
    "EarlyStopping",
    "StopState",
    "is_better",
    "best_of",
]
