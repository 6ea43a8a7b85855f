"""Mirror maintenance: ``status`` (what is missing where), ``push`` / ``pull`` (copy what the
other side lacks, objects first and manifests last) and ``repair`` (restore what ``verify``
found broken from the mirrors). The commands of ``python -m pipeline mirror`` and
``verify --repair``.

Stores are compared by name (a corrupt copy counts as present until a ``verify`` of its
store quarantines it: ``check=True``). Every object copied is re-hashed on the way; an entry
whose objects could not all be copied is not copied either. Pulling into a store brings a
key's training checkpoints whole or not at all (never a step into a set the store has).
"""

from __future__ import annotations

import concurrent.futures
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import StoreError
from ..progress_bar import progress
from . import drops, layout
from .local import LocalBackend
from .manifest import Manifest
from .mirror import MIRROR_ERRORS, Mirror, Mirrors, plain
from .objects import leaf_path
from .tree import Leaf, leaves

if TYPE_CHECKING:
    from .store import Store

COPY_THREADS = 16
"""Objects :func:`push` / :func:`pull` copy at once to or from an object store (which answers
in parallel); 4 between local directories."""


@dataclass(frozen=True)
class Side:
    """What one store lacks of the other: entries (manifests) and objects, with their bytes."""

    entries: int = 0
    entry_bytes: int = 0
    objects: int = 0
    object_bytes: int = 0
    tags: int = 0


@dataclass(frozen=True)
class MirrorStatus:
    url: str
    reachable: bool
    missing_in_mirror: Side = Side()
    missing_in_primary: Side = Side()
    error: str = ""
    dropped_in_mirror: int = 0
    """Entries gc dropped from the store that the mirror still holds (``push`` drops them)."""

    @property
    def in_sync(self) -> bool:
        return (self.reachable and self.missing_in_mirror == Side() and self.missing_in_primary == Side()
                and not self.dropped_in_mirror)  # fmt: skip


@dataclass(frozen=True)
class SyncReport:
    """What :func:`push` or :func:`pull` copied into one store, and what it could not copy."""

    url: str
    entries: int = 0
    objects: int = 0
    bytes: int = 0
    failed: tuple[str, ...] = ()
    """Entries not copied: unreachable, or an object that verifies nowhere."""
    tags: int = 0
    dropped: int = 0
    """Entries dropped in the receiving mirror because gc dropped them from the store (push)."""


@dataclass
class _Catalog:
    """One store's manifests (path -> manifest, only those that check) and object paths."""

    manifests: dict[str, Manifest]
    objects: set[str]
    tags: set[str]
    drops: set[str]
    """Paths of its drop records."""


def _catalog(store: Store) -> _Catalog:
    found = {rel: m for rel, m, _ in store._walk(quarantine=False) if m is not None and m.format != 1}
    objects = {r for r in store._backend.list(layout.OBJECTS) if layout.is_object(r)}
    tags = {r for r in store._backend.list(layout.TAGS) if r.endswith(".json")}
    return _Catalog(found, objects, tags, {r for _, r in drops.records(store._backend)})


_EMPTY = _Catalog({}, set(), set(), set())


def _dropped_from(primary: Store, mine: _Catalog, theirs: _Catalog) -> dict[str, tuple[str, drops.Ident]]:
    """Entries the primary's gc dropped that the mirror still holds, or whose record it lacks:
    manifest path -> (record path, the commit dropped)."""
    out = {}
    for rrel in mine.drops:
        rel = layout.dropped_manifest(rrel)
        held = theirs.manifests.get(rel)
        if rrel in theirs.drops and held is None:
            continue  # recorded there, and gone
        which = drops.dropped(primary._backend, rel)
        if which is None or (rrel in theirs.drops and drops.ident(held) != which):
            continue  # what the mirror holds there is a later commit
        if rel in mine.manifests and drops.ident(mine.manifests[rel]) == which:
            continue  # the store holds that very commit still: a gc was killed before its delete
        out[rel] = (rrel, which)
    return out


def _lacks(have: _Catalog, other: _Catalog) -> tuple[dict[str, Manifest], dict[str, Leaf]]:
    """Entries of ``have`` absent from ``other`` and objects ``have``'s entries need that
    ``other`` lacks (also those of entries both hold)."""
    entries = {rel: m for rel, m in have.manifests.items() if rel not in other.manifests}
    objects: dict[str, Leaf] = {}
    for m in have.manifests.values():
        for leaf in leaves(m.outputs):
            rel = leaf_path(leaf)
            if rel not in other.objects:
                objects[rel] = leaf
    return entries, objects


