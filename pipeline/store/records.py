"""Run records and search indexes: small informational JSON documents in the store.

They are written without fsync (a torn or lost record costs a line in a report, never a
result) and read leniently (an unreadable record is skipped). Paths come from ``layout``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import layout

if TYPE_CHECKING:
    from .backend import Backend


def _dump(doc: Any, **kwargs: Any) -> bytes:
    return json.dumps(doc, default=repr, **kwargs).encode()


def _read_all(backend: Backend, prefix: str, exclude: str | None = None) -> list[dict[str, Any]]:
    out = []
    for rel in backend.list(prefix):
        if rel.endswith(".json") and (exclude is None or exclude not in rel):
            try:
                doc = json.loads(bytes(backend.read(rel)))
            except (ValueError, OSError):
                continue
            if isinstance(doc, dict):
                out.append(doc)
    return out


class Runs:
    """``runs/<run id>/…`` events of each stage and trial, ``runs/<run id>.json`` summaries."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def write_event(self, run_id: str, stage: str, key: str, event: dict[str, Any]) -> None:
        self._backend.write_atomic(layout.run_event(run_id, stage, key), _dump(event), durable=False)

    def write_trial(self, run_id: str, search: str, number: int, event: dict[str, Any]) -> None:
        self._backend.write_atomic(layout.trial_event(run_id, search, number), _dump(event), durable=False)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The stage events of a run, in the order they were written (their ``time``)."""
        found = _read_all(self._backend, layout.run_dir(run_id), exclude="/trials/")
        return sorted(found, key=lambda e: e.get("time", 0.0))

    def trial_events(self, run_id: str) -> list[dict[str, Any]]:
        found = _read_all(self._backend, layout.trial_dir(run_id))
        return sorted(found, key=lambda e: e.get("time", 0.0))

    def write_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._backend.write_atomic(layout.run_summary(run_id), _dump(summary, indent=1))

    def summaries(self) -> list[dict[str, Any]]:
        """Every folded run record (``runs/<run id>.json``), in no particular order."""
        out = []
        for rel in self._backend.list(layout.RUNS):
            if rel.count("/") != 1 or not rel.endswith(".json"):
                continue  # a stage or trial event of a run, not a run record
            try:
                doc = json.loads(bytes(self._backend.read(rel)))
            except (ValueError, OSError):
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def ids(self) -> list[str]:
        """Every run that left events or a summary (a killed run may have events only)."""
        found = set()
        for rel in self._backend.list(layout.RUNS):
            parts = rel.split("/")
            if len(parts) == 2 and parts[1].endswith(".json"):
                found.add(parts[1][: -len(".json")])
            elif len(parts) >= 3:
                found.add(parts[1])
        return sorted(found)

    def summary(self, run_id: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(bytes(self._backend.read(layout.run_summary(run_id))))
        except (FileNotFoundError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


class Searches:
    """``searches/<name>/<search key>.json``: the trial table each search last wrote."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def write_index(self, name: str, search_key: str, doc: dict[str, Any]) -> None:
        self._backend.write_atomic(layout.search_index(name, search_key), _dump(doc), durable=False)

    def indexes(self, name: str) -> list[dict[str, Any]]:
        """The index of every search named ``name``, the most recently updated first."""
        found = [d for d in _read_all(self._backend, layout.search_dir(name)) if isinstance(d.get("key"), str)]
        return sorted(found, key=lambda d: d.get("updated", 0), reverse=True)

    def newest_index(self, name: str) -> dict[str, Any] | None:
        """The index of the most recently updated search named ``name`` (None: none)."""
        found = _read_all(self._backend, layout.search_dir(name))
        return max(found, key=lambda d: d.get("updated", 0), default=None)
