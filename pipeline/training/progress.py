"""Per-epoch progress of every Checkpointer in this process, for whoever listens.

A Checkpointer emits a :class:`ProgressEvent` on ``restore`` (kind ``"restore"``), after
each ``step`` (``"epoch"``) and at ``finish`` (``"finish"``), from the thread running the
training loop (a Prefect ThreadPoolTaskRunner worker, the main thread…). Listeners are
process-wide, so a listener installed by the CLI in the main thread hears stages running
in worker threads. A listener that raises is dropped with a warning: progress never
breaks training.

    with rich_progress(console):          # a live bar per training stage
        run_flow(...)
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import ConfigError

Listener = Callable[["ProgressEvent"], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class ProgressEvent:
    kind: str
    """``"restore"``, ``"epoch"`` or ``"finish"``."""
    stage: str
    key: str
    epoch: int
    """Epochs completed."""
    total: int | None = None
    """Epochs planned, when known (``Checkpointer.epochs(state, total)`` tells it)."""
    metrics: dict[str, float] = field(default_factory=dict)
    saved: bool = False
    skipped: bool = False
    """A save was due but dropped: the writer was busy (``Background(skip_when_busy=True)``)."""
    stopped: bool = False
    resumed_from: int | None = None
    seconds: float = 0.0
    """Wall time of this epoch (since the previous event of this Checkpointer)."""
    store: Any = None
    """The Checkpointer's :class:`~pipeline.store.Store` (None: the running stage's, if any)."""
    run_id: str = ""
    """The pipeline run the Checkpointer belongs to ("" when unknown)."""
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    """The Checkpointer's ``hyperparameters=`` (empty: read them from its checkpoints)."""


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with every event from now on; returns a function that removes it."""
    with _lock:
        _listeners.append(listener)

    def remove() -> None:
        with _lock, contextlib.suppress(ValueError):
            _listeners.remove(listener)

    return remove


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    remove = add_listener(listener)
    try:
        yield listener
    finally:
        remove()


_tracker_factory: Callable[[Sequence[Any]], Listener] | None = None


def register_tracker(factory: Callable[[Sequence[Any]], Listener]) -> None:
    """How a Checkpointer's own ``sinks=`` are fed: ``factory(sinks)`` gives a listener with a
    ``close()`` (``pipeline.tracking`` registers its Tracker when imported)."""
    global _tracker_factory
    _tracker_factory = factory


def tracker_for(sinks: Sequence[Any]) -> Listener:
    """The listener that feeds one Checkpointer's ``sinks`` (see :func:`register_tracker`)."""
    if _tracker_factory is None:
        raise ConfigError(
            f"Checkpointer(sinks=...) takes tracking sinks (from pipeline.tracking import MlflowSink...), got {sinks!r}"
        )
    return _tracker_factory(list(sinks))


def listened() -> bool:
    """True while some listener is installed (else an event need not even be built)."""
    return bool(_listeners)


def emit(event: ProgressEvent) -> None:
    with _lock:
        targets = list(_listeners)
    for listener in targets:
        try:
            listener(event)
        except Exception as e:
            with _lock, contextlib.suppress(ValueError):
                _listeners.remove(listener)
            warnings.warn(f"progress listener {listener!r} failed ({e}); removed", stacklevel=2)


def describe(event: ProgressEvent, limit: int = 3) -> str:
    """``val_loss=0.1234 val_accuracy=0.9561 saved`` — the first few metrics and the save."""
    parts = [f"{k}={v:.4g}" for k, v in list(event.metrics.items())[:limit]]
    if event.saved:
        parts.append("saved")
    elif event.skipped:
        parts.append("save skipped (busy)")
    if event.stopped:
        parts.append("early stop")
    return " ".join(parts)


def print_progress(write: Callable[[str], Any] = print) -> Listener:
    """A listener writing one line per event: ``train epoch 3/30 val_loss=0.12 saved``."""

    def listener(e: ProgressEvent) -> None:
        total = f"/{e.total}" if e.total else ""
        if e.kind == "restore":
            write(f"{e.stage}: resumed from checkpoint {e.resumed_from}" if e.resumed_from else f"{e.stage}: fresh")
        elif e.kind == "epoch":
            write(f"{e.stage} epoch {e.epoch}{total} {describe(e)} ({e.seconds:.2f} s)")
        else:
            write(f"{e.stage}: finished at epoch {e.epoch}{total}")

    return listener


@contextlib.contextmanager
def rich_progress(console: Any = None) -> Iterator[Any]:
    """A live rich progress bar per training stage while the block runs (rich imported here)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[tuple[str, str], Any] = {}

    def listener(e: ProgressEvent) -> None:
        ident = (e.stage, e.key)
        if ident not in tasks:
            tasks[ident] = bars.add_task(e.stage, total=e.total, completed=e.epoch, info="")
        info = describe(e)
        if e.kind == "restore":
            info = f"resumed from checkpoint {e.resumed_from}" if e.resumed_from else "fresh start"
        elif e.kind == "finish":
            info = f"done {describe(e)}".strip()
        bars.update(tasks[ident], total=e.total, completed=e.epoch, info=info)

    with bars, listening(listener):
        yield bars
