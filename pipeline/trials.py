"""The typed values of a search (:mod:`pipeline.tuning`): how its trials checkpoint, what a
trial left behind, the best so far, the result, and which search a question is about."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError
from .training.content import Content, Full, check_content
from .training.policies import EarlyStopping, EveryNEpochs, KeepPolicy, LatestN, SavePolicy, SkipFinal
from .training.writer import Background, WritePolicy, check_writer

TRIAL_STATES = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class TrialCheckpointing:
    """How each trial checkpoints its epochs, so an interrupted trial resumes mid-training.

    ``save``, ``keep``, ``content`` and ``writer`` are the Checkpointer's policies; the
    checkpoint after a trial's last epoch is always skipped (``SkipFinal``): the trial's
    result, committed right after, supersedes it. ``durable=False`` (the default) writes
    epoch checkpoints without fsync: a power cut can tear only those, which restore detects
    and skips, while trial results and the best-so-far record are fsynced either way.

    None of this is part of a trial's key: change it and finished trials are still served.
    """

    save: SavePolicy = EveryNEpochs(1)
    keep: KeepPolicy | None = LatestN(2)
    content: Content = Full()
    writer: WritePolicy = Background()
    durable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.save, SavePolicy):
            raise ConfigError(f"TrialCheckpointing(save=) takes a save policy (EveryNEpochs…), not {self.save!r}")
        if self.keep is not None and not isinstance(self.keep, KeepPolicy):
            raise ConfigError(f"TrialCheckpointing(keep=) takes a keep policy (LatestN…) or None, not {self.keep!r}")
        check_content(self.content)
        check_writer(self.writer)
        if not isinstance(self.durable, bool):
            raise ConfigError(f"TrialCheckpointing(durable=) takes True or False, not {self.durable!r}")

    def options(self, early_stopping: EarlyStopping | None) -> dict[str, Any]:
        """The Checkpointer arguments of one trial."""
        save = self.save if isinstance(self.save, SkipFinal) else SkipFinal(self.save)
        return {"save": save, "keep": self.keep, "content": self.content, "writer": self.writer,
                "early_stopping": early_stopping}  # fmt: skip


@dataclass(frozen=True)
class TrialFacts:
    """What a trial stage commits besides the model: carried in the trial manifest's ``extra``
    (stores written before that hold it as one small JSON object beside the model)."""

    state: str
    """One of ``TRIAL_STATES``."""
    value: float | None
    params: dict[str, Any]
    reason: str = ""
    intermediate: dict[int, float] = field(default_factory=dict)
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "value": self.value, "reason": self.reason,
                "intermediate": {str(k): v for k, v in self.intermediate.items()}, "resumed": self.resumed,
                "params": dict(self.params)}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrialFacts:
        """Parse a stored record; KeyError / ValueError / TypeError when it is not one."""
        state = doc["state"]
        if state not in TRIAL_STATES:
            raise ValueError(f"not a trial state: {state!r}")
        params = doc["params"]
        if not isinstance(params, dict):
            raise TypeError(f"trial params must be a dict, not {type(params).__name__}")
        value = doc.get("value")
        return cls(
            state=state,
            value=None if value is None else float(value),
            params=dict(params),
            reason=str(doc.get("reason", "")),
            intermediate={int(k): float(v) for k, v in dict(doc.get("intermediate", {})).items()},
            resumed=bool(doc.get("resumed", False)),
        )


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    """"complete", "pruned" or "failed"."""
    source: str
    """"done" (trained in this run), "cached" (replayed from the store) or "resumed"."""
    reason: str = ""
    intermediate: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class SearchRef:
    """Which search an answer is about, and why that one."""

    name: str
    key: str
    why: str
    """E.g. ``"used by the latest run 3f2a…"``, ``"named by key"``, ``"the newest search"``."""
    run_id: str | None = None
    index: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    """The search's trial table as its last run left it (None: none was written)."""

    def describe(self) -> str:
        return f"search {self.name} {self.key} ({self.why})"


@dataclass(frozen=True)
class Best:
    """The best finished trial of a search."""

    params: dict[str, Any]
    value: float
    trial: int
    model: Any = field(default=None, repr=False, compare=False)
    tree: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    """The trial's committed result tree (the best-so-far record points at its objects)."""
    search: SearchRef | None = None
    """Which search it is the best of (set by ``load_best``)."""


@dataclass(frozen=True)
class SearchResult:
    """What :meth:`pipeline.tuning.Search.run` returns."""

    name: str
    key: str
    """The search key: name, space, sampler, seed, direction, training code and data, monitor
    and early stopping (not the budget or how trials checkpoint)."""
    best: Best
    trials: list[TrialRecord]
    study: Any = field(repr=False, compare=False)

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best.params

    @property
    def best_value(self) -> float:
        return self.best.value

    @property
    def best_model(self) -> Any:
        return self.best.model

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: number, params, value, state, source."""
        return [
            {"trial": t.number, **t.params, "value": t.value, "state": t.state, "source": t.source} for t in self.trials
        ]


TuneResult = SearchResult  # the 0.1 name

__all__ = ["TrialCheckpointing", "TrialFacts", "TrialRecord", "SearchRef", "Best", "SearchResult", "TuneResult"]
