"""Two stage results (or two runs) side by side: ``python -m pipeline diff A B``.

A and B are result keys (a unique prefix is enough), ``STAGE@N`` (the Nth newest result of a
stage; a bare stage name is ``STAGE@1``), tag names (``python -m pipeline tag``; a tag on one
result), or run ids (then every stage of the two runs is
paired by name and order, and the pairs whose keys differ are compared, after the parameters
the two runs' flows ran with). Rows are params,
metrics, code fingerprints per function, input fingerprints, library versions and sizes; a
:class:`Diff` lists changed rows first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import PipelineError
from .history import RunRecord, find_run, versions
from .store import Manifest, Store
from .store.tree import DictNode, Leaf, leaves
from .tracking import training_record
from .tracking.base import flat

SECTIONS = ("stage", "param", "metric", "code", "input", "version", "size")


@dataclass(frozen=True)
class Row:
    section: str
    """One of :data:`SECTIONS`."""
    name: str
    a: str
    b: str
    informational: bool = False
    """When and by which run it was made, how long it took: shown, never counted as a change."""

    @property
    def changed(self) -> bool:
        return not self.informational and self.a != self.b


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    """What was compared: ``train@2 (xxh3:…)``, ``run 3f2a…``."""
    rows: tuple[Row, ...]

    @property
    def changed(self) -> list[Row]:
        return [r for r in self.rows if r.changed]

    def ordered(self) -> list[Row]:
        """Changed rows first, each group in section order."""
        return self.changed + [r for r in self.rows if not r.changed]

    def to_json(self) -> str:
        rows = [{"section": r.section, "name": r.name, "a": r.a, "b": r.b, "changed": r.changed}
                for r in self.ordered()]  # fmt: skip
        return json.dumps({"a": self.a, "b": self.b, "changed": len(self.changed), "rows": rows}, indent=1)


def resolve(store: Store, ref: str) -> Manifest:
    """The stage result ``ref`` names: a key (prefix), ``STAGE@N``, a stage name (its newest) or a tag."""
    stage, at, n = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if at:
        if not n.isdigit() or int(n) < 1:
            raise PipelineError(f"{ref!r}: STAGE@N takes N >= 1 (1 = the newest result)")
        found = versions(store, stage)
        if not found:
            raise PipelineError(f"no results of stage {stage!r} in {store.url} (see `python -m pipeline ls`)")
        if int(n) > len(found):
            raise PipelineError(f"{ref!r}: stage {stage!r} has {len(found)} result(s) in {store.url}")
        return found[int(n) - 1].manifest
    newest = store.latest(ref)
    if newest is not None:
        return newest
    tagged = _tagged(store, ref)
    if tagged is not None:
        return tagged
    key = ref if ref.startswith("xxh3:") else "xxh3:" + ref
    matches = [m for m in store.manifests() if m.key.startswith(key)]
    if not matches:
        raise PipelineError(f"no result key, STAGE@N, stage, tag or run {ref!r} in {store.url}")
    if len({m.key for m in matches}) > 1:
        raise PipelineError(f"key prefix {ref!r} is ambiguous ({len(matches)} results): give more characters")
    return matches[0]


def _tagged(store: Store, name: str) -> Manifest | None:
    """The stage result tag ``name`` is on (None: no such tag)."""
    results = [t for t in store.tags.named(name) if t.step is None]
    if len(results) > 1:
        names = ", ".join(f"{t.stage} {t.key}" for t in results)
        raise PipelineError(f"tag {name!r} is on {len(results)} results ({names}): name one by key or STAGE@N")
    return store.manifest(results[0].stage, results[0].key) if results else None


def diff(store: Store, a: str, b: str) -> Diff:
    """Compare two results, or two runs when both name runs (see the module docstring)."""
    run_a, run_b = _run_or_none(store, a), _run_or_none(store, b)
    if run_a is not None and run_b is not None:
        return diff_runs(store, run_a, run_b)
    ma, mb = resolve(store, a), resolve(store, b)
    return Diff(_label(a, ma), _label(b, mb), tuple(compare(store, ma, mb)))


def compare(store: Store, a: Manifest, b: Manifest) -> list[Row]:
    """Every component of two results, section by section."""
    rows = [
        Row("stage", "stage", a.stage, b.stage),
        Row("stage", "key", a.key, b.key),
        Row("stage", "created", a.created[:19], b.created[:19], informational=True),
        Row("stage", "run", a.run_id, b.run_id, informational=True),
        Row("stage", "tags", tags_of(store, a), tags_of(store, b), informational=True),
    ]
    rows += _pairs("param", {k: v.get("repr", "") for k, v in a.params.items()},
                   {k: v.get("repr", "") for k, v in b.params.items()})  # fmt: skip
    rows += _pairs("metric", numbers(metrics_of(store, a)), numbers(metrics_of(store, b)))
    rows += _pairs("code", code_rows(a), code_rows(b))
    rows += _pairs("input", a.inputs, b.inputs)
    rows += _pairs("version", a.versions, b.versions)
    rows += [
        Row("size", "bytes", str(a.bytes), str(b.bytes)),
        Row("size", "objects", str(_count(a)), str(_count(b))),
        Row("size", "compute seconds", f"{a.compute_seconds:.3f}", f"{b.compute_seconds:.3f}", informational=True),
    ]
    return rows


def diff_runs(store: Store, a: RunRecord, b: RunRecord) -> Diff:
    """Two runs stage by stage (paired by name and order of calls): keys and hit/miss, then
    the changed components of every pair whose keys differ."""
    rows = [Row("stage", "status", a.status, b.status, informational=True)]
    rows += _pairs("param", run_params_flat(a), run_params_flat(b))  # what the flows ran with
    pairs = _pair_stages(a, b)
    for name, sa, sb in pairs:
        rows.append(Row("stage", name, _key(sa), _key(sb)))
        rows.append(Row("stage", f"{name}: result", _result(sa), _result(sb), informational=True))
    for name, sa, sb in pairs:
        if sa is None or sb is None or sa.key == sb.key:
            continue
        ma, mb = store.manifest(sa.stage, sa.key), store.manifest(sb.stage, sb.key)
        if ma is None or mb is None:
            continue
        for r in compare(store, ma, mb):
            if r.changed and r.section != "stage":
                rows.append(Row(r.section, f"{name}: {r.name}", r.a, r.b))
    return Diff(f"run {a.run_id}", f"run {b.run_id}", tuple(rows))


def run_params_flat(run: RunRecord) -> dict[str, str]:
    """A run's parameters as dotted names (``train.seed``) and their values' reprs."""
    return {k: repr(v) for k, v in flat(run.params).items()}


def metrics_of(store: Store, m: Manifest) -> dict[str, Any]:
    """The numbers a result reports: a training stage's final epoch metrics, and numbers in
    its small JSON outputs (``{"accuracy": 0.97}``, a ``history`` list's last entry)."""
    out: dict[str, Any] = {}
    record = training_record(store, m.stage, m.key)
    if record is not None:
        out.update(record.final_metrics)
    tree = m.outputs
    parts = tree.entries if isinstance(tree, DictNode) else (("", tree),)
    for name, leaf in parts:
        if not isinstance(leaf, Leaf) or leaf.codec != "json":
            continue
        try:
            value = store.load(leaf)
        except Exception:  # an unreadable object: no metrics from it (verify reports it)
            continue
        if isinstance(value, list) and value and isinstance(value[-1], dict):
            value = value[-1]
        if isinstance(value, dict):
            out.update({f"{name}.{k}" if name else k: v for k, v in value.items()})
        elif name:
            out[name] = value
    return out


def _count(m: Manifest) -> int:
    return sum(1 for _ in leaves(m.outputs))


def numbers(values: dict[str, Any]) -> dict[str, str]:
    return {k: f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip


def code_rows(m: Manifest) -> dict[str, str]:
    """A manifest's typed code components, one row each: a function's or class's code by its
    qualified name, anything else (global, package, closure...) as ``kind name``."""
    return {c.name if c.kind == "code" else f"{c.kind} {c.name}": c.digest for c in m.code_components}


def _pairs(section: str, a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    return [Row(section, k, str(a.get(k, "")), str(b.get(k, ""))) for k in sorted(set(a) | set(b))]


def _pair_stages(a: RunRecord, b: RunRecord) -> list[tuple[str, Any, Any]]:
    def numbered(run: RunRecord) -> dict[str, Any]:
        seen: dict[str, int] = {}
        out = {}
        for s in run.stages:
            seen[s.stage] = seen.get(s.stage, 0) + 1
            out[s.stage if seen[s.stage] == 1 else f"{s.stage}#{seen[s.stage]}"] = s
        return out

    na, nb = numbered(a), numbered(b)
    names = list(dict.fromkeys([*na, *nb]))
    return [(n, na.get(n), nb.get(n)) for n in names]


def _key(s: Any) -> str:
    return "–" if s is None else s.key


def _result(s: Any) -> str:
    return "–" if s is None else "hit" if s.hit else "miss"


def _run_or_none(store: Store, ref: str) -> RunRecord | None:
    if "@" in ref or store.latest(ref) is not None or store.tags.named(ref):
        return None
    try:
        return find_run(store, ref)
    except PipelineError:
        return None


def _label(ref: str, m: Manifest) -> str:
    return f"{ref} = {m.stage} {m.key}"


def tags_of(store: Store, m: Manifest) -> str:
    """The tags of a result, comma-separated ("" when it has none)."""
    return ", ".join(sorted(store.tags.of(m.stage, m.key, m.step)))


__all__ = [
    "Diff",
    "Row",
    "SECTIONS",
    "diff",
    "diff_runs",
    "compare",
    "resolve",
    "metrics_of",
    "numbers",
    "code_rows",
    "tags_of",
]
