"""Run records: what each stage of a run did (hit or miss, seconds, bytes), in the store.

Every stage call writes one small event record (so stages running in other processes or
machines report too); ``summarise`` folds them into the run's summary record. Where the
records live is the store's business (``store.runs``).
"""

from __future__ import annotations

import reprlib
import time
from typing import Any

from .cache import Outcome
from .store import Store


def record(store: Store, run_id: str, outcome: Outcome[Any], *, when: float | None = None) -> None:
    """Write the event of one stage call (not fsynced: a run record is informational);
    ``when``: the time the call ended (default: now), which orders the run's events."""
    m = outcome.manifest
    if m is None:
        raise ValueError(f"stage call outcome has no manifest yet (its commit is in flight): {outcome.pending}")
    event = {
        "stage": m.stage,
        "key": m.key,
        "hit": outcome.hit,
        "seconds": round(outcome.seconds, 6),
        "compute_seconds": m.compute_seconds,
        "bytes": m.bytes,
        "time": time.time() if when is None else when,
    }
    store.runs.write_event(run_id, m.stage, m.key, event)


def record_trial(store: Store, run_id: str, search: str, trial: Any) -> None:
    """Write the event of one finished trial of a search (a TrialRecord)."""
    event = {
        "search": search,
        "trial": trial.number,
        "params": trial.params,
        "value": trial.value,
        "state": trial.state,
        "source": trial.source,
        "reason": trial.reason,
        "seconds": round(trial.seconds, 6),
        "time": time.time(),
    }
    store.runs.write_trial(run_id, search, trial.number, event)


def events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The events of a run, in the order the stages finished."""
    return store.runs.events(run_id)


def trial_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The trial events of a run, in the order the trials finished."""
    return store.runs.trial_events(run_id)


def summarise(
    store: Store, run_id: str, status: str, wall_seconds: float, flow: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fold a run's events into its summary record and return it (``flow``: the flow's
    reference, so that ``status`` can compare with the previous run of the same flow;
    ``params``: the arguments the flow ran with, see :func:`run_params`)."""
    evs = events(store, run_id)
    summary = {
        "run_id": run_id,
        "flow": flow,
        "params": run_params(params or {}),
        "finished": time.time(),
        "status": status,
        "wall_seconds": round(wall_seconds, 3),
        "stages": evs,
        "hits": sum(e["hit"] for e in evs),
        "misses": sum(not e["hit"] for e in evs),
        "trials": trial_events(store, run_id),
        "seconds_saved": round(sum(max(0.0, e["compute_seconds"] - e["seconds"]) for e in evs if e["hit"]), 3),
    }
    store.runs.write_summary(run_id, summary)
    return summary


def record_crashed(store: Store, run_ids: list[str]) -> list[str]:
    """Fold the records of runs found killed (the liveness sweep marked their flow runs
    Crashed) with status ``crashed``, so retention's ``FailedRuns`` knows them; runs this store
    has no events of, or a summary of already, are left alone. Returns the ids recorded."""
    done = []
    for run_id in run_ids:
        if store.runs.summary(run_id) is None and events(store, run_id):
            summarise(store, run_id, "crashed", 0.0)
            done.append(run_id)
    return done


def run_params(arguments: dict[str, Any]) -> dict[str, Any]:
    """A flow's arguments as a run record keeps them: plain JSON (other values by a short
    repr); a flow taking one ``params`` mapping (the bundled flow) by that mapping's sections."""
    if set(arguments) == {"params"} and isinstance(arguments["params"], dict):
        arguments = arguments["params"]
    return {str(k): _plain(v) for k, v in arguments.items()}


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) and len(v) <= 100:
        return [_plain(x) for x in v]
    return reprlib.repr(v)


def run_summaries(store: Store) -> list[dict[str, Any]]:
    """Every folded run record (``runs/<run id>.json``), the most recent first (by its
    ``finished`` time, else the time of its last stage or trial event)."""
    out = [doc for doc in store.runs.summaries() if isinstance(doc.get("stages"), list)]

    def finished(doc: dict[str, Any]) -> float:
        if isinstance(doc.get("finished"), (int, float)):
            return float(doc["finished"])
        return max((e.get("time", 0.0) for e in [*doc["stages"], *doc.get("trials", [])]), default=0.0)

    return sorted(out, key=finished, reverse=True)


def flow_runs(store: Store, flow: str) -> list[dict[str, Any]]:
    """The run summaries of ``flow`` in the store, newest first."""
    return [doc for doc in run_summaries(store) if doc.get("flow") == flow]


def previous_results(store: Store, flow: str) -> dict[str, list[str]]:
    """Per stage, the result keys it had in the newest run of ``flow`` that ran it."""
    keys: dict[str, list[str]] = {}
    for run in flow_runs(store, flow):
        here: dict[str, list[str]] = {}
        for e in run.get("stages", ()):
            here.setdefault(e["stage"], []).append(e["key"])
        for stage, found in here.items():
            keys.setdefault(stage, found)
    return keys
