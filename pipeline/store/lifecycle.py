"""Which manifests a retention policy keeps: the plan ``gc`` carries out (and ``--dry-run`` prints).

Entries are grouped for a policy as a person would compare them: the stage results of one
stage (ordered by creation, ``step`` 1 = the oldest), and the training checkpoints of one
stage key (ordered by step). Each group gets its stage's policy (:class:`Retention`: a
default and per-stage overrides; no policy keeps everything). Whatever the policy says,
an entry is never dropped when it is

- pinned: it carries a tag (``python -m pipeline tag``);
- the best-so-far record of a search (kind ``best``);
- a result the latest successful run of a flow used (the run records, ``store.runs``);
- the checkpoint a live run resumes from: the newest checkpoint of a stage key that has no
  committed result yet, written by a run that may still be running (no final run record,
  or one that is not failed/crashed/cancelled).

An entry counts as *failed* (what ``FailedRuns`` drops) when the run that wrote it ended
failed, crashed or cancelled — a killed CLI run is recorded crashed by the next run's
liveness sweep — and no successful run used its stage key. Runs the store has no final
record of never count as failed.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigError, PipelineError
from . import layout
from .keep import BestK, FailedRuns, KeepPolicy, LatestN, MaxBytes, OlderThan, Pinned, Record, retained
from .manifest import FORMAT, Manifest
from .objects import leaf_path
from .tree import Leaf, leaves

if TYPE_CHECKING:
    from .store import Store

FAILED = ("failed", "crashed", "cancelled")
SUCCEEDED = "completed"
OPTIONS = ("keep_latest", "keep_best", "older_than", "max_bytes", "failed", "pinned")


@dataclass(frozen=True)
class Retention:
    """The keep policy of every stage: ``default`` unless ``stages`` names the stage."""

    default: KeepPolicy | None = None
    stages: tuple[tuple[str, KeepPolicy | None], ...] = ()

    def __post_init__(self) -> None:
        for where, p in (("default", self.default), *self.stages):
            if p is not None and not isinstance(p, KeepPolicy):
                raise ConfigError(f"retention {where}: {p!r} is not a keep policy (LatestN, BestK, OlderThan…)")

    def policy(self, stage: str) -> KeepPolicy | None:
        return dict(self.stages).get(stage, self.default)

    @property
    def empty(self) -> bool:
        return self.default is None and all(p is None for _, p in self.stages)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[tool.pipeline.retention]") -> Retention:
        """From ``[tool.pipeline.retention]``: options for every stage, ``[… .stages.<stage>]`` overrides."""
        table = {k.replace("-", "_"): v for k, v in table.items()}
        stages = table.pop("stages", {})
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise ConfigError(f"{where}: stages must hold one table per stage ([tool.pipeline.retention.stages.NAME])")
        overrides = tuple(
            (name, policy_of(opts, where.replace("]", f".stages.{name}]", 1))) for name, opts in stages.items()
        )
        return cls(policy_of(table, where), overrides)

    @classmethod
    def configured(cls, start: str | None = None) -> Retention:
        """``[tool.pipeline.retention]`` of the project around ``start`` (the working directory)."""
        from ..config import sub_table

        return cls.from_table(*sub_table("retention", start))


def policy_of(options: Mapping[str, Any], where: str) -> KeepPolicy | None:
    """The policy options name, joined with ``|``: ``keep_latest = N``, ``keep_best = "K:METRIC[:min|max]"``,
    ``older_than = DAYS``, ``max_bytes = SIZE``, ``failed = true``, ``pinned = ["prod"]``. None: no option."""
    parts: list[KeepPolicy] = []
    for name, value in options.items():
        name = name.replace("-", "_")
        if name not in OPTIONS:
            raise ConfigError(f"unknown retention option {name!r} in {where} (known: {', '.join(OPTIONS)})")
        try:
            parts.append(_option(name, value))
        except ConfigError as e:
            raise ConfigError(f"retention option {name} = {value!r} in {where}: {e}") from None
    if not parts:
        return None
    policy = parts[0]
    for p in parts[1:]:
        policy = policy | p
    return policy


def _option(name: str, value: Any) -> KeepPolicy:
    if name == "keep_latest":
        return LatestN(value)
    if name == "keep_best":
        return best_of(value)
    if name == "older_than":
        return OlderThan(value)
    if name == "max_bytes":
        return MaxBytes(value)
    if name == "failed":
        if value is not True:
            raise ConfigError("failed takes true (drop what failed runs left); leave it out otherwise")
        return FailedRuns()
    return Pinned(value)


def best_of(spec: object) -> BestK:
    """``"K:METRIC[:min|max]"`` as a BestK (mode min by default)."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) not in (2, 3) or not parts[0].isdigit():
        raise ConfigError(f"keep-best takes K:METRIC[:min|max] (3:val_loss:min), not {spec!r}")
    return BestK(int(parts[0]), parts[1], parts[2] if len(parts) == 3 else "min")


