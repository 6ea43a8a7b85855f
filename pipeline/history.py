"""What happened: past runs, the versions of a stage, and the training runs of a run.

``runs(store)`` lists run records newest first (a killed run, which has stage events but no
summary, is listed as ``incomplete``); ``find_run(store, "3f2a")`` takes an id or a unique
prefix; ``versions(store, "train")`` is every result of a stage, newest first, each with what
changed from the closest older one; ``training_of(store, run)`` finds the training stages of a
run (stage keys with checkpoints) as :class:`~pipeline.tracking.TrainingResult` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cache import StageKey, diff_key
from .errors import PipelineError
from .runs import events, trial_events
from .store import Manifest, Store
from .tracking import TrainingResult, training_record


@dataclass(frozen=True)
class StageRun:
    """One stage call of a run: hit or miss, wall seconds, and what a hit saved."""

    stage: str
    key: str
    hit: bool
    seconds: float
    compute_seconds: float
    bytes: int
    time: float
    """When the call ended (epoch seconds)."""

    @property
    def started(self) -> float:
        return self.time - self.seconds

    @property
    def saved(self) -> float:
        """Seconds a hit saved: the recorded compute time less the time serving it took."""
        return max(0.0, self.compute_seconds - self.seconds) if self.hit else 0.0

    @classmethod
    def of(cls, e: dict[str, Any]) -> StageRun:
        return cls(e["stage"], e["key"], bool(e["hit"]), float(e["seconds"]), float(e.get("compute_seconds", 0.0)),
                   int(e.get("bytes", 0)), float(e["time"]))  # fmt: skip


@dataclass(frozen=True)
class RunRecord:
    """A pipeline run: its stage calls in the order they finished, and its trials."""

    run_id: str
    status: str
    """``completed``, ``failed``… as the run summary says; ``incomplete`` without a summary."""
    wall_seconds: float
    stages: tuple[StageRun, ...]
    trials: tuple[dict[str, Any], ...] = ()
    seconds_saved: float = 0.0
    """What serving hits saved (the run summary's figure; summed from the events without one)."""
    flow: str = ""
    """The flow's reference (``flows.ml_pipeline:ml_pipeline``); empty when the record has none."""
    params: dict[str, Any] = field(default_factory=dict)
    """The arguments the flow ran with (sections of the bundled flow's parameters)."""

    @property
    def started(self) -> float:
        return min((s.started for s in self.stages), default=0.0)

    @property
    def hits(self) -> int:
        return sum(s.hit for s in self.stages)

    @property
    def misses(self) -> int:
        return sum(not s.hit for s in self.stages)


def runs(store: Store) -> list[RunRecord]:
    """Every run the store has a record of, newest first."""
    found = [_read(store, run_id, summary) for run_id, summary in _run_files(store).items()]
    return sorted(found, key=lambda r: r.started, reverse=True)


def find_run(store: Store, ref: str | None = None) -> RunRecord:
    """The run ``ref`` names (an id or a unique prefix of one); the newest run without ``ref``."""
    files = _run_files(store)
    if ref is None:
        every = runs(store)
        if not every:
            raise PipelineError(f"no runs recorded in {store.url} yet (run `python -m pipeline run`)")
        return every[0]
    matches = [r for r in files if r == ref] or [r for r in files if r.startswith(ref)]
    if not matches:
        raise PipelineError(f"no run {ref!r} in {store.url} (see `python -m pipeline runs`)")
    if len(matches) > 1:
        raise PipelineError(f"run id prefix {ref!r} is ambiguous ({len(matches)} runs): give more characters")
    return _read(store, matches[0], files[matches[0]])


@dataclass(frozen=True)
class Version:
    """One result of a stage: ``number`` 1 is the newest; ``changes`` say what differs from
    the older version it is closest to (``base``; None for the first one)."""

    number: int
    manifest: Manifest
    changes: tuple[str, ...]
    base: int | None


_CANDIDATES = 64


def versions(store: Store, stage: str) -> list[Version]:
    """Every result of ``stage``, newest first, with the key components that changed.

    A stage called several times per run (one call per split, per trial) has several current
    results: each version is compared with the *closest* older one (fewest differences), not
    merely the previous in time."""
    found = sorted(store.manifests(stage), key=lambda m: m.created, reverse=True)
    out = []
    for i, m in enumerate(found):
        older = found[i + 1 : i + 1 + _CANDIDATES]
        if not older:
            out.append(Version(i + 1, m, (), None))
            continue
        diffs = [(diff_key(o, key_of(m)), i + 2 + j) for j, o in enumerate(older)]
        changes, base = min(diffs, key=lambda d: len(d[0]))
        out.append(Version(i + 1, m, tuple(changes) or ("key format changed",), base))
    return out


def key_of(m: Manifest) -> StageKey:
    """The key components a manifest recorded, as a StageKey."""
    return StageKey(m.stage, m.key, m.code, tuple(m.code_components), dict(m.params), dict(m.inputs))


def training_of(store: Store, run: RunRecord) -> list[TrainingResult]:
    """The training stages of a run (stage calls whose key has checkpoints), in run order.
    Search trials are left out: a committed trial drops its epoch checkpoints."""
    out, seen = [], set()
    for s in run.stages:
        if (s.stage, s.key) in seen or s.stage.endswith(".trial"):
            continue
        seen.add((s.stage, s.key))
        record = training_record(store, s.stage, s.key)
        if record is not None:
            out.append(record)
    return out


def _read(store: Store, run_id: str, summary: dict[str, Any] | None) -> RunRecord:
    if summary is not None:
        evs, trials = summary.get("stages", []), summary.get("trials", [])
        status, wall = str(summary.get("status", "")), float(summary.get("wall_seconds", 0.0))
    else:  # killed before it could write its summary: its events are all there is
        evs, trials = events(store, run_id), trial_events(store, run_id)
        status, wall = "incomplete", 0.0
    stages = tuple(StageRun.of(e) for e in evs)
    saved = summary.get("seconds_saved") if summary is not None else None
    saved = float(saved) if saved is not None else round(sum(s.saved for s in stages), 3)
    flow = str(summary.get("flow") or "") if summary is not None else ""
    params = summary.get("params") if summary is not None else None
    params = params if isinstance(params, dict) else {}
    return RunRecord(run_id, status, wall, stages, tuple(trials), saved, flow, params)


def _run_files(store: Store) -> dict[str, dict[str, Any] | None]:
    """run id -> its summary (None: a run killed before it wrote one has events only)."""
    out: dict[str, dict[str, Any] | None] = dict.fromkeys(store.runs.ids())
    for doc in store.runs.summaries():
        if "run_id" in doc:
            out[str(doc["run_id"])] = doc
    return out


__all__ = ["RunRecord", "StageRun", "Version", "runs", "find_run", "versions", "key_of", "training_of"]
