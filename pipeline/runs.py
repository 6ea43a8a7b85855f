"""Run records: what each stage of a run did (hit or miss, seconds, bytes), in the store.

Every stage call writes one small event file ``runs/<run id>/<stage>-<key>.json`` (so
stages running in other processes or machines report too); ``summarise`` folds them
into ``runs/<run id>.json``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .cache import Outcome
from .store import Store
from .store.store import safe_name


def record(store: Store, run_id: str, outcome: Outcome[Any]) -> None:
    """Write the event of one stage call (not fsynced: a run record is informational)."""
    m = outcome.manifest
    event = {
        "stage": m.stage,
        "key": m.key,
        "hit": outcome.hit,
        "seconds": round(outcome.seconds, 6),
        "compute_seconds": m.compute_seconds,
        "bytes": m.bytes,
        "time": time.time(),
    }
    rel = f"runs/{safe_name(run_id)}/{safe_name(m.stage)}-{m.key.partition(':')[2][:12]}.json"
    store.backend.write_atomic(rel, json.dumps(event).encode(), durable=False)


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
    rel = f"runs/{safe_name(run_id)}/trials/{safe_name(search)}-{trial.number:05d}.json"
    store.backend.write_atomic(rel, json.dumps(event, default=repr).encode(), durable=False)


def events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The events of a run, in the order the stages finished."""
    return _read_all(store, f"runs/{safe_name(run_id)}", exclude="/trials/")


def trial_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The trial events of a run, in the order the trials finished."""
    return _read_all(store, f"runs/{safe_name(run_id)}/trials")


def _read_all(store: Store, prefix: str, exclude: str | None = None) -> list[dict[str, Any]]:
    out = []
    for rel in store.backend.list(prefix):
        if rel.endswith(".json") and (exclude is None or exclude not in rel):
            try:
                out.append(json.loads(bytes(store.backend.read(rel))))
            except (ValueError, FileNotFoundError):
                continue
    return sorted(out, key=lambda e: e["time"])


def summarise(store: Store, run_id: str, status: str, wall_seconds: float, flow: str | None = None) -> dict[str, Any]:
    """Fold a run's events into ``runs/<run id>.json`` and return it (``flow``: the flow's
    reference, so that ``status`` can compare with the previous run of the same flow)."""
    evs = events(store, run_id)
    summary = {
        "run_id": run_id,
        "flow": flow,
        "finished": time.time(),
        "status": status,
        "wall_seconds": round(wall_seconds, 3),
        "stages": evs,
        "hits": sum(e["hit"] for e in evs),
        "misses": sum(not e["hit"] for e in evs),
        "trials": trial_events(store, run_id),
        "seconds_saved": round(sum(max(0.0, e["compute_seconds"] - e["seconds"]) for e in evs if e["hit"]), 3),
    }
    store.backend.write_atomic(f"runs/{safe_name(run_id)}.json", json.dumps(summary, indent=1).encode())
    return summary


def run_summaries(store: Store) -> list[dict[str, Any]]:
    """Every folded run record (``runs/<run id>.json``), the most recent first (by its
    ``finished`` time, else the time of its last stage or trial event)."""
    out = []
    for rel in store.backend.list("runs"):
        if rel.count("/") != 1 or not rel.endswith(".json"):
            continue  # a stage or trial event of a run, not a run record
        try:
            doc = json.loads(bytes(store.backend.read(rel)))
        except (ValueError, FileNotFoundError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("stages"), list):
            out.append(doc)

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
