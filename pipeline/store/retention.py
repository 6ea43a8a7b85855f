"""Garbage collection: delete objects no manifest references (and stale temp files).

``gc`` never deletes an object a committed manifest (stage result, training checkpoint,
best-so-far record) references, so it can't touch a checkpoint a stage resumes from. An
unreferenced object younger than ``grace_seconds`` is kept too: a writer commits its objects
before its manifest, and gc must not race it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass

from .backend import LocalBackend
from .codecs import CODECS
from .manifest import iter_leaves
from .objects import object_path
from .store import Store

DEFAULT_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class GcReport:
    """What ``gc`` deleted (or, with ``dry_run``, would delete)."""

    live_objects: int
    deleted_objects: int
    deleted_bytes: int
    deleted_temp_files: int
    dry_run: bool


def _age_and_size(store: Store, rel: str, now: float) -> tuple[float, int]:
    backend = store.backend
    if isinstance(backend, LocalBackend):
        st = os.stat(os.path.join(backend.root, *rel.split("/")))
        return now - st.st_mtime, st.st_size
    info = backend.fs.info(f"{backend.root}/{rel}")
    modified = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(modified, dt.datetime):
        modified = modified.timestamp()
    age = now - float(modified) if modified is not None else float("inf")
    return age, int(info.get("size") or 0)


def live_objects(store: Store) -> set[str]:
    """Paths of every object some manifest references."""
    live: set[str] = set()
    for prefix in ("stages", "checkpoints"):
        for rel in store.backend.list(prefix):
            if not rel.endswith(".json"):
                continue
            manifest = store._read_manifest(rel)
            if manifest is None:
                continue
            for leaf in iter_leaves(manifest.outputs):
                live.add(object_path(leaf["object"], CODECS[leaf["codec"]].suffix))
    return live


def gc(store: Store, *, dry_run: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> GcReport:
    """Delete unreferenced objects and temp files older than ``grace_seconds``."""
    live = live_objects(store)
    now = time.time()
    deleted = freed = temps = 0
    for rel in list(store.backend.list("objects")):
        is_temp = rel.startswith("objects/tmp/")
        if not is_temp and rel in live:
            continue
        try:
            age, size = _age_and_size(store, rel, now)
        except FileNotFoundError:
            continue
        if age < grace_seconds:
            continue
        if not dry_run:
            store.backend.delete(rel)
        if is_temp:
            temps += 1
        else:
            deleted += 1
            freed += size
    return GcReport(len(live), deleted, freed, temps, dry_run)
