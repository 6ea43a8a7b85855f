"""What to keep: small frozen keep policies over the entries of one group, composed with ``|``.

One vocabulary serves both places entries are pruned: a ``Checkpointer(keep=...)`` over the
epoch checkpoints of one stage key, and ``gc`` over the stage results of a stage and the
checkpoints of each stage key (``pipeline.store.retention``)::

    keep = LatestN(2) | BestK(3, "val_loss", mode="min") | Pinned("prod")

A policy sees one :class:`Record` per entry and answers ``should_keep(records, now)``: the
steps to keep. A record's ``step`` orders the entries of a group (the epoch of a checkpoint;
for stage results, the order they were created in: 1 is the oldest). ``|`` keeps what any
member keeps. Every policy keeps entries, so "drop what is older than 30 days" is
``OlderThan(30)`` (it keeps the younger ones) and "drop what failed runs left" is
``FailedRuns()`` (it keeps the others).
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Mapping, Sequence

from ..errors import ConfigError
from ..units import parse_size, size

MODES = ("min", "max")
DAY = 86400.0


@dataclass(frozen=True)
class Record:
    """What a policy sees of one entry (a checkpoint, a stage result)."""

    step: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    time: float = 0.0
    """When it was written (epoch seconds)."""
    bytes: int = 0
    tags: frozenset[str] = frozenset()
    failed: bool = False
    """Written only by runs that failed, crashed or were abandoned (no successful run used it)."""


def check_mode(mode: object, owner: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"{owner}: mode must be 'min' or 'max', not {mode!r}")
    return mode  # type: ignore[return-value]


def check_positive(value: object, name: str, owner: str, *, minimum: float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ConfigError(f"{owner}: {name} must be a number >= {minimum}, not {value!r}")


def check_metric(metric: object, owner: str) -> None:
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"{owner}: the monitored metric must be a metric name (a string), not {metric!r}")


class KeepPolicy:
    """Decides which entries of a group survive; the rest are pruned."""

    monitors: tuple[str, ...] = ()

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        """The steps to keep among ``records`` (``now``: the time age is measured at)."""
        raise NotImplementedError

    def __or__(self, other: object) -> AnyKeep:
        if not isinstance(other, KeepPolicy):
            raise ConfigError(f"cannot combine keep policy {self!r} with {other!r}: `|` joins policies of one kind")
        return AnyKeep(flatten(self, AnyKeep) + flatten(other, AnyKeep))

    def describe(self) -> str:
        """``LatestN(2)``, ``BestK(3, 'val_loss', 'min')``: the policy as one would write it."""
        values = ", ".join(repr(getattr(self, f.name)) for f in fields(self)) if is_dataclass(self) else ""
        return f"{type(self).__name__}({values})"


@dataclass(frozen=True)
class KeepAll(KeepPolicy):
    """Never prune."""

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        return {r.step for r in records}


@dataclass(frozen=True)
class LatestN(KeepPolicy):
    """Keep the ``n`` highest steps (the newest entries)."""

    n: int = 1

    def __post_init__(self) -> None:
        check_positive(self.n, "n", "LatestN")

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        return set(sorted(r.step for r in records)[-self.n :])


@dataclass(frozen=True)
class BestK(KeepPolicy):
    """Keep the ``k`` steps with the best ``metric`` (earlier steps win ties; NaN never counts)."""

    k: int = 1
    metric: str = "val_loss"
    mode: str = "min"

    def __post_init__(self) -> None:
        check_positive(self.k, "k", "BestK")
        check_metric(self.metric, "BestK")
        check_mode(self.mode, "BestK")
        object.__setattr__(self, "monitors", (self.metric,))

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        scored = [r for r in records if _number(r.metrics.get(self.metric)) is not None]
        sign = 1.0 if self.mode == "min" else -1.0
        scored.sort(key=lambda r: (sign * float(r.metrics[self.metric]), r.step))
        return {r.step for r in scored[: self.k]}


@dataclass(frozen=True)
class OlderThan(KeepPolicy):
    """Drop entries older than ``days``: keeps the ones written less than ``days`` ago."""

    days: float = 30.0

    def __post_init__(self) -> None:
        check_positive(self.days, "days", "OlderThan", minimum=0)

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        now = _time.time() if now is None else now
        return {r.step for r in records if now - r.time < self.days * DAY}


@dataclass(frozen=True)
class MaxBytes(KeepPolicy):
    """Keep the newest entries whose bytes add up to at most ``size`` (``10_000_000``, ``"10GB"``).

    Bytes are as each entry's manifest counts them (``Manifest.bytes``: its objects and the entries
    it carries); entries sharing objects count them twice."""

    size: int | str = "10GB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", parse_size(self.size, "MaxBytes: size"))

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        kept, total = set(), 0
        for r in sorted(records, key=lambda r: r.step, reverse=True):
            if total + r.bytes > self.size:  # type: ignore[operator]
                break
            total += r.bytes
            kept.add(r.step)
        return kept

    def describe(self) -> str:
        return f"MaxBytes({size(self.size)})"  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pinned(KeepPolicy):
    """Keep entries tagged with any of ``tags`` (``Pinned("prod")``; ``Pinned()``: any tag)."""

    tags: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        tags = (self.tags,) if isinstance(self.tags, str) else tuple(self.tags)
        if not all(isinstance(t, str) and t for t in tags):
            raise ConfigError(f"Pinned: tags must be tag names (strings), not {self.tags!r}")
        object.__setattr__(self, "tags", tags)

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        return {r.step for r in records if r.tags and (not self.tags or r.tags & set(self.tags))}


@dataclass(frozen=True)
class FailedRuns(KeepPolicy):
    """Drop entries written only by runs that failed, crashed or were abandoned: keeps the others."""

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        return {r.step for r in records if not r.failed}


@dataclass(frozen=True)
class AnyKeep(KeepPolicy):
    """Keep a step when any of ``policies`` keeps it."""

    policies: tuple[KeepPolicy, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "monitors", tuple(m for p in self.policies for m in p.monitors))

    def should_keep(self, records: Sequence[Record], now: float | None = None) -> set[int]:
        kept: set[int] = set()
        for p in self.policies:
            kept |= p.should_keep(records, now)
        return kept

    def describe(self) -> str:
        return " | ".join(p.describe() for p in self.policies)


def retained(
    records: Sequence[Record], keep: KeepPolicy | None, protected: set[int] = frozenset(), now: float | None = None
) -> set[int]:
    """The steps that survive pruning: what ``keep`` keeps, plus the protected steps."""
    if keep is None:
        return {r.step for r in records}
    return keep.should_keep(records, now) | ({r.step for r in records} & set(protected))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def flatten(policy: object, kind: type) -> tuple:
    """The members of ``policy`` when it is a ``kind`` composition (``AnyKeep``…), else itself."""
    return tuple(policy.policies) if isinstance(policy, kind) else (policy,)  # type: ignore[attr-defined]


__all__ = [
    "Record",
    "KeepPolicy",
    "KeepAll",
    "LatestN",
    "BestK",
    "OlderThan",
    "MaxBytes",
    "Pinned",
    "FailedRuns",
    "AnyKeep",
    "retained",
]
