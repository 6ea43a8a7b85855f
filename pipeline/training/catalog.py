"""The committed checkpoints of one stage key: ``checkpoints/<stage>/<key>/<step>.json``.

Lists steps (numerically, never as strings), reads and quarantines manifests, and prunes
by a keep policy — only inside this key's directory. Pruning deletes manifests only: the
objects are content-addressed and may be shared, so freeing their bytes is ``gc``'s job.

(This belongs in ``pipeline.store`` once the store grows a checkpoint API; see the notes.)
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import threading
import time

from ..store import Manifest, Store
from .policies import KeepPolicy, Record, retained

_STEP = re.compile(r"(\d+)\.json")


def record_of(manifest: Manifest) -> Record:
    extra = manifest.extra
    return Record(int(manifest.step or 0), dict(extra.get("metrics", {})), float(extra.get("time", 0.0)))


class Catalog:
    def __init__(self, store: Store, stage: str, key: str) -> None:
        self.store, self.stage, self.key = store, stage, key
        self.prefix = posixpath.dirname(Store.manifest_path(stage, key, 0))
        self._records: dict[int, Record] = {}
        self._lock = threading.Lock()

    def path(self, step: int) -> str:
        return Store.manifest_path(self.stage, self.key, step)

    def steps(self) -> list[int]:
        """Steps with a manifest on disk, ascending."""
        found = []
        for rel in self.store.backend.list(self.prefix):
            m = _STEP.fullmatch(posixpath.basename(rel))
            if m and posixpath.dirname(rel) == self.prefix:
                found.append(int(m.group(1)))
        return sorted(found)

    def read(self, step: int) -> Manifest:
        """The manifest of ``step``; ValueError / KeyError / TypeError when it is unreadable."""
        return Manifest.from_json(bytes(self.store.backend.read(self.path(step))))

    def quarantine(self, step: int) -> None:
        rel = self.path(step)
        with contextlib.suppress(FileNotFoundError):
            self.store.backend.move(rel, f"quarantine/{int(time.time())}-{rel.replace('/', '__')}")
        with self._lock:
            self._records.pop(step, None)

    def committed(self, manifest: Manifest) -> None:
        with self._lock:
            self._records[int(manifest.step or 0)] = record_of(manifest)

    def records(self) -> list[Record]:
        """Every readable checkpoint of this key (manifests read once, then remembered)."""
        steps = self.steps()
        with self._lock:
            known = dict(self._records)
        fresh = {}
        for step in steps:
            if step in known:
                fresh[step] = known[step]
                continue
            try:
                fresh[step] = record_of(self.read(step))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: restore() quarantines it; retention leaves it alone
        with self._lock:
            self._records = fresh
        return [fresh[s] for s in sorted(fresh)]

    def prune(self, keep: KeepPolicy | None, protected: set[int]) -> list[int]:
        """Delete the manifests ``keep`` does not keep (protected steps always stay)."""
        if keep is None:
            return []
        records = self.records()
        survivors = retained(records, keep, protected)
        doomed = [r.step for r in records if r.step not in survivors]
        for step in doomed:
            self.store.backend.delete(self.path(step))
            with self._lock:
                self._records.pop(step, None)
        return doomed
