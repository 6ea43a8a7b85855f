"""Drops: the record of each entry ``gc`` dropped, so that its mirrors drop it too and no
mirror ever gives it back.

A dropped manifest leaves ``dropped/<manifest path>`` behind (``layout.dropped_path``): the
manifest's ``created`` time and run id, which tell that commit from a later one of the same
key (a rerun commits it afresh: not dropped). The record is written before the manifest is
deleted, so a crash leaves a drop recorded and the entry still there (the next ``gc`` drops
it), never an entry gone without its record. What reads a mirror's copies on behalf of the
store — a lookup that asks the mirrors, ``mirror pull`` — skips a dropped one; ``gc`` deletes
the mirrors' copies at once, and ``mirror push`` does it for a mirror that was down then.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Iterator

from . import layout

if TYPE_CHECKING:
    from .backend import Backend
    from .manifest import Manifest
    from .store import Store

Ident = tuple[str, str]
"""Which commit of a manifest path: (created, run id)."""


def ident(m: Manifest) -> Ident:
    return (m.created, m.run_id)


def record(backend: Backend, rel: str, m: Manifest, *, durable: bool = True) -> bytes:
    """Record that the manifest ``m`` at ``rel`` is dropped; the record's bytes."""
    data = json.dumps({"manifest": rel, "created": m.created, "run_id": m.run_id, "time": time.time()}).encode()
    backend.write_atomic(layout.dropped_path(rel), data, durable=durable)
    return data


def dropped(backend: Backend, rel: str) -> Ident | None:
    """The commit of ``rel`` that was dropped, if one was."""
    try:
        doc = json.loads(bytes(backend.read(layout.dropped_path(rel))))
        return (str(doc["created"]), str(doc["run_id"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # an unreadable record drops nothing: at worst an entry comes back, never one is lost


def is_dropped(backend: Backend, rel: str, m: Manifest) -> bool:
    """True when ``m`` (read from a mirror, say) is the very commit of ``rel`` gc dropped."""
    return dropped(backend, rel) == ident(m)


def records(backend: Backend) -> Iterator[tuple[str, str]]:
    """``(manifest path, record path)`` of every drop recorded in a store."""
    for rel in backend.list(layout.DROPPED):
        if rel.endswith(".json"):
            yield layout.dropped_manifest(rel), rel


def apply(target: Store, rel: str, which: Ident, data: bytes) -> bool:
    """Drop in ``target`` (a mirror) what was dropped elsewhere: its record, then its copy of
    that very commit (not a later one); True when a copy was deleted."""
    target._backend.write_atomic(layout.dropped_path(rel), data, durable=target.durable)
    try:
        theirs = target._parse_manifest(rel)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return False
    if ident(theirs) != which:
        return False
    target._backend.delete(rel)
    return True
