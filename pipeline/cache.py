"""StageCache: derive a stage's key, serve it from the store, or run, persist and commit.

key = :func:`pipeline.keys.stage_key`: xxh3_128 of ``["stage/3", name, code fingerprint,
sorted((argument, content fingerprint))]``. Arguments are hashed by *content*, so an
upstream stage whose code changed but whose output did not leaves this stage a hit.
Small plain arguments (numbers, strings, short lists of them) are *params*: the manifest
keeps their value so ``explain`` can say ``param lr: 0.1 -> 0.01``; everything else is an
*input*, recorded by fingerprint only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import inspect
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from . import context, keys, lazy
from .context import Force, RunningStage, current_stage
from .errors import PipelineError, StoreError
from .fingerprint import Component, fingerprint
from .fingerprint.component import CLOSURE, CODE, DEFAULTS, GLOBAL, PACKAGE, PINNED, STATE
from .store import Manifest, Store
from .store.manifest import library_versions
from .store.pending import NO_SNAPSHOT, Pending, commits, snapshot
from .store.tree import Tree, nodes

R = TypeVar("R")


KEY_VERSION = keys.STAGE
_PLAIN = (type(None), bool, int, float, str)
_REPR_MAX = 80
_EXPLAIN_CANDIDATES = 64


@dataclass(frozen=True)
class StageKey:
    """Every component of a stage key, as recorded in its manifest."""

    stage: str
    key: str
    code: str
    code_components: tuple[Component, ...]
    params: dict[str, dict[str, str]]
    inputs: dict[str, str]


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One call of a cached stage: its value, whether it was a hit, and its manifest."""

    value: R
    hit: bool
    manifest: Manifest | None
    """None while the commit of a computed result is in flight (``pending``)."""
    seconds: float
    pending: Pending | None = None
    """The background commit of a computed result (see :meth:`CachedStage.defer_commits`)."""


@dataclass(frozen=True)
class Explanation:
    """Would a call hit, and if not, what changed since the stage's newest manifest."""

    stage: str
    key: str
    hit: bool
    reasons: tuple[str, ...]
    previous: Manifest | None

    def __str__(self) -> str:
        if self.hit:
            return f"{self.stage}: cached ({self.key})"
        return f"{self.stage}: stale: " + "; ".join(self.reasons)


def _key_fingerprints(key: StageKey) -> list[str]:
    return [*key.inputs.values(), *(p["fingerprint"] for p in key.params.values())]


def _output_fingerprints(manifest: Manifest) -> list[str]:
    return [node.fingerprint for node in nodes(manifest.outputs) if node.fingerprint is not None]


@contextlib.contextmanager
def forcing(stages: Iterable[str]) -> Iterator[Force]:
    """Within this block the named stages (``"*"``: all) and their dependants recompute."""
    with context.run_context(force=Force.of(stages)) as ctx:
        yield ctx.force


def _fingerprint_of(value: Any, name: str) -> str:
    """A value's fingerprint; a dry-run placeholder brings the one its manifest recorded."""
    if getattr(type(value), "__pipeline_fingerprint__", None) is not None:
        fp = value.__pipeline_fingerprint__
        if fp is None:
            raise PipelineError(f"{name} is the output of a stale stage: its content is unknown until it runs")
        return fp
    return fingerprint(value, name=name)


def _is_param(v: Any) -> bool:
    if type(v) in _PLAIN:
        return len(v) <= _REPR_MAX if isinstance(v, str) else True
    if type(v) in (list, tuple) and len(v) <= 16:
        return all(type(x) in _PLAIN for x in v)
    if type(v) is dict and len(v) <= 16:
        return all(type(k) is str and type(x) in _PLAIN for k, x in v.items())
    return False


def _short_repr(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _fingerprint_or_none(value: Any, name: str) -> str | None:
    """As ``Store.save`` records it: None for a value that cannot be fingerprinted."""
    try:
        return fingerprint(value, name=name)
    except PipelineError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class StageCache:
    """Serves stage results from a :class:`Store` while their key is unchanged."""

    def __init__(self, store: Store | str | None = None, *, run_id: str | None = None) -> None:
        """``store`` defaults to the run context's (:func:`pipeline.context.current_store`),
        ``run_id`` to the context's run id, else a fresh one."""
        self.store = context.current_store() if store is None else context.open_store(store)
        self.run_id = run_id or context.current().run_id or uuid.uuid4().hex

    def wrap(
        self,
        func: Callable[..., R],
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] = (),
    ) -> CachedStage[R]:
        """A callable that behaves like ``func`` but is served from the store on a hit.

        ``version`` pins the code part of the key by hand; ``ignore`` names arguments that
        are left out of the key (clients, loggers, progress callbacks)."""
        return CachedStage(self, func, name=name, version=version, ignore=ignore)


