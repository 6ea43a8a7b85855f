"""Retention over the committed checkpoints of one stage key (``store.checkpoints``).

The store owns the checkpoints (steps, read, commit, delete, quarantine); this module
only decides which to keep: it remembers each checkpoint's record (step, metrics, time)
so a keep policy can be applied without rereading manifests, and deletes the manifests
the policy does not keep, freeing at once the objects no other manifest references
(``Checkpoints.prune``; ``free_pruned=False`` hands them to the owner in ``released``). A tagged checkpoint
is pinned: never pruned.

A Checkpointer prunes after every checkpoint it commits. It lists the key's steps once (at
``restore``, or at its first prune) and then keeps that list itself (``prune(listed=True)``):
what it commits is added, what it prunes or quarantines removed. Checkpoints another writer of
the same key adds meanwhile go unseen (they are kept, never pruned by mistake), and before it
deletes anything the steps that are to stay are checked to be still there (a ``stat`` each
instead of a listing): one deleted from outside sends the prune back to a fresh listing, so
it never deletes the older checkpoint in favour of one that is gone.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from ..errors import StoreError
from ..store import Manifest, Store
from ..store.checkpoints import Known
from .policies import KeepPolicy, Record, retained


def record_of(manifest: Manifest) -> Record:
    """What a keep policy sees of a checkpoint: its size is ``Manifest.bytes`` (objects and carried entries)."""
    extra = manifest.extra
    step, metrics, written = int(manifest.step or 0), dict(extra.get("metrics", {})), float(extra.get("time", 0.0))
    return Record(step, metrics, written, manifest.bytes)


class Catalog:
    def __init__(self, store: Store, stage: str, key: str, *, free_pruned: bool = True) -> None:
        self.checkpoints = store.checkpoints(stage, key)
        self._tags = store.tags
        self.free_pruned = free_pruned
        self.freed_bytes = 0
        self.released: dict[str, int] = {}
        """With ``free_pruned=False``: objects of pruned checkpoints no kept one references
        (path -> bytes), left for the owner to free (``pipeline.store.checkpoints.free_objects``)."""
        self._key = (stage, key)
        self._records: dict[int, Record] = {}
        self._manifests: dict[int, Manifest] = {}  # the ones committed here (what a prune drops)
        self._steps: list[int] | None = None  # as records() last listed them, kept up to date since
        self._lock = threading.Lock()

    def steps(self) -> list[int]:
        """Steps with a manifest in the store, ascending (listed now, and remembered)."""
        steps = self.checkpoints.steps()
        with self._lock:
            self._steps = list(steps)
        return steps

    def known_steps(self) -> list[int]:
        """The steps as last listed, kept up to date since (listed now if never listed)."""
        with self._lock:
            if self._steps is not None:
                return list(self._steps)
        return self.steps()

    def read(self, step: int) -> Manifest:
        """The manifest of ``step``; ValueError / KeyError / TypeError when it is unusable."""
        return self.checkpoints.read(step)

    def quarantine(self, step: int) -> None:
        self.checkpoints.quarantine(step)
        with self._lock:
            self._records.pop(step, None)
            self._manifests.pop(step, None)
            if self._steps is not None:
                self._steps = [s for s in self._steps if s != step]

    def commit(self, manifest: Manifest, value: Any = None) -> Manifest:
        """Commit a checkpoint (its objects re-checked, see ``Store.commit``; ``value``, the
        value the objects were saved from, rewrites any a concurrent gc took) and remember it."""
        manifest = self.checkpoints.commit(manifest) if value is None else self.checkpoints.commit(manifest, value)
        with self._lock:
            step = int(manifest.step or 0)
            self._records[step] = record_of(manifest)
            self._manifests[step] = manifest
            if self._steps is not None and step not in self._steps:
                self._steps = sorted([*self._steps, step])
        return manifest

    def known(self) -> Known | None:
        """This key's steps and the manifests committed here, for ``Checkpoints.drop``; None
        until the steps were listed (by a prune): then the caller lists them itself."""
        with self._lock:
            return None if self._steps is None else Known(list(self._steps), dict(self._manifests))

    def records(self, listed: bool = False) -> list[Record]:
        """Every readable checkpoint of this key (manifests read once, then remembered);
        ``listed``: of the steps as last listed and kept up to date since, without listing again."""
        steps = self.known_steps() if listed else self.checkpoints.steps()
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
            self._steps = steps
            self._manifests = {s: m for s, m in self._manifests.items() if s in fresh}
        return [fresh[s] for s in sorted(fresh)]

    def prune(self, keep: KeepPolicy | None, protected: set[int], *, listed: bool = False) -> list[int]:
        """Delete the manifests ``keep`` does not keep (protected steps always stay);
        ``listed``: judged over the steps as last listed and kept up to date since (see the
        module docstring), not a fresh listing."""
        if keep is None:
            return []
        records = self.records(listed)
        survivors = retained(records, keep, protected)
        doomed = [r.step for r in records if r.step not in survivors]
        if doomed and listed and not all(self.checkpoints.exists(r.step) for r in records if r.step in survivors):
            return self.prune(keep, protected)  # one that stays was deleted from outside: judge a fresh listing
        if doomed:
            try:
                tagged = self._tags.by_entry()
            except StoreError as e:  # what is pinned is unknown: prune nothing, never fail training for it
                warnings.warn(f"checkpoints of {self._key[0]!r} not pruned: {e}", stacklevel=2)
                return []
            pinned = {step for (stage, key, step) in tagged if (stage, key) == self._key}
            doomed = [s for s in doomed if s not in pinned]
        if not doomed:
            return []
        known = self.known()
        if self.free_pruned:
            self.freed_bytes += self.checkpoints.prune(doomed, known)
        else:
            released = self.checkpoints.drop(doomed, known)
            with self._lock:
                self.released.update(released)
        with self._lock:
            for step in doomed:
                self._records.pop(step, None)
                self._manifests.pop(step, None)
            self._steps = [s for s in self._steps or () if s not in doomed]
        return doomed
