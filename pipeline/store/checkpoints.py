"""The committed checkpoints of one stage key: steps, read, commit, delete, quarantine.

Steps are listed numerically (never as strings) and only inside this key's directory.
``delete`` deletes a manifest only. ``prune`` deletes manifests and frees at once the objects
no other manifest references (gc's set-aside / re-read / put-back protocol over just those
objects: one shared with another manifest, or with one being committed, stays).
Once every checkpoint of a key is dropped (``drop_all``, or a ``drop`` of all the steps its
caller knows; not ``delete_all``: a forced stage's fresh start writes there next), so is the
key's directory, if empty (one ``rmdir``: a file that landed meanwhile keeps it; a writer whose
directory went makes it again, ``local._place``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from . import layout
from .manifest import Manifest, Unverified
from .objects import leaf_path
from .tree import leaves

if TYPE_CHECKING:
    from .store import Store

_NO_VALUE: Any = object()


class Known(NamedTuple):
    """What a caller knows of one key's checkpoints: the steps as it just listed them, and
    manifests of some of them (committed or read by it)."""

    steps: list[int]
    manifests: Mapping[int, Manifest]


class Checkpoints:
    def __init__(self, store: Store, stage: str, key: str) -> None:
        self._store, self.stage, self.key = store, stage, key
        self._dir = layout.checkpoint_dir(stage, key)

    def __repr__(self) -> str:
        return f"<checkpoints of {self.stage!r} {self.key} in {self._store.url}>"

    def steps(self) -> list[int]:
        """Steps with a manifest in the store, ascending."""
        found = (layout.step_of(rel, self._dir) for rel in self._store._backend.list(self._dir))
        return sorted(s for s in found if s is not None)

    def exists(self, step: int) -> bool:
        """True when ``step`` has a manifest (one ``stat``; not read or checked)."""
        return self._store._backend.exists(layout.manifest_path(self.stage, self.key, step))

    def read(self, step: int) -> Manifest:
        """The manifest of ``step``, checked (seal, stage, key, step). FileNotFoundError when
        there is none; ValueError when it is damaged or not this key's (left in place:
        ``quarantine`` it) and no mirror holds a good copy (a good copy is restored)."""
        rel = layout.manifest_path(self.stage, self.key, step)
        try:
            return self._store._parse_manifest(rel)
        except ValueError as e:  # damaged: a mirror's good copy is restored (a missing step stays missing)
            repaired = None if isinstance(e, Unverified) else self._store._repair_manifest(rel, damaged=True)
            if repaired is None:
                raise
            return repaired

    def commit(self, manifest: Manifest, value: Any = _NO_VALUE) -> Manifest:
        """Commit a checkpoint manifest of this key (see ``Store.commit``)."""
        if (manifest.stage, manifest.key) != (self.stage, self.key) or manifest.step is None:
            raise ValueError(f"manifest of {manifest.stage!r} {manifest.key} step {manifest.step} is not one of {self}")
        if value is _NO_VALUE:  # (the store's own "no value" marker is not this one)
            return self._store.commit(manifest)
        return self._store.commit(manifest, value=value)

    def delete(self, step: int) -> None:
        self._store._backend.delete(layout.manifest_path(self.stage, self.key, step))

    def prune(self, steps: list[int], known: Known | None = None) -> int:
        """Delete the manifests of ``steps`` and free their objects no manifest references
        (kept checkpoints of this key, other keys, results); the bytes freed."""
        objects = self.drop(steps, known)
        return free_objects(self._store, objects)[1] if objects else 0

    def drop(self, steps: list[int], known: Known | None = None) -> dict[str, int]:
        """Delete the manifests of ``steps``; the objects they referenced that no kept
        checkpoint of this key does (path -> bytes), for :func:`free_objects` to free (at
        once, or later together with others: one sweep instead of one per prune).

        ``known``: this key's steps as just listed and the manifests of those its caller
        committed or read (a Checkpointer's catalog), so that they are not listed and read
        again. (What is freed is still decided by :func:`free_objects` over the whole store.)"""
        manifests = known.manifests if known is not None else {}
        objects: dict[str, int] = {}
        for step in steps:
            manifest = manifests.get(step) or self._read_or_none(step)
            self.delete(step)
            if manifest is not None:  # (unreadable: its manifest goes, its objects wait for gc)
                objects.update((leaf_path(leaf), leaf.bytes) for leaf in leaves(manifest.outputs))
        if known is not None and set(known.steps) <= set(steps):
            self._remove_dir()  # (without ``known``: only ``drop_all`` knows it dropped them all)
        if not objects:
            return objects
        kept = [s for s in known.steps if s not in steps] if known is not None else self.steps()
        for step in kept:  # the kept checkpoints of this key share most: skip the store scan for those
            manifest = manifests.get(step) or self._read_or_none(step)
            for leaf in leaves(manifest.outputs) if manifest is not None else ():
                objects.pop(leaf_path(leaf), None)
        return objects

    def _read_or_none(self, step: int) -> Manifest | None:
        try:
            return self.read(step)
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None

    def delete_all(self) -> None:
        for step in self.steps():
            self.delete(step)

    def drop_all(self) -> dict[str, int]:
        """Delete every checkpoint manifest of this key; the objects they referenced (see ``drop``)."""
        objects = self.drop(self.steps())
        self._remove_dir()
        return objects

    def _remove_dir(self) -> None:
        """This key's directory goes when it is empty (it stays when not: nothing is deleted)."""
        self._store._backend.remove_empty(self._dir, ())

    def quarantine(self, step: int) -> None:
        self._store._quarantine_manifest(layout.manifest_path(self.stage, self.key, step))


def free_objects(store: Store, objects: dict[str, int]) -> tuple[int, int]:
    """Free those of ``objects`` (as ``Checkpoints.drop`` returns them) that no manifest in the
    store references, by gc's set-aside protocol: (count, bytes)."""
    from .retention import free

    return free(store, objects) if objects else (0, 0)
