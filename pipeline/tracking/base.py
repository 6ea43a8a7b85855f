"""What a tracking sink sees: a training run (one Checkpointer of one stage key), its epochs,
and at the end its result read back from the store (checkpoints, hyperparameters, history).

A sink is a small object with four hooks (all optional)::

    class PrintSink(Sink):
        name = "print"
        def epoch(self, run, event): print(run.stage, event.epoch, event.metrics)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import Manifest, Store, carried
from ..store.tree import DictNode, Tree
from ..training.catalog import Catalog
from ..training.progress import ProgressEvent

MODEL_KINDS = ("sklearn.estimator", "torch.module")
"""Checkpoint entries that are models (logged as "the model" by sinks that log one)."""


@dataclass(frozen=True)
class TrainingRun:
    """One Checkpointer's training: a stage key in a pipeline run."""

    stage: str
    key: str
    run_id: str = ""
    store: Store | None = None
    resumed_from: int | None = None
    """The checkpoint step training resumed from (None: a fresh start)."""
    total: int | None = None

    @property
    def ident(self) -> tuple[str, str]:
        return self.stage, self.key

    @property
    def short_key(self) -> str:
        return self.key.partition(":")[2][:12] or self.key[:12]


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint of a training run, as the store holds it at the end."""

    step: int
    uri: str
    bytes: int
    """Its objects' bytes and those of the pickled entries its manifest carries (``Manifest.bytes``)."""
    metrics: dict[str, float]
    created: str
    entries: dict[str, str] = field(default_factory=dict)
    """State entry name -> adapter kind (``sklearn.estimator``, ``torch.module``…)."""
    outputs: Tree | None = field(default=None, repr=False)
    """The checkpoint's output tree (objects stay readable after its manifest is pruned, until gc)."""
    carried: dict[str, Any] = field(default_factory=dict, repr=False)
    """The small pickled entries its manifest carries, encoded (``Manifest.carried``; read one with
    ``pipeline.store.carried.read``)."""


@dataclass(frozen=True)
class TrainingResult:
    """A finished training run: every epoch's metrics and the checkpoints that survived."""

    run: TrainingRun
    epochs: int
    stopped: bool
    history: tuple[dict[str, float], ...]
    """``{"epoch": n, metric: value…}`` for every epoch 1..n (restored history included)."""
    hyperparameters: dict[str, Any]
    checkpoints: tuple[CheckpointInfo, ...]
    best_step: int | None = None
    """The early-stopping best epoch (None without early stopping)."""

    @property
    def final_metrics(self) -> dict[str, float]:
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "epoch"}

    @property
    def newest(self) -> CheckpointInfo | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def models(self, step: int) -> dict[str, tuple[str, Any]]:
        """The model entries (``name -> (kind, payload)``) of checkpoint ``step``, read from the store."""
        info = next((c for c in self.checkpoints if c.step == step), None)
        names = [n for n, kind in (info.entries if info else {}).items() if kind in MODEL_KINDS]
        if not names or self.run.store is None:
            return {}
        tree = info.outputs
        if not isinstance(tree, DictNode):
            return {}
        loaded = {n: carried.read(n, info.carried[n]) if n in info.carried else self.run.store.load(tree[n])
                  for n in names if n in tree or n in info.carried}  # fmt: skip
        return {n: (info.entries[n], value) for n, value in loaded.items()}


class Sink:
    """Base of tracking sinks: override the hooks you need. A hook that raises disables its
    sink for the rest of the ``tracking`` block, with one warning; training goes on."""

    name = "sink"
    background = False
    """True: the hooks run on a thread of the sink's own, in order (training only queues them).
    A sink that needs the training thread's context (a Prefect task run) stays False."""

    def start(self, run: TrainingRun) -> None:
        """A training run began (fresh, or resumed from ``run.resumed_from``)."""

    def epoch(self, run: TrainingRun, event: ProgressEvent) -> None:
        """An epoch finished: ``event.epoch`` (1-based), ``event.metrics``, ``event.saved``."""

    def finish(self, result: TrainingResult) -> None:
        """Training finished; every checkpoint write has landed."""

    def abandon(self, run: TrainingRun) -> None:
        """The ``tracking`` block ended while this run had not finished (training raised)."""

    def close(self) -> None:
        """The ``tracking`` block ended."""


def checkpoint_uri(store: Store, stage: str, key: str, step: int) -> str:
    """Where checkpoint ``step``'s manifest lives, as a URI (``file:///…`` for a local store)."""
    rel = Store.manifest_path(stage, key, step)
    if "://" in store.url:
        return f"{store.url.rstrip('/')}/{rel}"
    return f"{Path(store.url).resolve().as_uri()}/{rel}"


def read_result(run: TrainingRun, event: ProgressEvent, seen: list[dict[str, float]]) -> TrainingResult:
    """The result of a finished run: the store's surviving checkpoints, the newest one's
    history and hyperparameters, and the epochs this process saw (``seen``) on top."""
    stored = training_record(run.store, run.stage, run.key, run=run) if run.store is not None else None
    history = {int(h["epoch"]): dict(h) for h in (stored.history if stored else ())}
    history.update({int(h["epoch"]): dict(h) for h in seen})
    return TrainingResult(
        run=run,
        epochs=event.epoch,
        stopped=event.stopped,
        history=tuple(history[k] for k in sorted(history)),
        hyperparameters=dict(event.hyperparameters) or (stored.hyperparameters if stored else {}),
        checkpoints=stored.checkpoints if stored else (),
        best_step=stored.best_step if stored else None,
    )


def training_record(store: Store, stage: str, key: str, *, run: TrainingRun | None = None) -> TrainingResult | None:
    """A training run as the store holds it: its surviving checkpoints, and the newest one's
    history, hyperparameters and early-stopping state. None: no checkpoint of that key."""
    catalog = Catalog(store, stage, key)
    manifests: list[Manifest] = []
    for step in catalog.steps():
        try:
            manifests.append(catalog.read(step))
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"tracking: checkpoint {step} of stage {stage!r} is unreadable ({e})", stacklevel=2)
    if not manifests:
        return None
    newest = manifests[-1].extra
    history = tuple(dict(h) for h in newest.get("history", []))
    stopping = newest.get("early_stopping", {})
    return TrainingResult(
        run=run or TrainingRun(stage, key, manifests[-1].run_id, store),
        epochs=int(history[-1]["epoch"]) if history else int(newest.get("epoch", 0)),
        stopped=bool(stopping.get("stopped", False)),
        history=history,
        hyperparameters=dict(newest.get("hyperparameters", {})),
        checkpoints=tuple(
            CheckpointInfo(
                step=int(m.step or 0),
                uri=checkpoint_uri(store, stage, key, int(m.step or 0)),
                bytes=m.bytes,
                metrics=dict(m.extra.get("metrics", {})),
                created=m.created,
                entries=dict(m.extra.get("entries", {})),
                outputs=m.outputs,
                carried=m.carried,
            )
            for m in manifests
        ),
        best_step=stopping.get("best_step"),
    )


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"opt": {"lr": 0.1}}`` -> ``{"opt.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


__all__ = [
    "Sink",
    "TrainingRun",
    "TrainingResult",
    "CheckpointInfo",
    "checkpoint_uri",
    "training_record",
    "MODEL_KINDS",
    "flat",
]