def _side(entries: dict[str, Manifest], objects: dict[str, Leaf], tags: int = 0) -> Side:
    return Side(
        len(entries),
        sum(m.bytes for m in entries.values()),
        len(objects),
        sum(leaf.bytes for leaf in objects.values()),
        tags,
    )


def status(primary: Store, mirrors: Mirrors) -> list[MirrorStatus]:
    """For each mirror: what it lacks of the primary and the primary of it (by name: a
    corrupt copy counts as present until a ``verify`` of its store quarantines it)."""
    mine = _catalog(primary)
    out = []
    for mirror in mirrors.mirrors:
        try:
            target = mirror.open(primary, retry=True)
            if target is None and mirror.absent:  # not created yet: it lacks everything
                out.append(MirrorStatus(mirror.url, True, _side(*_lacks(mine, _EMPTY), len(mine.tags)), Side(),
                                        error=mirror.last_error))  # fmt: skip
                continue
            if target is None:
                raise StoreError(mirror.last_error or "unreachable")
            theirs = _catalog(target)
        except MIRROR_ERRORS as e:
            out.append(MirrorStatus(mirror.url, False, error=str(e)))
            continue
        stale = {rel for rel, (_, which) in _dropped_from(primary, mine, theirs).items()
                 if rel in theirs.manifests and drops.ident(theirs.manifests[rel]) == which}  # fmt: skip
        entries, objects = _lacks(theirs, mine)
        entries = {rel: m for rel, m in entries.items() if rel not in stale}
        out.append(MirrorStatus(mirror.url, True, _side(*_lacks(mine, theirs), len(mine.tags - theirs.tags)),
                                _side(entries, objects, len(theirs.tags - mine.tags)),
                                dropped_in_mirror=len(stale)))  # fmt: skip
    return out


def push(primary: Store, mirrors: Mirrors, *, check: bool = False) -> list[SyncReport]:
    """Copy to every mirror what it lacks of the primary, objects first and manifests last.
    ``check``: first verify each mirror (re-hash; its corrupt copies are quarantined, so
    they are copied again)."""
    return [_sync(primary, m, m.url, check, into_primary=False) for m in mirrors.mirrors]


def pull(primary: Store, mirrors: Mirrors, *, check: bool = False) -> list[SyncReport]:
    """Copy into the primary what it lacks of each mirror, mirror by mirror (``check``:
    verify the primary first)."""
    return [_sync(primary, m, primary.url, check, into_primary=True) for m in mirrors.mirrors]


def _sync(primary: Store, place: Mirror, url: str, check: bool, into_primary: bool) -> SyncReport:
    mirror = place.open(primary, retry=True)
    if mirror is None:
        return SyncReport(url, failed=(f"mirror {place.url} is unreachable: {place.last_error}",))
    source, target = (mirror, primary) if into_primary else (primary, mirror)
    try:
        if check:
            target.verify()
        have, other = _catalog(source), _catalog(target)
    except MIRROR_ERRORS as e:
        return SyncReport(url, failed=(f"unreachable: {e}",))
    entries, objects = _lacks(have, other)
    dropped = 0
    if into_primary:  # never an entry the store's gc dropped
        entries = {rel: m for rel, m in entries.items() if not drops.is_dropped(primary._backend, rel, m)}
    else:  # the store's drops, in a mirror that missed them
        for rel, (rrel, which) in _dropped_from(primary, have, other).items():
            dropped += drops.apply(target, rel, which, plain(primary._backend.read(rrel)))
    if into_primary:  # a checkpoint set is pulled whole or not at all: never steps into a set the store has
        sets = {rel.rpartition("/")[0] for rel, m in other.manifests.items() if m.step is not None}
        entries = {rel: m for rel, m in entries.items() if m.step is None or rel.rpartition("/")[0] not in sets}
        needed = {leaf_path(leaf) for m in [*entries.values(), *other.manifests.values()] for leaf in leaves(m.outputs)}
        objects = {rel: leaf for rel, leaf in objects.items() if rel in needed}
    what = "mirror pull" if into_primary else "mirror push"
    bad = _copy_objects(source, target, objects, what)
    failed = []
    manifests = {}
    for rel, m in entries.items():
        broken = [leaf_path(leaf) for leaf in leaves(m.outputs) if leaf_path(leaf) in bad]
        if broken:  # never a manifest without its objects
            failed.append(f"{rel}: {broken[0]}: {bad[broken[0]]}")
        else:
            manifests[rel] = m
    not_copied = _copy_files(source, target, manifests, what)
    failed += [f"{rel}: {why}" for rel, why in not_copied.items()]
    tags = sorted(have.tags - other.tags)  # tags it lacks (never a tag deleted: a missed untag pins more, not less)
    failed += [f"{rel}: {why}" for rel, why in _copy_files(source, target, tags, what).items()]
    copied = {rel: leaf for rel, leaf in objects.items() if rel not in bad}
    return SyncReport(
        url,
        entries=len(manifests) - len(not_copied),
        objects=len(copied),
        bytes=sum(leaf.bytes for leaf in copied.values()),
        failed=tuple(failed),
        tags=len(tags),
        dropped=dropped,
    )


