"""Drops: the record of each entry ``gc`` dropped, so that its mirrors drop it too and no
mirror ever gives it back.

A dropped manifest leaves ``dropped/<manifest path>`` behind (``layout.dropped_path``): the
manifest's ``created`` time and run id, which tell that commit from a later one of the same
key (a rerun commits it afresh: not dropped), when it was dropped, and the mirrors the store
had then. The record is written before the manifest is deleted, so a crash leaves a drop
recorded and the entry still there (the next ``gc`` drops it), never an entry gone without
its record. What reads a mirror's copies on behalf of the store — a lookup that asks the
mirrors, ``mirror pull`` — skips a dropped one; ``gc`` deletes the mirrors' copies at once,
and ``mirror push`` does it for a mirror that was down then.

A record is needed only while some mirror may still hold (or be about to receive) the very
commit it names. ``gc`` removes one (:func:`prune`) when all of these hold:

- it is older than ``RECORD_SECONDS``: a replication or ``mirror push`` that read the entry
  before it was dropped has long finished writing it (it would otherwise land after the check);
- every mirror it names (those the store had when it was dropped) is among the mirrors gc
  was given, so none is out of sight (a ``gc`` run without the mirrors keeps the records),
  unless the record is older than ``FORGET_SECONDS``: a mirror out of the configuration that
  long counts as removed from it (should it come back, at worst it gives back an entry
  dropped since: never a wrong result, never one lost);
- every one of those and of the mirrors gc was given is reachable now, holds the record (it
  applied the drop: an empty directory where a mirror's disk is not mounted has not) and does
  not hold that commit. One that lacks the record or holds the commit is caught up now
  (``apply``), and the record kept until a later gc finds it so.

Then the mirrors' copies of the record go first and the store's last: a crash in between
leaves the store's record, which ``push`` copies again; never a mirror's record orphaned.
(Their directories, one per stage, stay: removing one could race a gc writing a record into it.)
The store's record is deleted only as the record that was checked (:func:`remove`: on S3 a
conditional delete naming its ETag, on local disk moved aside and checked), so one a
concurrent gc wrote there since (it dropped a later commit of that key) stays. (On an S3
server without conditional deletes the move is a copy + delete, and a record written in
between can still go: at worst a mirror that missed that later drop keeps, and serves, that
later result: never a wrong result, never one lost.)
A record whose commit the store itself still holds (a gc killed between the record and the
delete) drops nothing anywhere: it is removed, and no mirror's copy is deleted for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from . import layout, unchanged

if TYPE_CHECKING:
    from .backend import Backend
    from .manifest import Manifest
    from .store import Store

Ident = tuple[str, str]
"""Which commit of a manifest path: (created, run id)."""

RECORD_SECONDS = 7 * 86400.0
"""How long a drop record is kept at least (see the module docstring)."""
FORGET_SECONDS = 90 * 86400.0
"""How long a record is kept for a mirror it names that ``gc`` is not given (see the module docstring)."""


@dataclass(frozen=True)
class Drop:
    """One drop record: which commit of ``manifest`` was dropped, when, and the mirrors then."""

    manifest: str
    which: Ident
    time: float
    mirrors: tuple[str, ...] | None
    """Where the store's mirrors were (``mirror.place``); None in a record from before they
    were written (it is owed to the mirrors gc is given)."""


def ident(m: Manifest) -> Ident:
    return (m.created, m.run_id)


def record(backend: Backend, rel: str, m: Manifest, *, mirrors: Iterable[str] = (), durable: bool = True) -> bytes:
    """Record that the manifest ``m`` at ``rel`` is dropped (``mirrors``: where the store's
    mirrors are); the record's bytes."""
    doc = {"manifest": rel, "created": m.created, "run_id": m.run_id, "time": time.time(), "mirrors": sorted(mirrors)}
    data = json.dumps(doc).encode()
    backend.write_atomic(layout.dropped_path(rel), data, durable=durable)
    return data


def read(backend: Backend, rel: str) -> Drop | None:
    """The drop record of the manifest at ``rel``; None when there is none (or it is unreadable:
    an unreadable record drops nothing — at worst an entry comes back, never one is lost)."""
    try:
        return _parse(rel, bytes(backend.read(layout.dropped_path(rel))))
    except FileNotFoundError:
        return None


def _parse(rel: str, raw: bytes) -> Drop | None:
    try:
        doc = json.loads(raw)
        mirrors = doc.get("mirrors")
        owed = None if mirrors is None else tuple(str(u) for u in mirrors)
        return Drop(rel, (str(doc["created"]), str(doc["run_id"])), float(doc.get("time", 0.0)), owed)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _names(raw: bytes, d: Drop) -> bool:
    """True when the record ``raw`` is of the commit ``d`` names (a record of a later drop is not)."""
    theirs = _parse(d.manifest, raw)
    return theirs is not None and theirs.which == d.which


def remove(backend: Backend, d: Drop) -> bool:
    """Delete the record ``d`` if the one at its path still names that commit; True when deleted.
    A gc that dropped a later commit of that key meanwhile wrote its own record there: it stays.

    Where the store deletes conditionally (S3), the delete names the version read and checked;
    elsewhere the record is moved aside (one rename on local disk), checked, and put back
    unless it was ``d`` (a gc killed in between: the next gc puts it back, ``retention``)."""
    rrel = layout.dropped_path(d.manifest)
    read_tagged = getattr(backend, "read_tagged", None)
    try:
        got = read_tagged(rrel) if read_tagged is not None else None
    except FileNotFoundError:
        return False
    if got is not None and got.etag:
        return _names(got.data, d) and bool(backend.delete_tagged(rrel, got.etag))  # type: ignore[attr-defined]
    aside = layout.dropping_path(rrel)
    try:
        backend.move(rrel, aside)
    except FileNotFoundError:
        return False
    return settle_aside(backend, aside, rrel, d)


