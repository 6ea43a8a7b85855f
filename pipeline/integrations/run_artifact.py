"""Each flow run that calls stages ends with its run record in the store and a Prefect table
artifact of it: what the Prefect UI shows of a run besides its task runs.

The first stage call of a flow run (:func:`watch_run`, from ``@stage``) gives that flow run a
:class:`RunEnd` hook; when the run ends (completed, failed or crashed) the hook folds the
run's stage events into its summary record (:func:`pipeline.runs.summarise`, so ``runs`` and
``show RUN`` see it, also for a user's own flow) and publishes :func:`run_rows` of it as the
table artifact ``run-<flow name>`` on the flow run: one row per stage call (stage, key,
hit/miss, seconds, seconds saved, bytes), the totals in its description. ``python -m pipeline
run`` rewrites the summary afterwards with its own wall time and flow reference; the rows
stay the same. A failure to publish warns and never fails the run. Prefect logs two INFO lines
around every hook it runs ("Running hook …", "Hook … finished running successfully"): for this
one, which every run has, they are dropped (:class:`QuietHook`); an error in it is still logged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from prefect.artifacts import TableArtifact
from prefect.context import FlowRunContext

from ..context import current_store
from ..errors import StoreError
from ..fingerprint.names import module_name
from ..runs import summarise
from ..store import Store
from ..units import size
from .artifacts import artifact_key
from .commit_join import finish

_HOOKS = ("on_completion_hooks", "on_failure_hooks", "on_crashed_hooks")
HOOK_NAME = "pipeline run record"
_lock = threading.Lock()


def run_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifact's table: one row per stage call of a run summary, in the order they ended."""
    rows = []
    for e in summary.get("stages", []):
        saved = max(0.0, e.get("compute_seconds", 0.0) - e["seconds"]) if e["hit"] else 0.0
        rows.append({
            "stage": e["stage"],
            "key": e["key"].partition(":")[2][:12],
            "result": "hit" if e["hit"] else "miss",
            "seconds": round(e["seconds"], 3),
            "saved s": round(saved, 3),
            "size": size(e.get("bytes", 0)),
        })  # fmt: skip
    return rows


def run_description(summary: dict[str, Any]) -> str:
    return (
        f"run `{summary['run_id']}` ({summary['status']}): {summary['hits']} cached, {summary['misses']} computed, "
        f"{summary['seconds_saved']:.2f} s saved, {summary['wall_seconds']:.1f} s wall"
    )


def publish_run(summary: dict[str, Any], flow_name: str, flow_run_id: uuid.UUID | str) -> str:
    """Publish a run summary's table artifact on ``flow_run_id``; returns its key."""
    key = artifact_key("run", flow_name)
    TableArtifact(
        table=run_rows(summary), key=key, description=run_description(summary), flow_run_id=uuid.UUID(str(flow_run_id))
    ).create()
    return key


@dataclass
class RunEnd:
    """The end-of-run hook of one flow run (see the module docstring)."""

    __name__ = HOOK_NAME  # how Prefect's log names the hook

    store: Store
    run_id: str
    flow_run_id: uuid.UUID
    started: float = field(default_factory=time.time)
    published: str | None = None

    def __call__(self, flow: Any, flow_run: Any, state: Any) -> None:
        if flow_run.id != self.flow_run_id:
            return
        with _lock:  # once per flow run: the flow object outlives it
            for name in _HOOKS:
                setattr(flow, name, [h for h in getattr(flow, name) if h is not self])
        for p in finish(str(self.flow_run_id)):  # a run that failed otherwise: its stages' commits end first
            warnings.warn(f"committing {p.what} failed: {p.error}; it is not cached", stacklevel=1)
        start = getattr(flow_run, "start_time", None) or getattr(flow_run, "expected_start_time", None)
        wall = time.time() - (start.timestamp() if start is not None else self.started)
        fn = getattr(flow, "fn", flow)
        ref = f"{module_name(fn)}:{fn.__name__}"
        status, params = state.type.value.lower(), dict(getattr(flow_run, "parameters", None) or {})
        try:
            summary = summarise(self.store, self.run_id, status, max(0.0, wall), flow=ref, params=params)
        except StoreError as e:  # the store is down: the run's own error (if any) says so; no record
            warnings.warn(f"run record of flow run {self.flow_run_id} not written: {e}", stacklevel=1)
            return
        try:
            self.published = publish_run(summary, flow.name, self.flow_run_id)
        except Exception as e:  # the API is down: the run record is in the store all the same
            warnings.warn(f"could not publish the run artifact of flow run {self.flow_run_id}: {e}", stacklevel=1)


class QuietHook(logging.Filter):
    """Drops Prefect's INFO lines about running the :class:`RunEnd` hook (noise in every run's log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith(f"Running hook {HOOK_NAME!r}") or
                    message == f"Hook {HOOK_NAME!r} finished running successfully")  # fmt: skip


_QUIET = QuietHook()


def watch_run(run_id: str | None) -> None:
    """Give the current flow run (if any) its end-of-run hook, once."""
    ctx = FlowRunContext.get()
    if run_id is None or ctx is None or ctx.flow is None or ctx.flow_run is None:
        return
    flow, flow_run_id = ctx.flow, ctx.flow_run.id
    with _lock:  # stages of one run may start in several threads at once: one hook
        if any(isinstance(h, RunEnd) and h.flow_run_id == flow_run_id for h in flow.on_completion_hooks):
            return
        hook = RunEnd(current_store(), run_id, flow_run_id)
        logging.getLogger("prefect.flow_runs").addFilter(_QUIET)  # once: a logger holds a filter once
        for name in _HOOKS:
            setattr(flow, name, [*getattr(flow, name), hook])


__all__ = ["RunEnd", "publish_run", "run_description", "run_rows", "watch_run"]