def _parallel(
    fn: Any, items: Iterable[Any], threads: int, what: str = "mirror copy", sizes: dict[Any, int] | None = None
) -> dict[Any, str]:
    """Run ``fn(item)`` for each item, ``threads`` at a time; item -> error of those that failed.
    A progress bar (``what``; in bytes with ``sizes``, else in items) once it proves long."""
    failed: dict[Any, str] = {}
    unit = "bytes" if sizes is not None else "items"
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        total = sum(sizes[item] for item in futures.values()) if sizes is not None else len(futures)
        with progress(what, total, unit=unit) as bar:
            for fut in concurrent.futures.as_completed(futures):
                try:
                    fut.result()
                except MIRROR_ERRORS as e:
                    failed[futures[fut]] = str(e)
                bar.advance(sizes[futures[fut]] if sizes is not None else 1)
    return failed


def _threads(store: Store) -> int:
    return 4 if isinstance(store._backend, LocalBackend) else COPY_THREADS


def _copy_objects(source: Store, target: Store, objects: dict[str, Leaf], what: str) -> dict[str, str]:
    """Copy each object (verified on the way; repaired in ``source`` from its mirrors if it
    has any); path -> why, for those that could not be copied."""

    def one(rel: str) -> None:
        target._backend.write_atomic(rel, plain(source.read_verified(objects[rel])))

    sizes = {rel: leaf.bytes for rel, leaf in objects.items()}
    return _parallel(one, objects, max(_threads(source), _threads(target)), f"{what} objects", sizes)


def _copy_files(source: Store, target: Store, rels: Iterable[str], what: str) -> dict[str, str]:
    """Copy small files as they are (manifests, tags); path -> why, for those not copied."""

    def one(rel: str) -> None:
        target._backend.write_atomic(rel, plain(source._backend.read(rel)))

    return _parallel(one, rels, max(_threads(source), _threads(target)), f"{what} manifests")


@dataclass(frozen=True)
class RepairReport:
    """What ``verify --repair`` restored from the mirrors and what no mirror could give back."""

    repaired: tuple[str, ...] = ()
    unrepaired: tuple[str, ...] = ()


def repair(primary: Store, problems: Iterable[Any]) -> RepairReport:
    """Restore each problem ``Store.verify()`` found (a corrupt or missing object, a bad
    manifest) from the primary's mirrors; a restored manifest's objects are checked too."""
    mirrors = primary.mirrors
    repaired: list[str] = []
    unrepaired: list[str] = []
    if mirrors is None:
        return RepairReport((), tuple(str(p) for p in problems))
    leaves_of: dict[str, Leaf] = {}
    for _rel, m, _ in primary._walk(quarantine=False):
        if m is not None:
            for leaf in leaves(m.outputs):
                leaves_of[leaf.object] = leaf
    for p in problems:
        if p.kind == "bad manifest":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = mirrors.fetch_manifest(primary, p.what, damaged=False)
            if m is None:
                unrepaired.append(str(p))
                continue
            repaired.append(str(p))
            for leaf in leaves(m.outputs):
                leaves_of.setdefault(leaf.object, leaf)
                if not primary._backend.exists(leaf_path(leaf)):
                    _repair_object(primary, mirrors, leaf, f"missing object {leaf.object}", repaired, unrepaired)
        elif p.what in leaves_of:
            _repair_object(primary, mirrors, leaves_of[p.what], str(p), repaired, unrepaired)
        else:
            unrepaired.append(str(p))
    return RepairReport(tuple(repaired), tuple(unrepaired))


def _repair_object(primary: Store, mirrors: Mirrors, leaf: Leaf, what: str, done: list[str], not_done: list[str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = mirrors.fetch_object(primary, leaf)
    (done if buf is not None else not_done).append(what)


__all__ = ["MirrorStatus", "Side", "SyncReport", "RepairReport", "status", "push", "pull", "repair"]