def settle_aside(backend: Backend, aside: str, rrel: str, d: Drop | None = None) -> bool:
    """A record gc moved aside from ``rrel`` (``remove``): deleted if it names ``d``'s commit; else put back,
    unless another record is at ``rrel`` by now (a later drop's: it stays). True when deleted."""
    try:
        raw = bytes(backend.read(aside))
    except FileNotFoundError:
        return False
    if d is not None and _names(raw, d):
        backend.delete(aside)
        return True
    backend.create(rrel, raw)  # no clobber: a record written there since is the later drop's
    backend.delete(aside)
    return False


def dropped(backend: Backend, rel: str) -> Ident | None:
    """The commit of ``rel`` that was dropped, if one was."""
    d = read(backend, rel)
    return None if d is None else d.which


def is_dropped(backend: Backend, rel: str, m: Manifest) -> bool:
    """True when ``m`` (read from a mirror, say) is the very commit of ``rel`` gc dropped."""
    return dropped(backend, rel) == ident(m)


def records(backend: Backend) -> Iterator[tuple[str, str]]:
    """``(manifest path, record path)`` of every drop recorded in a store."""
    for rel in backend.list(layout.DROPPED):
        if rel.endswith(".json"):
            yield layout.dropped_manifest(rel), rel


def holds(store: Store, rel: str, which: Ident) -> bool | None:
    """True when ``store`` holds that very commit at ``rel``; None when a damaged manifest is
    there (what it is can't be told)."""
    try:
        theirs = store._parse_manifest(rel)
    except FileNotFoundError:
        return False
    except (ValueError, TypeError, KeyError):
        return None
    return ident(theirs) == which


def apply(target: Store, rel: str, which: Ident, data: bytes) -> bool:
    """Drop in ``target`` (a mirror) what was dropped elsewhere: its record, then its copy of
    that very commit (not a later one); True when a copy was deleted."""
    target._backend.write_atomic(layout.dropped_path(rel), data, durable=target.durable)
    try:
        held = unchanged.read(target, rel)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return False
    if ident(held.manifest) != which:
        return False
    return unchanged.delete(target, rel, held)  # on S3 only the version read: a later copy pushed meanwhile stays


@dataclass(frozen=True)
class PruneReport:
    removed: int = 0
    kept: int = 0
    """Records old enough to go that were kept: a mirror was unreachable, not given to gc, or
    still held the commit (caught up now)."""


def prune(
    store: Store, *, older_than: float = RECORD_SECONDS, forget_after: float = FORGET_SECONDS, now: float | None = None
) -> PruneReport:
    """Remove the drop records no mirror needs any more (the rule in the module docstring)."""
    from .mirror import MIRROR_ERRORS, place

    now = time.time() if now is None else now
    listed = store._backend.scan(layout.DROPPED)  # a listing's times: the young records are not read
    aged = [layout.dropped_manifest(r) for r, st in listed if r.endswith(".json") and now - st.mtime >= older_than]
    old = [d for rel in aged if (d := read(store._backend, rel)) is not None and now - d.time >= older_than]
    if not old:
        return PruneReport()
    given = {place(m.url): m for m in (store.mirrors.mirrors if store.mirrors is not None else ())}
    targets: dict[str, Store | None] = {}
    removed = kept = 0
    for d in old:
        rrel = layout.dropped_path(d.manifest)
        here = holds(store, d.manifest, d.which)
        if here is None:  # a damaged manifest there: what it is can't be told, so the record stays
            kept += 1
            continue
        if here:  # the drop never happened (a gc killed between the record and the delete)
            removed += remove(store._backend, d)
            continue
        owed = set(given) | set(d.mirrors or ())
        if not owed <= set(given):
            if now - d.time < forget_after:
                kept += 1
                continue
            owed &= set(given)  # out of the configuration that long: removed from it
        clean = True
        for where in sorted(owed):
            if where not in targets:
                targets[where] = given[where].open(store, retry=True)
            target = targets[where]
            if target is None:
                clean = False
                continue
            try:
                theirs = read(target._backend, d.manifest)
                if theirs is None or theirs.which != d.which or holds(target, d.manifest, d.which) is not False:
                    apply(target, d.manifest, d.which, bytes(store._backend.read(rrel)))  # caught up now
                    clean = False  # (a damaged manifest there is kept, and so is the record, until verified)
            except MIRROR_ERRORS as e:
                given[where].failed(e, f"drop {d.manifest}", warn=False)
                targets[where] = None
                clean = False
        if not clean:
            kept += 1
            continue
        try:
            for where in sorted(owed):  # the mirrors' records first, the store's last
                remove(targets[where]._backend, d)  # type: ignore[union-attr]  (a later drop's record stays)
        except MIRROR_ERRORS as e:
            given[where].failed(e, f"drop record {rrel}", warn=False)
            targets[where] = None
            kept += 1
            continue
        if not remove(store._backend, d):  # a gc dropped a later commit there meanwhile: its record stays
            kept += 1
            continue
        removed += 1
    return PruneReport(removed, kept)
