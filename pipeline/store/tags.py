"""Tags: names people give to stage results and checkpoints (``prod``, ``baseline``).

A tag pins what it names: ``gc`` never drops a tagged entry, and a checkpointer never prunes
a tagged checkpoint. A tag may name several entries and an entry may carry several tags.
Each (tag, entry) pair is one small file (``layout.tag_path``) written atomically and
durably, so two concurrent ``tag`` commands never lose each other's write; ``untag``
deletes that file. A store's mirrors get each tag and untag at once (``Mirrors.tagged``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, StoreError
from . import layout

if TYPE_CHECKING:
    from .backend import Backend


@dataclass(frozen=True)
class Tag:
    name: str
    stage: str
    key: str
    step: int | None = None
    """A checkpoint's step; None for a stage result."""
    time: float = 0.0

    @property
    def entry(self) -> tuple[str, str, int | None]:
        return (self.stage, self.key, self.step)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"a tag name is a non-empty word without surrounding spaces, not {name!r}")
    if name.startswith("xxh3:") or "@" in name:
        raise ConfigError(f"tag name {name!r} would read as a key or STAGE@N: choose another")
    return name


class Tags:
    """``tags/<tag>/<stage>/<key>[@<step>].json`` in one store."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.changed: Callable[[str, bytes | None], None] | None = None
        """Set by a store with mirrors: told each tag file written (its bytes) or deleted (None)."""

    def add(self, name: str, stage: str, key: str, step: int | None = None) -> Tag:
        tag = Tag(check_name(name), stage, key, step, time.time())
        doc = {"tag": tag.name, "stage": stage, "key": key, "step": step, "time": tag.time}
        rel, data = layout.tag_path(name, stage, key, step), json.dumps(doc).encode()
        self._backend.write_atomic(rel, data)
        if self.changed is not None:
            self.changed(rel, data)
        return tag

    def remove(self, name: str, stage: str, key: str, step: int | None = None) -> bool:
        """Remove one tag from one entry; False when it was not there."""
        rel = layout.tag_path(name, stage, key, step)
        if not self._backend.exists(rel):
            return False
        self._backend.delete(rel)
        self._backend.remove_empty(layout.tag_dir(name))
        if self.changed is not None:
            self.changed(rel, None)
        return True

    def all(self) -> list[Tag]:
        """Every tag in the store. An unreadable tag file is a StoreError: what it pins is unknown,
        so nothing that relies on tags (gc) may go on as if it did not exist."""
        out = []
        for rel in sorted(self._backend.list(layout.TAGS)):
            if not rel.endswith(".json"):
                continue
            try:
                doc = json.loads(bytes(self._backend.read(rel)))
                tag = Tag(doc["tag"], doc["stage"], doc["key"], doc["step"], float(doc.get("time", 0.0)))
            except FileNotFoundError:
                continue  # untagged meanwhile
            except (ValueError, KeyError, TypeError) as e:
                url = self._backend.url
                raise StoreError(f"tag file {rel} in {url} is unreadable ({e}): delete or fix it") from None
            if layout.tag_path(tag.name, tag.stage, tag.key, tag.step) == rel:
                out.append(tag)
        return out

    def named(self, name: str) -> list[Tag]:
        return [t for t in self.all() if t.name == name]

    def by_entry(self) -> dict[tuple[str, str, int | None], frozenset[str]]:
        """(stage, key, step) -> the names of its tags."""
        out: dict[tuple[str, str, int | None], set[str]] = {}
        for t in self.all():
            out.setdefault(t.entry, set()).add(t.name)
        return {k: frozenset(v) for k, v in out.items()}

    def of(self, stage: str, key: str, step: int | None = None) -> frozenset[str]:
        return self.by_entry().get((stage, key, step), frozenset())