class CachedStage(Generic[R]):
    """``func`` wrapped by a StageCache. Call it, or ``explain`` / ``key`` without running."""

    def __init__(
        self,
        cache: StageCache,
        func: Callable[..., R],
        *,
        name: str | None,
        version: str | None,
        ignore: Iterable[str],
    ) -> None:
        self.cache = cache
        self.func = func
        self.name = name or func.__name__
        self.version = version
        self.ignore = frozenset(ignore)
        self.signature = inspect.signature(func)
        self.commit_group: str | None = None
        unknown = self.ignore - set(self.signature.parameters)
        if unknown:
            raise PipelineError(
                f"stage {self.name!r}: ignore={sorted(unknown)} names no argument of {func.__qualname__}"
            )
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<stage {self.name!r} of {self.cache.store.url}>"

    def defer_commits(self, group: str) -> CachedStage[R]:
        """Commit computed results in the background under ``group`` (a flow run) when the
        process has that group open (:mod:`pipeline.store.pending`): the call returns once
        the value is computed and fingerprinted; its objects and manifest are written while
        the caller goes on, and whoever opened the group joins it. A result that cannot be
        snapshotted without a copy (models, arrays, other objects), and a forced one, still
        commit before the call returns."""
        self.commit_group = group if commits().accepts(group) else None
        return self

    # -- the key ---------------------------------------------------------------------
    def key(self, *args: Any, **kwargs: Any) -> StageKey:
        """Compute the stage key of a call without running anything."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"stage {self.name!r}: {e}") from None
        bound.apply_defaults()
        params: dict[str, dict[str, str]] = {}
        inputs: dict[str, str] = {}
        for arg, value in self._flat_arguments(bound):
            if arg.partition("[")[0] in self.ignore:
                continue
            if not lazy.is_lazy(value):  # a lazy output inside a list/dict: keyed by its content
                value = lazy.materialize(value)
            fp = _fingerprint_of(value, f"argument {arg!r} of stage {self.name!r}")
            if _is_param(value):
                params[arg] = {"fingerprint": fp, "repr": _short_repr(value)}
            else:
                inputs[arg] = fp
        code = keys.code_key(self.func, self.version)
        arguments = {**{k: v["fingerprint"] for k, v in params.items()}, **inputs}
        key = keys.stage_key(self.name, code.digest, arguments)
        return StageKey(self.name, key, code.digest, code.components, params, inputs)

    def _flat_arguments(self, bound: inspect.BoundArguments) -> Iterator[tuple[str, Any]]:
        """Arguments by name; each item of ``*args`` / ``**kwargs`` as an argument of its own."""
        for arg, value in bound.arguments.items():
            kind = self.signature.parameters[arg].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                yield from ((f"{arg}[{i}]", v) for i, v in enumerate(value))
            elif kind is inspect.Parameter.VAR_KEYWORD:
                yield from ((f"{arg}[{k!r}]", v) for k, v in value.items())
            else:
                yield arg, value

    def param_changes(self, previous: Manifest, *args: Any, **kwargs: Any) -> list[str]:
        """How this call's plain params differ from ``previous`` (other arguments ignored)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        reasons = []
        for arg, value in self._flat_arguments(bound):
            old = previous.params.get(arg)
            if arg.partition("[")[0] in self.ignore or not _is_param(value) or old is None:
                continue
            if fingerprint(value) != old["fingerprint"]:
                reasons.append(f"param {arg}: {old['repr']} -> {_short_repr(value)}")
        return reasons

    # -- running ---------------------------------------------------------------------
    def lookup(self, key: StageKey, recompute: Callable[[], Any] | None = None) -> tuple[Manifest, Any] | None:
        """The committed result of ``key``, served lazily (:mod:`pipeline.lazy`); None on a miss.

        Nothing but small JSON leaves is read here: each other leaf is read and verified
        when first used. ``recompute`` runs the stage again should a leaf then turn out
        corrupt or missing. An unreadable JSON leaf is a miss (with a warning), never wrong data."""
        store = self.cache.store
        manifest = store.manifest(self.name, key.key)
        if manifest is None:
            return None
        again = None if recompute is None else lazy.Recompute(self.name, recompute)
        try:
            classes, modules = manifest.extra.get(lazy.CLASSES), manifest.extra.get(lazy.MODULES)
            served = lazy.serve(store, manifest.outputs, self.name, again, classes, modules=modules)
            return manifest, self.join_result(manifest, served)
        except Exception as e:  # corrupt, missing or undecodable: recompute
            warnings.warn(f"stage {self.name!r}: cached result unusable ({e}); recomputing", stacklevel=3)
            return None

    def split_result(self, value: Any) -> tuple[Any, dict[str, Any]]:
        """What of a result is saved as objects, and what its manifest's ``extra`` carries
        (small JSON: no object, no file of its own); :meth:`join_result` puts them together."""
        return value, {}

    def join_result(self, manifest: Manifest, served: Any) -> Any:
        """The result as the stage returned it, from its manifest and its served objects."""
        return served

    def save(self, key: StageKey, value: Any, compute_seconds: float) -> Manifest:
        """Persist ``value`` as the result of ``key`` and commit its manifest."""
        t0 = time.perf_counter()
        saved, extra = self.split_result(value)
        outputs = self.cache.store.save(saved, what=f"the output of stage {self.name!r}")
        return self._commit_outputs(key, saved, extra, outputs, compute_seconds, t0)

    def _commit_outputs(
        self, key: StageKey, saved: Any, extra: dict[str, Any], outputs: Tree, compute_seconds: float, t0: float
    ) -> Manifest:
        """Commit the manifest of a result whose objects (``outputs``, written from ``saved``)
        are in the store: from here on the result exists."""
        manifest = Manifest(
            stage=self.name,
            key=key.key,
            outputs=outputs,
            code=key.code,
            code_components=key.code_components,
            params=key.params,
            inputs=key.inputs,
            created=_now(),
            run_id=self.cache.run_id,
            compute_seconds=round(compute_seconds, 6),
            save_seconds=round(time.perf_counter() - t0, 6),
            versions=library_versions(),
            extra={
                lazy.CLASSES: lazy.classes_of(saved, outputs),
                lazy.MODULES: lazy.modules_of(saved, outputs),
                **extra,
            },
        )
        return self.cache.store.commit(manifest, value=saved)

    def call(self, *args: Any, **kwargs: Any) -> Outcome[R]:
        """Run (or serve) the stage and say how it went. A hit's value is lazy: it is read
        when used (:mod:`pipeline.lazy`); a miss reads its lazy arguments and computes."""
        t0 = time.perf_counter()
        key = self.key(*args, **kwargs)
        commits().wait_for((self.name, key.key))  # the same key committing in the background: read it
        ctx = context.current()
        force = ctx.force
        forced = force is not None and force.applies(key.stage, _key_fingerprints(key))
        recompute = lambda: self._compute(ctx, key, False, args, kwargs)[0]  # noqa: E731
        found = None if forced else self.lookup(key, recompute)
        lease = None
        if found is None and not forced and (leasing := ctx.leasing()).enabled:  # one computes, the others load
            leases = self.cache.store.leases
            found, lease = leases.acquire_or_wait(self.name, key.key, leasing, lambda: self.lookup(key, recompute))
        if found is not None:
            manifest, value = found
            return Outcome(value, True, manifest, time.perf_counter() - t0)
        manifest: Manifest | Pending | None = None
        try:
            value, manifest = self._compute(ctx, key, forced, args, kwargs)
        finally:
            if lease is not None and isinstance(manifest, Pending):
                manifest.when_done(lease.release)  # held until its background commit has landed
            elif lease is not None:
                self.release_lease(lease)
        if isinstance(manifest, Pending):
            return Outcome(value, False, None, time.perf_counter() - t0, pending=manifest)
        return Outcome(value, False, manifest, time.perf_counter() - t0)

    def release_lease(self, lease: Any) -> None:
        """Release the lease a miss was computed under, its result committed (a subclass whose
        :meth:`save` hands the commit to a background thread holds it until that lands)."""
        lease.release()

    def _compute(
        self,
        ctx: context.RunContext,
        key: StageKey,
        forced: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, Manifest | Pending]:
        """Run the function on the real values of its arguments, persist and commit (or hand
        the commit to the background: see :meth:`defer_commits`)."""
        args, kwargs = lazy.materialize(args), lazy.materialize(kwargs)
        t1 = time.perf_counter()
        force = ctx.force
        running = RunningStage(self.cache.store, self.name, key.key, self.cache.run_id, forced=forced)
        # A forced stage computes from scratch: every stage its body calls recomputes too.
        with context.activate(ctx.replace(stage=running, force=force.everything() if forced else force)):
            # A body that returns a lazy hit (of a stage it calls) saves the value, not a reference.
            value = lazy.materialize(self.func(*args, **kwargs))
        seconds = time.perf_counter() - t1
        if self.commit_group is not None and not forced:
            frozen = snapshot(value)
            if frozen is not NO_SNAPSHOT:
                what = f"the result of stage {self.name!r} ({key.key})"
                expected = _fingerprint_or_none(self.split_result(frozen)[0], what)  # as returned
                job = functools.partial(self._commit_snapshot, key, frozen, expected, seconds)
                return value, commits().submit(self.commit_group, (self.name, key.key), what, job)
        manifest = self.save(key, value, seconds)  # replaces a forced key's old result
        if forced:
            force.taint(_output_fingerprints(manifest))
        return value, manifest

    def _commit_snapshot(self, key: StageKey, frozen: Any, expected: str | None, seconds: float) -> Manifest:
        """The background half of a deferred miss: persist, check what was written, commit."""
        t0 = time.perf_counter()
        saved, extra = self.split_result(frozen)
        outputs = self.cache.store.save(saved, what=f"the output of stage {self.name!r}")
        if outputs.fingerprint != expected:  # what was written is not what the stage returned
            raise StoreError(
                f"the output of stage {self.name!r} changed after the stage returned, while it was being "
                "written (it shares memory with an array written to since): not cached"
            )
        return self._commit_outputs(key, saved, extra, outputs, seconds, t0)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.call(*args, **kwargs).value

    # -- explaining ------------------------------------------------------------------
    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """Whether this call would hit and, if not, what changed since the newest manifest."""
        key = self.key(*args, **kwargs)
        store = self.cache.store
        current = store.manifest(self.name, key.key)
        if current is not None:
            if not store.missing(current.outputs):
                return Explanation(self.name, key.key, True, (), current)
            return Explanation(self.name, key.key, False, ("cached result has missing objects",), current)
        # Compare with the closest earlier result: a stage called several times per run
        # (one call per trial, say) has several current results, not one "latest".
        recent = sorted(store.manifests(self.name), key=lambda m: m.created, reverse=True)[:_EXPLAIN_CANDIDATES]
        if not recent:
            return Explanation(self.name, key.key, False, (f"no result of stage {self.name!r} in the store yet",), None)
        diffs = [(diff_key(m, key), m) for m in recent]
        reasons, previous = min(diffs, key=lambda d: len(d[0]))
        return Explanation(self.name, key.key, False, tuple(reasons or ["key format changed"]), previous)


