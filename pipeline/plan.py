"""Dry runs: walk a flow without loading or recomputing data, to tell each stage's status.

In a dry run a stage call does not execute. Its key is computed from its arguments, where
an upstream result is a :class:`Planned` placeholder carrying the content fingerprint its
manifest recorded, so downstream keys chain through the whole flow. A cached stage returns
placeholders for its outputs (small JSON outputs are loaded for real, so flow code can
branch on them); a stale one returns stale placeholders, and a stage that consumes them "may
rerun" (stale itself if its own params or code changed too). Reasons compare with the results
the stage had in the previous run of the same flow (its run record), not with whichever result
of a same-named stage is newest.
"""

from __future__ import annotations

import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import keys
from .cache import CachedStage, StageKey, diff_key
from .context import current, run_context
from .errors import PipelineError
from .store import Store
from .store.manifest import Manifest
from .store.tree import DictNode, Leaf, Tree, TupleNode

CACHED, STALE, MAY_RERUN = "cached", "stale", "may rerun"


@dataclass(frozen=True)
class StageStatus:
    stage: str
    key: str | None
    state: str
    """"cached", "stale" (its own key changed: it reruns) or "may rerun" (an upstream
    stage reruns; if its output comes out the same, early cutoff serves this one)."""
    reasons: tuple[str, ...] = ()
    seconds: float = 0.0
    """Compute time the cached result saves (or the previous run took, when stale)."""


@dataclass
class Plan:
    statuses: list[StageStatus] = field(default_factory=list)
    previous: dict[str, list[str]] = field(default_factory=dict)
    """Per stage, the keys of its results in the previous run of the flow: what reasons compare with."""

    def state_of(self, stage: str) -> str | None:
        """ "stale" if any call of ``stage`` is, else its planned state (None: not planned)."""
        states = {st.state for st in self.statuses if st.stage == stage}
        return STALE if STALE in states else next(iter(states), None)


class Planned:
    """Stands in for a stage output during a dry run."""

    def __init__(
        self,
        stage: str,
        tree: Tree | None,
        arity: int | None = None,
        known: bool | None = None,
        store: Store | None = None,
    ) -> None:
        self._stage = stage
        self._tree = tree
        self._known = tree is not None if known is None else known  # False: stale, content unknown
        self._arity = arity
        self._store = store  # where small JSON items of a cached output are loaded from

    @property
    def stale(self) -> bool:
        return not self._known

    @property
    def __pipeline_fingerprint__(self) -> str | None:
        return None if self._tree is None else self._tree.fingerprint

    def __getitem__(self, item: Any) -> Any:
        tree = self._tree
        if isinstance(tree, DictNode) and isinstance(item, str) and item in tree:
            return _materialise(self._stage, tree[item], self._store)
        if isinstance(tree, TupleNode) and isinstance(item, int) and -len(tree) <= item < len(tree):
            return _materialise(self._stage, tree[item], self._store)
        return Planned(self._stage, None)  # an item of a single object: can't know it without loading

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self._tree, TupleNode):
            return iter([_materialise(self._stage, t, self._store) for t in self._tree.items])
        if self._arity is None:
            raise PipelineError(
                f"dry run: can't unpack the output of stage {self._stage!r} without running it; "
                "annotate its return type as tuple[...]"
            )
        return iter([Planned(self._stage, None, known=self._known) for _ in range(self._arity)])

    def __repr__(self) -> str:
        return f"<planned output of {self._stage}{' (stale)' if self.stale else ''}>"


_LOAD_FOR_REAL = {"json"}
_CANDIDATES = 64


def _materialise(stage: str, tree: Tree, store: Store | None) -> Any:
    if isinstance(tree, Leaf) and tree.codec in _LOAD_FOR_REAL and store is not None:
        try:
            return store.load(tree)
        except PipelineError:
            return Planned(stage, None)
    return Planned(stage, tree, store=store)


@contextmanager
def dry_run(previous: dict[str, list[str]] | None = None) -> Iterator[Plan]:
    """Within this block, stage calls plan instead of running (the run context's ``plan``).
    ``previous``: per stage, the result keys of the previous run of the flow (see :class:`Plan`)."""
    with run_context(plan=Plan(previous=dict(previous or {}))) as ctx:
        yield ctx.plan


def current_plan() -> Plan | None:
    return current().plan


def _arity(stage: CachedStage[Any], previous: Manifest | None) -> int | None:
    if previous is not None and isinstance(previous.outputs, TupleNode):
        return len(previous.outputs)
    try:
        hint = typing.get_type_hints(stage.func).get("return")
    except Exception:  # unresolvable annotations: no arity
        return None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        return len(args)
    return None


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    for v in (*args, *kwargs.values()):
        if isinstance(v, (list, tuple)):
            yield from v
        yield v


def _candidates(stage: CachedStage[Any], plan: Plan) -> list[Manifest]:
    """What a call is compared with: this stage's results in the previous run of the flow,
    else (no run record) its most recent results."""
    store = stage.cache.store
    found = [m for k in plan.previous.get(stage.name, ()) if (m := store.manifest(stage.name, k)) is not None]
    if found:
        return found
    return sorted(store.manifests(stage.name), key=lambda m: m.created, reverse=True)[:_CANDIDATES]


def _own_changes(stage: CachedStage[Any], previous: Manifest, args: tuple[Any, ...], kwargs: dict[str, Any]):
    """What changed in a call's own params and code since ``previous`` (inputs aside)."""
    reasons = stage.param_changes(previous, *args, **kwargs)
    code = keys.code_key(stage.func, stage.version)
    if code.digest != previous.code:
        same = StageKey(stage.name, "", code.digest, code.components, previous.params, previous.inputs)
        reasons = [*diff_key(previous, same), *reasons]
    return reasons


def plan_call(stage: CachedStage[Any], plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a stage call does in a dry run: record its status, return placeholders."""
    store = stage.cache.store
    upstream = sorted({v._stage for v in _arguments(args, kwargs) if isinstance(v, Planned) and v.stale})
    if upstream:
        diffs = [(_own_changes(stage, m, args, kwargs), m) for m in _candidates(stage, plan)]
        own, previous = min(diffs, key=lambda d: len(d[0]), default=([f"no result of stage {stage.name!r} in the "
                                                                      "store yet"], None))  # fmt: skip
        why = [f"upstream {u} {'changed' if plan.state_of(u) == STALE else 'may change'}" for u in upstream]
        plan.statuses.append(
            StageStatus(
                stage.name,
                None,
                STALE if own else MAY_RERUN,
                (*own, *why),
                previous.compute_seconds if previous else 0.0,
            )
        )
        return Planned(stage.name, None, _arity(stage, previous))
    why = stage.explain(*args, **kwargs)
    if why.hit:
        m = why.previous
        plan.statuses.append(StageStatus(stage.name, why.key, CACHED, (), m.compute_seconds if m else 0.0))
        return _materialise(stage.name, m.outputs, store) if m else Planned(stage.name, None)
    reasons, prev = why.reasons, why.previous
    candidates = _candidates(stage, plan) if stage.name in plan.previous else []
    if candidates and (why.previous is None or why.previous.key != why.key):  # vs the previous run's
        key = stage.key(*args, **kwargs)
        diffs = [(diff_key(m, key), m) for m in candidates]
        found, prev = min(diffs, key=lambda d: len(d[0]))
        reasons = tuple(found or ["key format changed"])
    plan.statuses.append(StageStatus(stage.name, why.key, STALE, reasons, prev.compute_seconds if prev else 0.0))
    return Planned(stage.name, None, _arity(stage, prev))