# -- the plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One manifest and what retention decided about it."""

    manifest: Manifest
    keep: bool
    why: str

    @property
    def stage(self) -> str:
        return self.manifest.stage


@dataclass(frozen=True)
class StageSummary:
    stage: str
    what: str
    """``results``, ``checkpoints`` or ``best`` (a search's best-so-far record)."""
    kept: int
    dropped: int
    freed_bytes: int
    why: str


def what_of(m: Manifest) -> str:
    return "checkpoints" if m.step is not None else "best" if m.kind == "best" else "results"


@dataclass(frozen=True)
class Plan:
    entries: tuple[Entry, ...] = ()
    freed: Mapping[str, int] = field(default_factory=dict)
    """Object path -> bytes of each object only dropped manifests reference."""

    @property
    def dropped(self) -> list[Entry]:
        return [e for e in self.entries if not e.keep]

    def by_stage(self) -> list[StageSummary]:
        """One row per stage and kind of entry; an object freed is counted once, for the first
        dropped entry that references it."""
        owner: dict[str, tuple[str, str]] = {}
        for e in self.dropped:
            for leaf in leaves(e.manifest.outputs):
                owner.setdefault(leaf_path(leaf), (e.stage, what_of(e.manifest)))
        freed: dict[tuple[str, str], int] = {}
        for rel, n in self.freed.items():
            freed[owner[rel]] = freed.get(owner[rel], 0) + n
        groups: dict[tuple[str, str], list[Entry]] = {}
        for e in self.entries:
            groups.setdefault((e.stage, what_of(e.manifest)), []).append(e)
        out = []
        for (stage, what), mine in sorted(groups.items()):
            reasons: dict[str, int] = {}
            for e in mine:
                reasons[e.why] = reasons.get(e.why, 0) + 1
            why = "; ".join(f"{n} {reason}" for reason, n in reasons.items())
            out.append(StageSummary(stage, what, sum(e.keep for e in mine), sum(not e.keep for e in mine),
                                    freed.get((stage, what), 0), why))  # fmt: skip
        return out


@dataclass(frozen=True)
class RunFacts:
    """What the run records say: each run's status, and the stage keys successful runs used."""

    status: Mapping[str, str]
    used_ok: frozenset[tuple[str, str]]
    latest_ok: Mapping[tuple[str, str], str]
    """(stage, key) -> the flow whose latest successful run used it."""
    latest_runs: frozenset[str] = frozenset()
    """The latest successful run of each flow (what they wrote, they used)."""

    @classmethod
    def read(cls, store: Store) -> RunFacts:
        status: dict[str, str] = {}
        used: set[tuple[str, str]] = set()
        latest: dict[str, tuple[float, str, list]] = {}
        for doc in store.runs.summaries():
            run_id, state, stages = doc.get("run_id"), doc.get("status"), doc.get("stages")
            if not isinstance(run_id, str) or not isinstance(stages, list):
                continue
            status[run_id] = str(state)
            if state != SUCCEEDED:
                continue
            pairs = [(e["stage"], e["key"]) for e in stages if isinstance(e, dict) and "stage" in e and "key" in e]
            used.update(pairs)
            flow, finished = str(doc.get("flow")), float(doc.get("finished") or 0.0)
            if flow not in latest or finished > latest[flow][0]:
                latest[flow] = (finished, run_id, pairs)
        latest_ok = {pair: flow for flow, (_, _, pairs) in latest.items() for pair in pairs}
        return cls(status, frozenset(used), latest_ok, frozenset(run for _, run, _ in latest.values()))

    def failed(self, m: Manifest) -> bool:
        return self.status.get(m.run_id) in FAILED and (m.stage, m.key) not in self.used_ok

    def may_run(self, run_id: str) -> bool:
        return self.status.get(run_id) not in (*FAILED, SUCCEEDED)


