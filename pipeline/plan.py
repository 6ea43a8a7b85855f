"""Dry runs: walk a flow without loading or recomputing data, to tell each stage's status.

In a dry run a stage call does not execute. Its key is computed from its arguments, where
an upstream result is a :class:`Planned` placeholder carrying the content fingerprint its
manifest recorded, so downstream keys chain through the whole flow. A cached stage returns
placeholders for its outputs (small JSON outputs are loaded for real, so flow code can
branch on them); a stale one returns stale placeholders and everything that consumes them
is "stale (upstream)".
"""

from __future__ import annotations

import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .cache import CachedStage
from .context import current, run_context
from .errors import PipelineError
from .store import Store
from .store.manifest import Manifest
from .store.tree import DictNode, Leaf, Tree, TupleNode


@dataclass(frozen=True)
class StageStatus:
    stage: str
    key: str | None
    state: str
    """"cached", "stale" or "stale (upstream)"."""
    reasons: tuple[str, ...] = ()
    seconds: float = 0.0
    """Compute time the cached result saves (or the previous run took, when stale)."""


@dataclass
class Plan:
    statuses: list[StageStatus] = field(default_factory=list)


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


def _materialise(stage: str, tree: Tree, store: Store | None) -> Any:
    if isinstance(tree, Leaf) and tree.codec in _LOAD_FOR_REAL and store is not None:
        try:
            return store.load(tree)
        except PipelineError:
            return Planned(stage, None)
    return Planned(stage, tree, store=store)


@contextmanager
def dry_run() -> Iterator[Plan]:
    """Within this block, stage calls plan instead of running (the run context's ``plan``)."""
    with run_context(plan=Plan()) as ctx:
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


def plan_call(stage: CachedStage[Any], plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a stage call does in a dry run: record its status, return placeholders."""
    store = stage.cache.store
    upstream = sorted({v._stage for v in _arguments(args, kwargs) if isinstance(v, Planned) and v.stale})
    if upstream:
        previous = store.latest(stage.name)
        own = stage.param_changes(previous, *args, **kwargs) if previous else []
        plan.statuses.append(
            StageStatus(
                stage.name,
                None,
                "stale (upstream)",
                (*own, *(f"upstream {u} is stale" for u in upstream)),
                previous.compute_seconds if previous else 0.0,
            )
        )
        return Planned(stage.name, None, _arity(stage, previous))
    why = stage.explain(*args, **kwargs)
    if why.hit:
        m = why.previous
        plan.statuses.append(StageStatus(stage.name, why.key, "cached", (), m.compute_seconds if m else 0.0))
        return _materialise(stage.name, m.outputs, store) if m else Planned(stage.name, None)
    prev = why.previous
    plan.statuses.append(StageStatus(stage.name, why.key, "stale", why.reasons, prev.compute_seconds if prev else 0.0))
    return Planned(stage.name, None, _arity(stage, prev))
