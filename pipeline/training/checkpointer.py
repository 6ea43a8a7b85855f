"""Checkpointer: save by policy, keep by policy, stop early, resume exactly.

::

    ckpt = Checkpointer(save=EveryNEpochs(1), keep=LatestN(2) | BestK(1, "val_loss"),
                        early_stopping=EarlyStopping("val_loss", patience=5, restore_best=True),
                        content=Full(), writer=Background())   # the defaults
    state = ckpt.restore(TrainState(model=net, optimizer=opt, scheduler=sched))
    for epoch in ckpt.epochs(state, epochs):       # range(state.epoch, epochs); empty once stopped
        ...train one epoch, compute metrics...
        if ckpt.step(epoch, state, {"val_loss": v}):
            break
    ckpt.finish(state)                             # waits for writes, best model in state, prunes

Inside a ``@stage`` (or any StageCache call) checkpoints live under that stage's key, so
the same key after a crash resumes and changed code, params or data start fresh; outside
a stage pass ``store=`` and ``name=``. A checkpoint is objects (one per state entry, plus
the global RNG streams) and a manifest ``checkpoints/<stage>/<key>/<step>.json`` whose
``extra`` carries the epoch, metrics, history and early-stopping counters, and the small
entries (plain JSON, or at most 16 KiB of pickle such as a fitted estimator: no object of
their own, :mod:`.entries`); the manifest is the commit.

Every choice is a small frozen policy: *when* to save (``save=``, :mod:`.policies`; wrap it
in ``SkipFinal(...)`` to skip the checkpoint after the last epoch), *what to keep*
(``keep=``, the store's retention vocabulary: pruned checkpoints' objects are freed at once
unless another manifest references them, or with ``free_pruned=False`` handed to the owner
in ``released()``; a tagged checkpoint is never pruned), *when to
stop* (``early_stopping=``), *what a checkpoint holds* (``content=`` ``Full()``,
``Partial("model", ...)`` or ``Light()``, :mod:`.content`) and *how it is written*
(``writer=`` ``Background()``, ``Background(skip_when_busy=True)`` or ``Sync()``, :mod:`.writer`).
Background writes run after an in-memory snapshot; their failures surface at the next
``step()`` or at ``close()``. ``sinks=[MlflowSink(...), TensorBoardSink(...)]``
(:mod:`pipeline.tracking`) tracks this Checkpointer's training alone, without a ``tracking()``
block; its sinks are closed when it finishes (or, if training raised, when it closes).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import warnings
from typing import Any, Mapping, MutableMapping, Sequence

from ..context import current_stage, current_store, open_store
from ..errors import CheckpointError, ConfigError
from ..store import DictNode, Leaf, Manifest, Store
from ..store.checkpoints import Known
from ..store.manifest import library_versions
from . import adapters, entries
from .catalog import Catalog, record_of
from .content import Content, Full, Light, check_content
from .policies import (
    BestK,
    EarlyStopping,
    EveryNEpochs,
    History,
    KeepPolicy,
    LatestN,
    OnImprovement,
    Record,
    SavePolicy,
    StopState,
    best_of,
    members,
)
from .progress import ProgressEvent, emit, listened, tracker_for
from .state import ClosesOnExit, TrainState
from .writer import Background, WritePolicy, Writer, check_writer

RNG = "_rng"  # the global RNG streams' object in a checkpoint (entry names never start with "_")
_DEFAULT_KEEP = LatestN(2)
_REMOVED = {  # options of 0.1 that became policies in 0.2: what to write instead
    "granularity": 'content=Full(), Partial("model", ...) or Light()',
    "keys": 'content=Partial("model", ...)',
    "async_write": "writer=Background() or Sync()",
    "when_busy": "writer=Background(skip_when_busy=True)",
    "save_last": "save=SkipFinal(EveryNEpochs(1)) (any save policy)",
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class _RngObjects:
    """The object of the global RNG streams last written to each store (by its URL and
    durability) in this process, with the streams it holds: a checkpoint whose streams are the
    same (compared as they are, no serialising or hashing) references it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, bool], tuple[dict[str, Any], Leaf]] = {}

    def leaf(self, store: Store, payload: dict[str, Any]) -> Leaf:
        where = (store.url, store.durable)
        with self._lock:
            last = self._last.get(where)
        if last is not None and adapters.same_rng(last[0], payload):
            return last[1]
        leaf = store.put(payload, what=f"checkpoint entry {RNG!r}")
        with self._lock:
            self._last[where] = (payload, leaf)
        return leaf


_RNG_OBJECTS = _RngObjects()