def plan(store: Store, retention: Retention, now: float | None = None) -> Plan:
    """Decide, for every committed manifest, whether ``retention`` keeps it (see the module docstring)."""
    now = time.time() if now is None else now
    facts = RunFacts.read(store)
    tags = store.tags.by_entry()
    results: dict[str, list[Manifest]] = {}
    checkpoints: dict[tuple[str, str], list[Manifest]] = {}
    other: list[list[Leaf]] = []  # what manifests retention does not judge reference
    for rel, m, _ in store._walk(quarantine=False):
        if m is None or m.format != FORMAT:
            tree = m.outputs if m is not None else store._named_tree(rel)
            other.append(list(leaves(tree)) if tree is not None else [])
        elif m.step is None:
            results.setdefault(m.stage, []).append(m)
        else:
            checkpoints.setdefault((m.stage, m.key), []).append(m)
    committed = {(m.stage, m.key) for ms in results.values() for m in ms}
    entries: list[Entry] = []
    for stage, ms in results.items():
        ms.sort(key=lambda m: (m.created, m.key))
        entries += _decide(store, ms, retention.policy(stage), facts, tags, now, live=None)
    for (stage, key), ms in checkpoints.items():
        ms.sort(key=lambda m: m.step)
        live = ms[-1].step if (stage, key) not in committed and facts.may_run(ms[-1].run_id) else None
        entries += _decide(store, ms, retention.policy(stage), facts, tags, now, live=live)
    survivors = {leaf_path(leaf) for e in entries if e.keep for leaf in leaves(e.manifest.outputs)}
    survivors.update(leaf_path(leaf) for group in other for leaf in group)
    # Freed: object files only. A dropped manifest's carried entries (Manifest.carried_bytes) go
    # with it and are no object file; its records above counted them (Manifest.bytes), this does not.
    freed = {leaf_path(leaf): leaf.bytes for e in entries if not e.keep for leaf in leaves(e.manifest.outputs)
             if leaf_path(leaf) not in survivors}  # fmt: skip
    return Plan(tuple(entries), freed)


def _decide(
    store: Store,
    ms: list[Manifest],
    policy: KeepPolicy | None,
    facts: RunFacts,
    tags: Mapping[tuple[str, str, int | None], frozenset[str]],
    now: float,
    live: int | None,
) -> list[Entry]:
    records = [_record(store, m, i + 1, policy, facts, tags) for i, m in enumerate(ms)]
    kept = retained(records, policy, now=now)
    out = []
    for m, r in zip(ms, records):
        why = _protected(m, r, facts, live)
        keep = why is not None or r.step in kept
        if why is None:
            why = "kept by policy" if keep else f"not kept by {policy.describe()}"  # type: ignore[union-attr]
        out.append(Entry(m, keep, why))
    return out


def _protected(m: Manifest, r: Record, facts: RunFacts, live: int | None) -> str | None:
    if r.tags:
        return f"pinned ({', '.join(sorted(r.tags))})"
    if m.kind == "best":
        return "best so far of a search"
    if m.step is None and ((m.stage, m.key) in facts.latest_ok or m.run_id in facts.latest_runs):
        return "used by the latest successful run"
    if live is not None and m.step == live:
        return "a live run resumes from it"
    return None


def _record(
    store: Store,
    m: Manifest,
    order: int,
    policy: KeepPolicy | None,
    facts: RunFacts,
    tags: Mapping[tuple[str, str, int | None], frozenset[str]],
) -> Record:
    step = order if m.step is None else m.step
    metrics = _metrics(store, m) if policy is not None and policy.monitors else {}
    return Record(step, metrics, _epoch(m.created), m.bytes, tags.get((m.stage, m.key, m.step), frozenset()),
                  facts.failed(m))  # fmt: skip


def _metrics(store: Store, m: Manifest) -> dict[str, float]:
    """The numbers an entry reports: its manifest's ``metrics`` (checkpoints), and the numbers
    at the top of its small JSON outputs (a stage's ``{"accuracy": …}``, a trial's ``value``)."""
    out: dict[str, float] = {}
    for leaf in leaves(m.outputs):
        if leaf.codec != "json" or leaf.bytes > 1 << 20:
            continue
        try:
            value = store.load(leaf)
        except PipelineError:
            continue
        if isinstance(value, dict):
            out.update({k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    metrics = m.extra.get("metrics")
    if isinstance(metrics, dict):
        out.update(metrics)
    return out


def _epoch(created: str) -> float:
    try:
        return dt.datetime.fromisoformat(created).timestamp()
    except ValueError:
        return 0.0  # no creation time: as old as can be


def find_entry(store: Store, ref: str, step: int | None = None) -> Manifest:
    """The stage result whose key starts with ``ref`` (``xxh3:`` optional); with ``step``, that
    key's checkpoint of that step. None found, or several: a PipelineError saying so."""
    key = ref if ref.startswith("xxh3:") else "xxh3:" + ref
    found: dict[tuple[str, str], Manifest] = {}
    for _, m, _ in store._walk(quarantine=False):
        if m is not None and m.format == FORMAT and m.key.startswith(key) and m.step == step:
            found[(m.stage, m.key)] = m
    what = "result" if step is None else f"checkpoint (step {step})"
    if not found:
        raise PipelineError(f"no {what} with key {ref!r} in {store.url} (see `python -m pipeline ls`)")
    if len(found) > 1:
        names = ", ".join(f"{s} {k[5:17]}" for s, k in sorted(found))
        raise PipelineError(f"key prefix {ref!r} is ambiguous ({len(found)} of them: {names}): give more characters")
    return next(iter(found.values()))


def manifest_rel(m: Manifest) -> str:
    return layout.manifest_path(m.stage, m.key, m.step)


__all__ = ["Retention", "Plan", "Entry", "StageSummary", "RunFacts", "plan", "policy_of", "best_of", "find_entry"]
