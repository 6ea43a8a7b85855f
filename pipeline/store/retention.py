"""Garbage collection: delete objects no manifest references (and temp files of dead writers).

``gc`` never deletes an object a committed manifest (stage result, training checkpoint,
best-so-far record) references, so it can't touch a checkpoint a stage resumes from, and
it is safe against writers committing while it runs, at any grace:

1. candidates: objects no manifest references, older than ``grace_seconds``;
2. each candidate is *set aside* (moved to ``gc/<sweep>/…``), not deleted;
3. the manifests are read again: a set-aside object that one of them references now (a
   writer committed meanwhile) is put back; the others are deleted.

A writer checks, right after writing its manifest, that every object it references is in
place (putting back one a sweep set aside, writing again one a sweep deleted), and a
reader that misses an object looks for a set-aside copy first. So an object of a committed
manifest is either seen by step 3 (the manifest was there) or re-checked by its writer
(the manifest came later). The grace period only spares young unreferenced objects work.
Temp files are removed when their writer (a process on this host) is dead, or, for temps of
other hosts, once older than ``max(grace_seconds, TEMP_SECONDS)``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass

from ..errors import ConfigError
from ..progress_bar import track
from . import layout
from .store import Store

DEFAULT_GRACE_SECONDS = 3600.0
MIN_GRACE_SECONDS = 0.0
TEMP_SECONDS = 900.0


@dataclass(frozen=True)
class GcReport:
    """What ``gc`` deleted (or, with ``dry_run``, would delete)."""

    live_objects: int
    deleted_objects: int
    deleted_bytes: int
    deleted_temp_files: int
    dry_run: bool


def _put_back(store: Store) -> None:
    """Objects an earlier sweep set aside and never finished with (it was killed) go back."""
    backend = store._backend
    for trashed in list(backend.list(layout.TRASH)):
        rel = layout.untrash(trashed)
        if rel is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            backend.move(trashed, rel)


def gc(store: Store, *, dry_run: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> GcReport:
    """Delete unreferenced objects older than ``grace_seconds`` and stale temp files."""
    if not grace_seconds >= MIN_GRACE_SECONDS:
        raise ConfigError(f"gc: grace_seconds must be >= {MIN_GRACE_SECONDS}, got {grace_seconds!r}")
    backend = store._backend
    if not dry_run:
        _put_back(store)
    start = time.time()
    live = store.live_objects()
    candidates: list[tuple[str, int]] = []
    temps = 0
    for rel in track(list(backend.list(layout.OBJECTS)), "gc scan", unit="objects"):  # a bar if it proves long
        is_temp = rel.startswith(layout.TMP + "/")
        if not is_temp and (rel in live or not layout.is_object(rel)):
            continue
        try:
            st = backend.stat(rel)
        except FileNotFoundError:
            continue
        if is_temp:
            state = layout.temp_state(rel)
            if state == "dead" or (state == "unknown" and start - st.mtime >= max(grace_seconds, TEMP_SECONDS)):
                temps += 1
                if not dry_run:
                    backend.delete(rel)
        elif start - st.mtime >= grace_seconds:
            candidates.append((rel, st.size))
    if dry_run:
        return GcReport(len(live), len(candidates), sum(size for _, size in candidates), temps, True)
    sweep = f"{int(start)}-{uuid.uuid4().hex[:12]}"
    aside = []
    for rel, size in candidates:
        with contextlib.suppress(FileNotFoundError):
            backend.move(rel, layout.trash_path(sweep, rel))
            aside.append((rel, size))
    live = store.live_objects() if aside else live  # manifests committed during the sweep count
    deleted = freed = 0
    for rel, size in aside:
        trashed = layout.trash_path(sweep, rel)
        if rel in live:
            with contextlib.suppress(FileNotFoundError):  # a reader or writer put it back already
                backend.move(trashed, rel)
        else:
            backend.delete(trashed)
            deleted += 1
            freed += size
    backend.remove_empty(layout.TRASH)
    return GcReport(len(live), deleted, freed, temps, False)
