"""The committed checkpoints of one stage key: steps, read, commit, delete, quarantine.

Steps are listed numerically (never as strings) and only inside this key's directory.
Deleting a checkpoint deletes its manifest only: objects are content-addressed and may be
shared, so freeing their bytes is ``gc``'s job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import layout
from .manifest import Manifest, Unverified

if TYPE_CHECKING:
    from .store import Store

_NO_VALUE: Any = object()


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

    def delete_all(self) -> None:
        for step in self.steps():
            self.delete(step)

    def quarantine(self, step: int) -> None:
        self._store._quarantine_manifest(layout.manifest_path(self.stage, self.key, step))
