"""Route every Checkpointer's progress events to tracking sinks, for the length of a block.

::

    with tracking(MlflowSink("sqlite:///mlflow.db"), TensorBoardSink("data/tensorboard")):
        train(...)                      # any Checkpointer in this process, in any thread

    with configured_tracking():         # the sinks [tool.pipeline.tracking] / PIPELINE_TRACKING_* name
        run_flow(...)

A sink that raises (its server is down, its disk is full) is disabled for the rest of the
block with one warning; training never fails because of tracking. Sinks with ``background =
True`` (MLflow, TensorBoard) run on a thread of their own, so training waits for neither the
network nor the disk; the end of the block waits for them to catch up (``drain_seconds``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..cache import current_stage
from ..errors import ConfigError
from ..training.progress import ProgressEvent, add_listener, register_tracker
from .base import Sink, TrainingRun, read_result
from .settings import SINK_NAMES, TrackingSettings

SinkFactory = Callable[[TrackingSettings], Sink]
_factories: dict[str, SinkFactory] = {}


def register_sink(name: str, factory: SinkFactory) -> None:
    """Make ``sinks = ["<name>"]`` in the settings build a sink with ``factory(settings)``."""
    _factories[name] = factory


@dataclass
class _Open:
    run: TrainingRun
    seen: list[dict[str, float]] = field(default_factory=list)


class Tracker:
    """A progress listener feeding ``sinks`` (see the module docstring)."""

    def __init__(self, sinks: list[Sink], *, drain_seconds: float = 120.0) -> None:
        self.sinks = list(sinks)
        self.failed: dict[str, str] = {}
        """Sink name -> the error that disabled it."""
        self.drain_seconds = drain_seconds
        self._open: dict[tuple[str, str], _Open] = {}
        self._lock = threading.Lock()
        self._sink_locks = {id(s): threading.Lock() for s in self.sinks}
        self._queues = {id(s): _Delivery(s, self._call) for s in self.sinks if s.background}

    def __call__(self, event: ProgressEvent) -> None:
        try:
            self._handle(event)
        except Exception as e:  # never let tracking break training (or get the listener dropped)
            warnings.warn(f"tracking: cannot follow {event.kind} of stage {event.stage!r} ({e})", stacklevel=2)

    def _handle(self, event: ProgressEvent) -> None:
        ident = (event.stage, event.key)
        with self._lock:
            current = self._open.get(ident)
            replaced = current if event.kind == "restore" else None
            fresh = current is None or replaced is not None
            if fresh:
                current = self._open[ident] = _Open(self._run_of(event))
        if replaced is not None:  # the same key again before the last one finished (it raised)
            self._each("abandon", lambda s: s.abandon(replaced.run))
        with self._lock:
            if event.kind == "epoch":
                current.seen.append({"epoch": event.epoch, **event.metrics})
            if event.kind == "finish":
                self._open.pop(ident, None)
        if fresh:
            self._each("start", lambda s: s.start(current.run))
        if event.kind == "epoch":
            self._each("epoch", lambda s: s.epoch(current.run, event))
        elif event.kind == "finish" and self._live():
            result = read_result(current.run, event, current.seen)
            self._each("finish", lambda s: s.finish(result))

    @staticmethod
    def _run_of(event: ProgressEvent) -> TrainingRun:
        running = current_stage()  # the listener runs in the training thread: the stage is known here
        in_stage = running is not None and (running.stage, running.key) == (event.stage, event.key)
        store = event.store if event.store is not None else (running.store if in_stage else None)
        run_id = event.run_id or (running.run_id if in_stage else "")
        return TrainingRun(event.stage, event.key, run_id, store, event.resumed_from, event.total)

    def _live(self) -> list[Sink]:
        return [s for s in self.sinks if s.name not in self.failed]

    def _each(self, hook: str, call: Callable[[Sink], Any]) -> None:
        for sink in self._live():
            delivery = self._queues.get(id(sink))
            if delivery is not None:
                delivery.submit(hook, call)  # the sink's own thread calls it: training does not wait
            else:
                self._call(sink, hook, call)

    def _call(self, sink: Sink, hook: str, call: Callable[[Sink], Any]) -> None:
        with self._sink_locks[id(sink)]:
            if sink.name in self.failed:
                return
            try:
                call(sink)
            except Exception as e:
                self.failed[sink.name] = f"{type(e).__name__}: {e}"
                warnings.warn(
                    f"tracking sink {sink.name!r} failed in {hook} ({type(e).__name__}: {e}); "
                    "it is off for the rest of this run, training goes on",
                    stacklevel=4,
                )

    def close(self) -> None:
        with self._lock:
            dangling, self._open = list(self._open.values()), {}
        for o in dangling:
            self._each("abandon", lambda s, run=o.run: s.abandon(run))
        self._each("close", lambda s: s.close())
        deadline = time.monotonic() + self.drain_seconds
        for delivery in self._queues.values():
            left = delivery.join(max(0.0, deadline - time.monotonic()))
            if left:
                warnings.warn(
                    f"tracking sink {delivery.sink.name!r} did not catch up within {self.drain_seconds:g} s; "
                    f"{left} pending call(s) dropped",
                    stacklevel=3,
                )


class _Delivery:
    """The calls of one background sink, in order, on a thread of its own."""

    def __init__(self, sink: Sink, call: Callable[[Sink, str, Callable[[Sink], Any]], None]) -> None:
        self.sink = sink
        self._call = call
        self._queue: queue.Queue[tuple[str, Callable[[Sink], Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(self, hook: str, call: Callable[[Sink], Any]) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"tracking-{self.sink.name}", daemon=True)
                self._thread.start()
        self._queue.put((hook, call))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._call(self.sink, *item)

    def join(self, timeout: float) -> int:
        """Let the queued calls run (at most ``timeout`` s); returns how many were left undone."""
        if self._thread is None:
            return 0
        self._queue.put(None)
        self._thread.join(timeout)
        return self._queue.qsize() if self._thread.is_alive() else 0


def _checked(sinks: Any, where: str) -> list[Sink]:
    for s in sinks:
        if not isinstance(s, Sink):
            raise ConfigError(f"{where} takes sinks (MlflowSink(...), TensorBoardSink(...)…), not {s!r}")
    return list(sinks)


@contextlib.contextmanager
def tracking(*sinks: Sink, drain_seconds: float = 120.0) -> Iterator[Tracker]:
    """Feed ``sinks`` with every Checkpointer's epochs in this process while the block runs;
    at its end, wait up to ``drain_seconds`` for background sinks to catch up."""
    tracker = Tracker(_checked(sinks, "tracking()"), drain_seconds=drain_seconds)
    remove = add_listener(tracker)
    try:
        yield tracker
    finally:
        remove()
        tracker.close()


# Checkpointer(sinks=[...]): one Tracker of its own, fed only its events, closed when it finishes.
register_tracker(lambda sinks: Tracker(_checked(sinks, "Checkpointer(sinks=...)")))


def sinks_from(settings: TrackingSettings) -> list[Sink]:
    """The sinks ``settings.sinks`` names, built (an extra that is not installed: ConfigError)."""
    out = []
    for name in settings.sinks:
        factory = _factories.get(name)
        if factory is None:
            where = "pipeline.integrations.training_artifacts" if name == "prefect" else "pipeline.tracking"
            raise ConfigError(f"tracking sink {name!r} is not available here (import {where}; known: {SINK_NAMES})")
        out.append(factory(settings))
    return out


@contextlib.contextmanager
def configured_tracking(settings: TrackingSettings | None = None) -> Iterator[Tracker | None]:
    """:func:`tracking` with the configured sinks (none configured: does nothing)."""
    settings = settings if settings is not None else TrackingSettings.load()
    if not settings.sinks:
        yield None
        return
    with tracking(*sinks_from(settings)) as tracker:
        yield tracker


__all__ = ["tracking", "configured_tracking", "Tracker", "register_sink", "sinks_from"]