def diff_key(previous: Manifest, key: StageKey) -> list[str]:
    """Human-readable differences between a manifest's key components and a new key."""
    reasons: list[str] = []
    if previous.code != key.code:
        reasons.extend(_code_changes(previous.code_components, key.code_components) or ["code changed"])
    for name in sorted(set(previous.params) | set(key.params)):
        a, b = previous.params.get(name), key.params.get(name)
        if a is not None and b is not None and a["fingerprint"] != b["fingerprint"]:
            reasons.append(f"param {name}: {a['repr']} -> {b['repr']}")
        elif a is None and b is not None:
            reasons.append(f"param {name} added: {b['repr']}")
        elif b is None and a is not None and name not in key.inputs:
            reasons.append(f"param {name} removed (was {a['repr']})")
    for name in sorted(set(previous.inputs) | set(key.inputs)):
        a, b = previous.inputs.get(name), key.inputs.get(name)
        if a is not None and b is not None and a != b:
            reasons.append(f"input {name}: content changed")
        elif a is None and b is not None:
            reasons.append(f"input {name} added" if name not in previous.params else f"input {name}: content changed")
        elif b is None and a is not None and name not in key.params:
            reasons.append(f"input {name} removed")
    return reasons


_WHAT = {CODE: "code of", DEFAULTS: "defaults of", CLOSURE: "closure", GLOBAL: "global", STATE: "state"}


def _code_changes(old: Iterable[Component], new: Iterable[Component]) -> list[str]:
    """What differs between two sets of code components, one line per component."""
    a = {(c.kind, c.name): c.digest for c in old}
    b = {(c.kind, c.name): c.digest for c in new}
    reasons = []
    for kind, name in sorted(set(a) | set(b)):
        before, after = a.get((kind, name)), b.get((kind, name))
        if before == after:
            continue
        if kind == PACKAGE:
            reasons.append(f"package {name}: {before or 'unused'} -> {after or 'unused'}")
        elif kind == PINNED:
            reasons.append(f"version: {before or 'none'} -> {after or 'none'}")
        elif kind == CODE and before is None:
            reasons.append(f"code now uses {name}")
        elif kind == CODE and after is None:
            reasons.append(f"code no longer uses {name}")
        else:
            change = "changed" if before and after else ("added" if after else "removed")
            reasons.append(f"{_WHAT.get(kind, kind)} {name} {change}")
    return reasons


__all__ = [
    "current_stage",
    "RunningStage",
    "forcing",
    "Force",
    "StageCache",
    "CachedStage",
    "StageKey",
    "Outcome",
    "Explanation",
    "diff_key",
]