class Checkpointer(ClosesOnExit):
    """Training checkpoints of one stage key (see the module docstring)."""

    def __init__(
        self,
        *,
        save: SavePolicy | None = None,
        keep: KeepPolicy | None = _DEFAULT_KEEP,
        early_stopping: EarlyStopping | None = None,
        content: Content = Full(),
        writer: WritePolicy = Background(),
        hyperparameters: Mapping[str, Any] | None = None,
        store: Store | str | None = None,
        name: str | None = None,
        key: str | None = None,
        sinks: Sequence[Any] = (),
        free_pruned: bool = True,
        **removed: Any,
    ) -> None:
        _refuse_removed(removed)
        self._tracker = tracker_for(sinks) if sinks else None  # this Checkpointer's own tracking sinks
        self._finishing = False
        self.save_policy = EveryNEpochs(1) if save is None else save
        self.keep = keep
        self.stopping = early_stopping
        self.content = check_content(content)
        self.writer = check_writer(writer)
        self._check_config(hyperparameters)
        self.hyperparameters = dict(hyperparameters or {})
        running = current_stage()
        if store is None and running is None:
            if not name:
                raise ConfigError(
                    "outside a @stage a Checkpointer needs a store and a name: Checkpointer(name=...) on the "
                    "current store (use_store), or Checkpointer(store=..., name=...)"
                )
            store = current_store()
        if store is None:
            self.store, self.stage, self.key, self.run_id = running.store, running.stage, running.key, running.run_id
        else:
            self.store = open_store(store)
            self.stage = name or (running.stage if running else "")
            if not self.stage:
                raise ConfigError("Checkpointer(store=...) needs name= (the training run's name in the store)")
            self.key = key or (running.key if running and not name else "default")
            self.run_id = running.run_id if running else ""
        if not isinstance(free_pruned, bool):
            raise ConfigError(f"Checkpointer(free_pruned=) takes True or False, not {free_pruned!r}")
        self._catalog = Catalog(self.store, self.stage, self.key, free_pruned=free_pruned)
        # A stage computed by force starts from scratch: its old checkpoints are superseded.
        self._fresh = running is not None and running.forced and (self.stage, self.key) == (running.stage, running.key)
        if self._fresh:
            self._catalog.checkpoints.delete_all()
        self._writer = Writer(self.writer)
        self._monitored = self._monitored_metrics()
        self._monitor = self._best_metric()
        self._stop = StopState()
        self._seen: list[Record] = []
        self._saved: list[Record] = []
        self._resumed_from: int | None = None
        self._captured: set[str] = set()
        self._start = time.time()
        self._clock = time.perf_counter()
        self._best_loaded = False
        self._closed = False
        self.total: int | None = None

    # -- configuration -------------------------------------------------------------------------
    def _check_config(self, hyperparameters: Any) -> None:
        if not isinstance(self.save_policy, SavePolicy):
            raise ConfigError(f"save= takes a save policy (EveryNEpochs, OnImprovement…), not {self.save_policy!r}")
        if self.keep is not None and not isinstance(self.keep, KeepPolicy):
            raise ConfigError(f"keep= takes a keep policy (LatestN, BestK…) or None, not {self.keep!r}")
        if self.stopping is not None and not isinstance(self.stopping, EarlyStopping):
            raise ConfigError(f"early_stopping= takes an EarlyStopping(...), not {self.stopping!r}")
        if not self.content.resumable and self.stopping is not None and self.stopping.restore_best:
            raise ConfigError(
                f"EarlyStopping(restore_best=True) needs model state, which content={self.content!r} does not save: "
                'use Full() or Partial("model", ...)'
            )
        try:
            json.dumps(dict(hyperparameters or {}), allow_nan=True)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"hyperparameters must be JSON-able (numbers, strings, lists, dicts): {e}") from None

    def _monitored_metrics(self) -> list[tuple[str, str]]:
        owners = [*members(self.save_policy), *(members(self.keep) if self.keep else ()), self.stopping]
        return [(m, type(p).__name__) for p in owners if p is not None for m in p.monitors]

    def _best_metric(self) -> tuple[str, str] | None:
        """The metric whose best checkpoint retention always keeps."""
        if self.stopping is not None:
            return self.stopping.monitor, self.stopping.mode
        for p in (*(members(self.keep) if self.keep else ()), *members(self.save_policy)):
            if isinstance(p, (BestK, OnImprovement)):
                return p.metric, p.mode
        return None

    # -- restore -------------------------------------------------------------------------------
    def restore(self, default: TrainState | Mapping[str, Any], *, step: int | None = None) -> TrainState:
        """Fill ``default`` from the newest valid checkpoint of this key (or ``step``).

        A corrupt or unreadable checkpoint is quarantined and the previous one is tried, with a
        warning naming both. Without any (or with ``content=Light()``) ``default`` is
        returned as it is: a fresh start. A plain dict of entries is accepted (and returned
        as a TrainState)."""
        self._check_open()
        state = TrainState.of(default, role="restore() takes the training state to fill; it")
        restored, failures = None, []
        if self.content.resumable and not self._fresh:
            candidates = [step] if step is not None else self._catalog.steps()[::-1]
            for s in candidates:
                try:
                    manifest = self._catalog.read(s)
                    if manifest.extra.get("granularity") == Light.kind:
                        continue
                    payloads = entries.load(self.store, manifest)
                except FileNotFoundError:
                    continue
                except Exception as e:  # corrupt, missing object, undecodable: quarantine, fall back
                    failures.append((s, e))
                    self._catalog.quarantine(s)
                    continue
                self._apply(state, manifest, payloads)
                restored = s
                break
        for s, e in failures:
            fallback = f"resuming from checkpoint {restored}" if restored is not None else "starting fresh"
            warnings.warn(
                f"checkpoint {s} of stage {self.stage!r} ({self.key}) is unusable ({e}); quarantined it, {fallback}",
                stacklevel=2,
            )
        if step is not None and restored is None:
            raise CheckpointError(f"no usable checkpoint {step} of stage {self.stage!r} ({self.key})")
        self._emit("restore", state)
        return state

    def _apply(self, state: TrainState, manifest: Manifest, payloads: dict[str, Any]) -> None:
        extra = manifest.extra
        kinds = extra.get("entries", {})
        for name, payload in payloads.items():
            if name != RNG:
                state[name] = adapters.restore(name, kinds.get(name, "value"), state._entries.get(name), payload)
        if RNG in payloads:
            adapters.restore_rng(payloads[RNG])
        state.epoch = int(extra["epoch"])
        state.history = [dict(h) for h in extra.get("history", [])]
        self._stop = StopState(**extra.get("early_stopping", {}))
        state.stopped = self._stop.stopped
        state.resumed_from = self._resumed_from = int(manifest.step or 0)
        self._seen = [Record(h["epoch"], {k: v for k, v in h.items() if k != "epoch"}) for h in state.history]
        self._saved = [record_of(manifest)]

    # -- the loop ------------------------------------------------------------------------------
    def epochs(self, state: TrainState, total: int) -> range:
        """The epochs still to run: ``range(state.epoch, total)``, empty once stopped early."""
        self.total = int(total)
        return range(state.epoch, state.epoch if state.stopped else self.total)

    def step(self, epoch: int, state: TrainState | Mapping[str, Any], metrics: Mapping[str, Any]) -> bool:
        """Record epoch ``epoch`` (0-based, just finished); save by policy. True: stop now.

        ``state`` is the TrainState ``restore`` returned, or a plain dict of entries
        (``{"model": m, "optimizer": opt}``; keys ``epoch``, ``history``… are not entries:
        the checkpointer counts epochs itself). When early stopping stops with
        ``restore_best``, ``state`` already holds the best epoch's entries on return."""
        self._check_open()
        self._writer.check()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"step() takes the index of the epoch just finished (an int >= 0), not {epoch!r}")
        given, state = state, self._state_of(state)
        n = epoch + 1
        values = self._check_metrics(metrics)
        record = Record(n, values, time.time())
        history = History(tuple(self._seen), tuple(self._saved), self._start, self.total)
        was_stopped, improved = self._stop.stopped, False
        if self.stopping is not None:
            self._stop, improved = self.stopping.update(self._stop, record)
        force = (improved and self.stopping.restore_best) or (self._stop.stopped and not was_stopped)
        due = force or self.save_policy.should_save(record, history)
        state.epoch, state.stopped = n, self._stop.stopped
        state.history.append({"epoch": n, **values})
        self._seen.append(record)
        saved = skipped = False
        if due:
            skipped = self._writer.will_skip(force)
            if not skipped:
                self._save(record, state, force)
                saved = True
        self._emit("epoch", state, values, saved=saved, skipped=skipped)
        if state.stopped and self.stopping is not None and self.stopping.restore_best:
            self._load_best(state)
            if given is not state and isinstance(given, MutableMapping):  # a dict: the best epoch's entries too
                given.update(state.items())
        return state.stopped

    def _state_of(self, state: Any) -> TrainState:
        """The TrainState ``step`` works on: ``state``, or one over a plain dict's entries."""
        if isinstance(state, TrainState):
            return state
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"step() takes the training state: the TrainState restore() returned, or a dict of entries "
                f'such as {{"model": model, "optimizer": opt}}; got {type(state).__name__}'
            )
        try:
            view = TrainState.of(state, role="step() takes the training state; a dict of entries")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        view.history = self._history()
        view.stopped, view.resumed_from = self._stop.stopped, self._resumed_from
        return view

    def _history(self) -> list[dict[str, float]]:
        """One metrics dict per completed epoch, from the records this checkpointer has seen."""
        return [{"epoch": r.step, **r.metrics} for r in self._seen]

    def _check_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise ConfigError(f"step() takes metrics as a dict of name -> number, not {type(metrics).__name__}")
        values = {}
        for k, v in metrics.items():
            if type(v) is float and type(k) is str and k != "epoch":  # the usual case, checked first: every epoch
                values[k] = v
                continue
            if k == "epoch":
                continue  # the checkpointer records the epoch itself
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) and not _is_scalar(v):
                raise ConfigError(f"metric {k!r} = {v!r}: metrics must be numbers keyed by name")
            values[k] = float(v)
        for name, owner in self._monitored:
            if name not in values:
                raise ConfigError(
                    f"{owner} monitors metric {name!r}, but step() got only {sorted(values)}: "
                    "report it every epoch or fix the metric name"
                )
        return values

    # -- saving --------------------------------------------------------------------------------
    def _save(self, record: Record, state: TrainState, force: bool) -> None:
        t0 = time.perf_counter()
        kinds, payloads = self._snapshot(state)
        extra = {
            "epoch": record.step,
            "metrics": record.metrics,
            "time": record.time,
            "granularity": self.content.kind,
            "entries": kinds,
            "history": self._history(),
            "early_stopping": dict(vars(self._stop)),  # (its fields are scalars: asdict's deep copy buys nothing)
            "hyperparameters": self.hyperparameters,
            "resumed_from": self._resumed_from,
        }
        self._saved.append(record)
        what = f"checkpoint {record.step} of stage {self.stage!r}"
        self._writer.submit(what, lambda: self._write(record, payloads, extra, t0), force=force)

    def _snapshot(self, state: TrainState) -> tuple[dict[str, str], dict[str, Any]]:
        """Kinds and payloads of what the content policy saves, taken in the training thread."""
        names = self.content.entries(state.keys())
        copy = self._writer.asynchronous
        kinds, payloads = {}, {}
        for name in names:
            kinds[name], payloads[name] = adapters.capture(
                name, state[name], copy=copy, check=name not in self._captured, pickle_now=True
            )
            self._captured.add(name)
        if self.content.rng:
            payloads[RNG] = adapters.capture_rng()
        return kinds, payloads

    def _write(self, record: Record, payloads: dict[str, Any], extra: dict[str, Any], t0: float) -> None:
        """Serialise, commit and prune (in the writer thread when async)."""
        if not self.content.resumable:
            payloads = {"epoch": record.step, "metrics": record.metrics, "hyperparameters": self.hyperparameters}
            outputs = self.store.put(payloads, what="light checkpoint")
        else:
            outputs, payloads = self._save_entries(payloads, extra)
        manifest = Manifest(
            stage=self.stage,
            key=self.key,
            outputs=outputs,
            created=_now(),
            run_id=self.run_id,
            save_seconds=round(time.perf_counter() - t0, 6),
            versions=library_versions(),
            kind="checkpoint",
            step=record.step,
            extra=extra,
        )
        self._catalog.commit(manifest, payloads)
        self._prune(newest=record.step)

    def _save_entries(self, payloads: dict[str, Any], extra: dict[str, Any]) -> tuple[DictNode, dict[str, Any]]:
        """Write each entry as one object, but a small one (plain JSON, or a small pickle: a
        fitted estimator) rides in the manifest, sealed with it: one object write fewer per
        checkpoint (:mod:`.entries`). The global RNG streams, when unchanged since the
        last checkpoint written to this store in this process (training that never draws from
        them: every epoch checkpoint of every trial of a search), reuse that checkpoint's object
        instead of being serialised again. (Should a gc have taken it meanwhile, the commit
        finds it missing and writes it again from the payloads returned: those of objects.)"""

        def put(name: str, payload: Any) -> Leaf:
            if name == RNG:
                return _RNG_OBJECTS.leaf(self.store, payload)
            return self.store.put(payload, what=f"checkpoint entry {name!r}")

        return entries.save(extra.get("entries", {}), payloads, extra, put)

    def _prune(self, newest: int | None, finishing: bool = False) -> None:
        protected = {s for s in (newest, self._stop.best_step) if s is not None}
        if self._resumed_from is not None and not finishing:
            protected.add(self._resumed_from)
        if self._monitor is not None:
            records = self._catalog.records(listed=True)
            best = best_of(records, *self._monitor)
            if best is not None:
                protected.add(best.step)
        self._catalog.prune(self.keep, protected, listed=True)

    def _load_best(self, state: TrainState) -> None:
        """Put the best checkpoint's entries into ``state`` (after pending writes land)."""
        self.wait()
        best = self._stop.best_step
        if self._best_loaded or best is None or best == state.epoch:
            self._best_loaded = True
            return
        try:
            manifest = self._catalog.read(best)
            payloads = entries.load(self.store, manifest)
        except Exception as e:
            warnings.warn(
                f"cannot restore the best checkpoint {best} of stage {self.stage!r} ({e}); keeping epoch {state.epoch}",
                stacklevel=3,
            )
            return
        kinds = manifest.extra.get("entries", {})
        for name, payload in payloads.items():
            if name != RNG:
                state[name] = adapters.restore(name, kinds.get(name, "value"), state._entries.get(name), payload)
        self._best_loaded = True

    # -- the end -------------------------------------------------------------------------------
    def finish(self, state: TrainState) -> TrainState:
        """Wait for writes (raising their errors); with ``restore_best`` put the best epoch's
        entries into ``state``; prune by the keep policy (best and newest stay). Returns it."""
        self._finishing = True
        self.close()
        if self.stopping is not None and self.stopping.restore_best:
            self._load_best(state)
        steps = self._catalog.known_steps()
        self._prune(newest=steps[-1] if steps else None, finishing=True)
        last = state.history[-1] if state.history else {}
        self._emit("finish", state, {k: v for k, v in last.items() if k != "epoch"})
        self._close_tracker()
        return state

    def wait(self) -> None:
        """Until the write in flight has landed; raises the error of a failed write."""
        self._writer.wait()
        self._writer.check()

    def close(self) -> None:
        """Wait for the write in flight; raise the error of any failed background write."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            if not self._finishing:  # ended without finish (training raised): its sinks abandon the run
                self._close_tracker()

    def _close_tracker(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"the Checkpointer of stage {self.stage!r} is closed")

    # -- introspection -------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Committed checkpoint steps of this key, ascending."""
        return self._catalog.steps()

    def known(self) -> Known | None:
        """This key's checkpoint steps and the manifests this Checkpointer committed, as its
        last prune listed them (None: not listed yet), for ``Checkpoints.drop``."""
        return self._catalog.known()

    def released(self) -> dict[str, int]:
        """With ``free_pruned=False``: the objects of pruned checkpoints that no kept one
        references (path -> bytes), not yet freed (a search frees its trials' in one sweep)."""
        return dict(self._catalog.released)

    @property
    def best_step(self) -> int | None:
        return self._stop.best_step

    @property
    def resumed_from(self) -> int | None:
        """The checkpoint step ``restore`` resumed from (None: a fresh start)."""
        return self._resumed_from

    def _emit(self, kind: str, state: TrainState, metrics: Mapping[str, float] = (), **flags: bool) -> None:
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        if self._tracker is None and not listened():  # nobody hears it: not built (20 per trial of a search)
            return
        total = self.total if self.total is not None or kind != "finish" else state.epoch
        event = ProgressEvent(
            kind, self.stage, self.key, state.epoch, total, dict(metrics or {}),
            stopped=state.stopped, resumed_from=state.resumed_from, seconds=seconds, store=self.store,
            run_id=self.run_id, hyperparameters=self.hyperparameters, **flags,
        )  # fmt: skip
        emit(event)
        if self._tracker is not None:
            self._tracker(event)

    def __repr__(self) -> str:
        return f"<Checkpointer {self.stage!r} {self.key} in {self.store.url}>"


def _refuse_removed(removed: Mapping[str, Any]) -> None:
    for name in removed:
        if name in _REMOVED:
            raise ConfigError(f"Checkpointer({name}=...) is gone: options became policies; write {_REMOVED[name]}")
        raise ConfigError(f"Checkpointer() got an unexpected argument {name!r}")


def _is_scalar(v: Any) -> bool:
    """numpy / torch scalars (float(v) works and they are not containers)."""
    return hasattr(v, "item") and getattr(v, "ndim", 1) == 0


__all__ = ["Checkpointer"]
