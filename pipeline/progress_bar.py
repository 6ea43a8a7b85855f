"""Progress bars for long work (hashing big files, writing and reading big objects, ``verify``
and ``gc`` scans, mirror push/pull), drawn with rich on stderr — only when it is worth it.

A bar appears only when the work turns out to be long: once it has run for more than
``delay`` seconds (1 s; ``PIPELINE_PROGRESS_DELAY``) or, from the start, when its size is
known to be large (``total >= large`` bytes). Short work prints nothing. Nothing is drawn at
all when stderr is not a terminal (a pipe, a file, Prefect workers and deployments), in worker
processes (process pools, Dask) and flow runs started by a Prefect worker or ``serve``
(``PREFECT__FLOW_RUN_ID`` set), or with ``PIPELINE_PROGRESS=0``. rich is imported only when a
bar is first drawn, so any layer may call this module (it imports nothing of ``pipeline``).

Three ways to report, from the most explicit to the least::

    from pipeline.progress_bar import advance, progress, track

    # 1. a loop over known items: one bar, advanced per item
    for rel in track(paths, "mirror push", unit="objects"):
        copy(rel)

    # 2. a block with a handle: bytes (the default unit) or items
    with progress("mirror pull", total=total_bytes) as bar:
        for chunk in chunks:
            write(chunk)
            bar.advance(len(chunk))

    # 3. code deep inside a block that holds no handle (a file writer) advances the
    #    innermost bar of this thread and context, if its unit matches (else nothing happens)
    advance(len(data), unit="bytes")

``bar.total`` may be set later (unknown totals show a count and a rate). A bar that was
shown stays on screen, finished, when its block ends. Bars of concurrent threads share one
live display. An application with rich output of its own (the CLI) calls
``use_console(console)`` once: bars then draw on that console (if it is a terminal), nested
in its live displays (the epoch bars of ``run``) instead of fighting them.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import os
import sys
import threading
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")
DELAY = 1.0
"""Seconds of work before a bar appears (``PIPELINE_PROGRESS_DELAY`` overrides it)."""
LARGE = 1 << 32
"""A total of this many bytes or more is large: its bar appears at once."""


_console: Any = None


def use_console(console: Any) -> None:
    """Draw bars on this rich Console (None: a Console on stderr)."""
    global _console, _decided
    _console, _decided = console, None


_decided: tuple[Any, bool] | None = None
"""What ``enabled`` decided, and for which stderr: decided once per process (a forked child
decides again), again only when ``sys.stderr`` is replaced or ``use_console`` is called."""


def _forget() -> None:
    global _decided
    _decided = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def enabled() -> bool:
    """True when bars may be drawn: their console (stderr by default) is a terminal, this is
    not a worker process nor a flow run a Prefect worker started, and ``PIPELINE_PROGRESS`` is
    not ``0``. Decided once (the environment as it was then; see ``_decided``): a put of a
    small object asks this, and a terminal check is a system call."""
    global _decided
    decided = _decided
    if decided is not None and decided[0] is sys.stderr:
        return decided[1]
    answer = _decide()
    _decided = (sys.stderr, answer)
    return answer


def _decide() -> bool:
    if os.environ.get("PIPELINE_PROGRESS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if multiprocessing.parent_process() is not None:  # a process-pool / Dask worker
        return False
    if os.environ.get("PREFECT__FLOW_RUN_ID"):  # a flow run a Prefect worker or `serve` started
        return False
    if _console is not None:
        return bool(_console.is_terminal)
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get("PIPELINE_PROGRESS_DELAY", DELAY)))
    except ValueError:
        return DELAY


class Bar:
    """One unit of long work (see the module). ``advance`` costs a clock read until shown."""

    __slots__ = ("description", "unit", "total", "done", "_start", "_delay", "_task", "_live")

    def __init__(self, description: str, total: float | None, unit: str, delay: float, large: float) -> None:
        self.description, self.unit, self.total, self.done = description, unit, total, 0.0
        self._start, self._delay, self._task, self._live = time.monotonic(), delay, None, True
        if unit == "bytes" and total is not None and total >= large:
            self._show()

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self._task is None:
            if self._live and time.monotonic() - self._start >= self._delay:
                self._show()
        else:
            _display.update(self._task, completed=self.done, total=self.total)

    @property
    def shown(self) -> bool:
        return self._task is not None

    def _show(self) -> None:
        self._task = _display.add(self)
        if self._task is None:
            self._live = False  # the display failed: stay quiet, never fail the work

    def _finish(self) -> None:
        if self._task is not None:
            _display.finish(self._task, self.done)


class _Quiet:
    """The bar of work that is never shown (no terminal): does nothing."""

    unit = ""
    total = None
    shown = False

    def advance(self, n: float = 1) -> None:
        pass


_QUIET = _Quiet()
_innermost: contextvars.ContextVar[Bar | None] = contextvars.ContextVar("pipeline_progress_bar", default=None)


class _QuietBlock:
    """The block of work that is never shown: enters as the quiet bar, costs two calls."""

    def __enter__(self) -> _Quiet:
        return _QUIET

    def __exit__(self, *exc: object) -> None:
        return None


_QUIET_BLOCK = _QuietBlock()


def progress(
    description: str, total: float | None = None, *, unit: str = "bytes", delay: float | None = None,
    large: float = LARGE,
) -> contextlib.AbstractContextManager[Bar | _Quiet]:  # fmt: skip
    """A bar for the block (shown once the block proves long); the innermost for :func:`advance`.
    Where no bar can be drawn (see ``enabled``) the block costs nothing: no bar is made."""
    if not enabled():
        return _QUIET_BLOCK
    return _shown_block(description, total, unit, delay, large)


@contextlib.contextmanager
def _shown_block(description: str, total: float | None, unit: str, delay: float | None, large: float) -> Iterator[Bar]:
    bar = Bar(description, total, unit, _delay() if delay is None else delay, large)
    token = _innermost.set(bar)
    try:
        yield bar
    finally:
        _innermost.reset(token)
        bar._finish()


def track(items: Iterable[T], description: str, *, total: int | None = None, unit: str = "items") -> Iterator[T]:
    """``items`` one by one, with a bar advanced per item (``total``: ``len(items)`` if it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance(1)


def advance(n: float, unit: str = "bytes") -> None:
    """Advance the innermost bar of this thread/context by ``n`` if it counts ``unit``."""
    bar = _innermost.get()
    if bar is not None and bar.unit == unit:
        bar.advance(n)


class _Display:
    """One rich live display per process, shared by the bars shown at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Any = None
        self._open = 0

    def add(self, bar: Bar) -> Any:
        try:
            with self._lock:
                if self._progress is None:
                    self._progress = _new_progress()
                    self._progress.start()
                self._open += 1
                fields = {"unit": bar.unit if bar.unit != "bytes" else ""}
                task = self._progress.add_task(bar.description, total=bar.total, completed=bar.done, **fields)
                for t in self._progress.tasks:  # its clock started with the work, not with the bar
                    if t.id == task:
                        t.start_time = bar._start
                return task
        except Exception:  # no usable terminal after all
            return None

    def update(self, task: Any, **kwargs: Any) -> None:
        progress = self._progress
        if progress is not None:
            progress.update(task, **kwargs)

    def finish(self, task: Any, done: float) -> None:
        with self._lock:
            if self._progress is None:
                return
            self._progress.update(task, completed=done)
            self._open -= 1
            if self._open <= 0:
                self._progress.stop()
                self._progress, self._open = None, 0


def _new_progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    class _Amount(MofNCompleteColumn):
        """``3/10 objects`` for items, ``1.2/4.0 GB 300 MB/s`` for bytes."""

        def render(self, task: Any) -> Any:
            if task.fields.get("unit"):
                text = super().render(task)
                text.append(f" {task.fields['unit']}")
                return text
            return DownloadColumn().render(task) + " " + TransferSpeedColumn().render(task)

    console = _console if _console is not None else Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), _Amount(), TimeElapsedColumn())
    return Progress(*columns, console=console, get_time=time.monotonic)  # the clock of Bar._start


_display = _Display()

__all__ = ["Bar", "advance", "enabled", "progress", "track", "use_console", "DELAY", "LARGE"]
