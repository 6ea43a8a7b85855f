"""Snapshots staged in the background, finished before the optimizer changes what they copy.

An asynchronous checkpoint needs a copy of the rank's shard (the writer reads it for a second
or more; the next steps change the live tensors in place). Only the optimizer's ``step()``
changes the tensors the optimizer owns (its parameters and its per-parameter state: momentum,
Adam's moments and step counts), so those are copied by a background thread while the next
forward and backward run, and the loop waits, if at all, right before the next optimizer
step (a step pre-hook on every optimizer of the training state). Everything else (buffers
like BatchNorm's running statistics, which a forward pass changes; scheduler and RNG state;
local entries) is copied in ``step()`` itself. So the snapshot is exactly the state at the
checkpointed step, as long as nothing but the optimizers' step changes their tensors
in between (in-place edits of parameters: call ``before_step()`` of the checkpointer first).

Used by :mod:`pipeline.training.distributed`.
"""

from __future__ import annotations

import queue
import sys
import threading
import weakref
from typing import Any, Callable, Iterable, Mapping

from .shards import copy_into


def optimizers(entries: Iterable[Any]) -> list[Any]:
    """The torch optimizers among the training state's entries (none without torch loaded)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    return [e for e in entries if isinstance(e, torch.optim.Optimizer)]


def owned_memory(opts: Iterable[Any]) -> dict[int, int]:
    """Start address -> size in bytes of every tensor the optimizers ``opts`` own: the
    parameters they step and their per-parameter state."""
    torch = sys.modules["torch"]
    owned: dict[int, int] = {}

    def add(t: Any) -> None:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            owned[t.data_ptr()] = t.numel() * t.element_size()

    for opt in opts:
        for group in opt.param_groups:
            for p in group["params"]:
                add(p)
        for per_param in opt.state.values():
            for v in per_param.values():
                add(v)
    return owned


def deferrable(arrays: Mapping[str, Any], owned: Mapping[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``arrays`` split into (copy now, may copy until the next optimizer step): an array may
    wait when it is exactly the memory of a tensor the optimizers own."""
    now, later = {}, {}
    for k, a in arrays.items():
        iface = getattr(a, "__array_interface__", None)
        exact = iface is not None and owned.get(iface["data"][0]) == a.nbytes and a.flags.c_contiguous
        (later if exact else now)[k] = a
    return now, later


class Staging:
    """One copy in flight: its arrays once copied, or the reason it failed."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._arrays: dict[str, Any] = {}
        self._error: BaseException | None = None

    def wait(self) -> None:
        self._done.wait()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> dict[str, Any]:
        """The copied arrays (waits for them); raises what the copy raised."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._arrays


class Stager:
    """A background thread that copies arrays into snapshot buffers, one job at a time.

    :meth:`prepare` and :meth:`start` hand over a copy (its :class:`Staging` at once); :meth:`wait`
    blocks until the newest one is done (what the optimizer step pre-hook calls). The thread
    is a daemon started at the first copy and stopped by :meth:`close`."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Staging, dict[str, Any], dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: Staging | None = None

    def prepare(self) -> Staging:
        """A copy to come: hand it to the thread that waits for it, then :meth:`start` it
        (started last, the copy's thread does not take the GIL from the caller mid-way)."""
        self._last = Staging()
        return self._last

    def start(self, staging: Staging, into: dict[str, Any], arrays: Mapping[str, Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=_work, args=(self._queue,), name="pipeline-checkpoint-stager", daemon=True
            )
            self._thread.start()
        self._queue.put((staging, into, dict(arrays)))

    def pending(self) -> bool:
        return self._last is not None and not self._last.done()

    def wait(self) -> None:
        """Until the newest copy is done (copies run in order: every earlier one is too)."""
        if self._last is not None:
            self._last.wait()

    def close(self) -> None:
        self.wait()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _work(jobs: queue.SimpleQueue) -> None:
    while (item := jobs.get()) is not None:
        staging, into, arrays = item
        item = None
        try:
            staging._arrays = copy_into(into, arrays)
        except BaseException as e:  # raised by the write that waits for this copy
            staging._error = e
        finally:
            arrays = into = None
            staging._done.set()


class StepHooks:
    """Step pre-hooks on optimizers that call ``before()`` first, each optimizer hooked once;
    removed by :meth:`remove`. The hooks hold the owner weakly."""

    def __init__(self, before: Callable[[], None]) -> None:
        self._before = weakref.WeakMethod(before)  # type: ignore[arg-type]
        self._handles: dict[int, tuple[Any, Any]] = {}  # id -> (optimizer, hook handle)

    def attach(self, opts: Iterable[Any]) -> None:
        for opt in opts:
            held = self._handles.get(id(opt))
            if held is None or held[0] is not opt:  # (an id is reused once its object is gone)
                self._handles[id(opt)] = (opt, opt.register_step_pre_hook(_pre_hook(self._before)))

    def remove(self) -> None:
        for _, handle in self._handles.values():
            handle.remove()
        self._handles.clear()


def _pre_hook(before: weakref.WeakMethod) -> Callable[..., None]:
    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        method = before()
        if method is not None:
            method()

    return hook


__all__ = ["Stager", "Staging", "StepHooks", "deferrable", "optimizers", "owned_memory"]
