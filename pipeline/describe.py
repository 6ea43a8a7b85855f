"""One stage result readably: what ``python -m pipeline show KEY`` prints.

:func:`describe` lists a result's facts as ``(section, name, value)`` rows: when and by which
run it was made, its params, the numbers it reports (:func:`pipeline.diff.metrics_of`), the
training metadata of a training stage (epochs, early stop and best epoch, the
surviving checkpoints with sizes, the hyperparameters and seeds, what a checkpoint holds),
its outputs with codec and size, inputs, code fingerprints per function and library
versions. ``show KEY --json`` prints the raw manifest instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from .diff import code_rows, numbers
from .store import Manifest, Store
from .store.tree import DictNode, Leaf, Tree, TupleNode
from .tracking import training_record
from .tracking.base import flat
from .units import size


@dataclass(frozen=True)
class Fact:
    section: str
    name: str
    value: str


def describe(store: Store, m: Manifest) -> list[Fact]:
    """Every fact of result ``m`` (see the module docstring), section by section."""
    facts = [
        Fact("result", "stage", m.stage),
        Fact("result", "key", m.key),
        Fact("result", "created", m.created[:19].replace("T", " ")),
        Fact("result", "run", m.run_id),
        Fact("result", "compute seconds", f"{m.compute_seconds:.3f}"),
        Fact("result", "size", f"{size(m.bytes)} ({m.bytes} bytes)"),
        Fact("result", "tags", ", ".join(sorted(store.tags.of(m.stage, m.key, m.step))) or "none"),
    ]
    facts += [Fact("param", k, p.get("repr", "")) for k, p in m.params.items()]
    facts += _values(store, m)
    facts += _training(store, m)
    facts += [Fact("output", p or "(value)", f"{leaf.codec}, {size(leaf.bytes)}") for p, leaf in _leaves(m.outputs)]
    facts += [Fact("input", k, v) for k, v in sorted(m.inputs.items())]
    facts += [Fact("code", k, v) for k, v in sorted(code_rows(m).items())]
    facts += [Fact("version", k, v) for k, v in sorted(m.versions.items())]
    return facts


def _values(store: Store, m: Manifest) -> list[Fact]:
    """Metrics (a training stage's final epoch; numbers in a small JSON output at its top or
    under a ``metrics`` entry), then everything else small JSON outputs hold (config, seeds,
    versions...), nested entries as dotted names."""
    record = training_record(store, m.stage, m.key)
    metrics = dict(record.final_metrics) if record is not None else {}
    values: dict[str, str] = {}
    for path, value in _small_values(store, m):
        if isinstance(value, list):
            last = value[-1] if value else None
            tail = f"; last: {_short(last)}" if last is not None else ""
            values[path or "(value)"] = f"{len(value)} entries{tail}"
            continue
        for name, v in (flat(value) if isinstance(value, dict) else {"": value}).items():
            full = ".".join(p for p in (path, name) if p) or "(value)"
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            if numeric and (record is None and ("." not in name or "metrics" in name.split("."))):
                metrics.setdefault(full, v)
            elif full not in metrics:
                values[full] = _short(v)
    shown = [Fact("metric", k, v) for k, v in numbers(metrics).items()]
    return shown + [Fact("value", k, v) for k, v in values.items()]


def _small_values(store: Store, m: Manifest) -> Iterator[tuple[str, Any]]:
    """(path, value) of each small JSON output, and of a search trial's facts (which its
    manifest carries: ``pipeline.tuning``)."""
    if isinstance(m.extra.get("trial"), dict) and m.stage.endswith(".trial"):
        yield "record", m.extra["trial"]  # where stores written before held them: a "record" output
    for path, leaf in _leaves(m.outputs):
        if leaf.codec != "json":
            continue
        try:
            yield path, store.load(leaf)
        except Exception:  # an unreadable object: nothing to show from it (verify reports it)
            continue


def _short(v: object, limit: int = 200) -> str:
    text = f"{v:.6g}" if isinstance(v, float) else str(v) if isinstance(v, (str, int)) else repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _training(store: Store, m: Manifest) -> list[Fact]:
    record = training_record(store, m.stage, m.key)
    if record is None:
        return []
    facts = [Fact("training", "epochs", f"{record.epochs}" + (" (stopped early)" if record.stopped else ""))]
    if record.best_step is not None:
        best = next((h for h in record.history if h.get("epoch") == record.best_step), {})
        shown = ", ".join(f"{k} {v:.5g}" for k, v in best.items() if k != "epoch")
        facts.append(Fact("training", "best epoch", f"{record.best_step}" + (f" ({shown})" if shown else "")))
    kept = ", ".join(f"{c.step} ({size(c.bytes)})" for c in record.checkpoints)
    facts.append(Fact("training", "checkpoints", kept or "none survives"))
    newest = record.newest
    if newest is not None and newest.entries:
        facts.append(Fact("training", "state", ", ".join(f"{k}: {v}" for k, v in newest.entries.items())))
    facts += [Fact("hyperparameter", k, repr(v)) for k, v in record.hyperparameters.items()]
    return facts


def _leaves(tree: Tree, path: str = "") -> list[tuple[str, Leaf]]:
    if isinstance(tree, Leaf):
        return [(path, tree)]
    if isinstance(tree, TupleNode):
        return [x for i, t in enumerate(tree.items) for x in _leaves(t, f"{path}[{i}]")]
    if isinstance(tree, DictNode):
        return [x for k, t in tree.entries for x in _leaves(t, f"{path}.{k}" if path else k)]
    return []


__all__ = ["Fact", "describe"]
