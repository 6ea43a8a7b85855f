"""Garbage collection: drop the manifests a retention policy does not keep, then delete
objects no manifest references (and temp files of dead writers).

With a :class:`~pipeline.store.lifecycle.Retention` (keep policies per stage, see
``pipeline.store.keep``), ``gc`` first deletes the manifests the plan drops
(``lifecycle.plan``: never a pinned entry, a search's best-so-far record, a result the
latest successful run of a flow used, or the checkpoint a live run resumes from); their
objects are then candidates whatever their age. Without one, it only deletes objects.
A dropped manifest is recorded (``drops``), then deleted only as the very commit that was
checked: on S3 by a conditional delete naming the version read (``unchanged``), elsewhere
moved aside, checked and only then deleted. A commit of the same key that lands meanwhile
stays (or is put back), never deleted with it. Last, the drop records no mirror needs any
more are removed (``drops.prune``), each only as the record that was checked.

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
``free(store, objects)`` runs steps 2-3 over just the objects of manifests a caller has
deleted (a checkpointer's pruned checkpoints): those no manifest references go at once,
instead of waiting for a whole-store ``gc`` after the grace.
On S3, ``gc --dry-run`` (without a retention policy) takes the manifests and the objects they
name from the manifest index (``pipeline.store.manifest_index``), not a listing of every
manifest: a report, as the index says. ``gc`` itself never asks the index: it decides from
a full listing of the manifests, before and after the set-aside, and ends by rebuilding the
index from a listing (so what the index missed is in it from then on).
Empty checkpoint key directories older than ``grace_seconds`` go too (``remove_stale_empty``).
Temp files are removed when their writer (a process on this host) is dead, or, for temps of
other hosts, once older than ``max(grace_seconds, TEMP_SECONDS)``.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..errors import ConfigError, IntegrityError
from ..progress_bar import track
from . import drops, layout, unchanged
from .lifecycle import Plan, Retention, manifest_rel, plan
from .manifest import Manifest
from .mirror import place
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
    dropped_manifests: int = 0
    plan: Plan | None = field(default=None, repr=False)
    """What retention decided per manifest (None: no retention policy was given)."""
    indexed: bool = False
    """A dry run as the manifest index says (S3): objects written since the last ``gc`` by
    writers that never committed are not counted."""
    records: drops.PruneReport = drops.PruneReport()
    """Drop records removed (no mirror needs them any more) and kept (``drops.prune``)."""
    removed_dirs: int = 0
    """Empty checkpoint key directories removed (would be, ``dry_run``): those older than the
    grace period (a key whose checkpoints were all deleted; on object stores, none)."""


def _put_back(store: Store) -> None:
    """Objects an earlier sweep set aside and never finished with (it was killed) go back."""
    backend = store._backend
    for trashed in list(backend.list(layout.TRASH)):
        rel = layout.untrash(trashed)
        if rel is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            backend.move(trashed, rel)


def gc(
    store: Store,
    retention: Retention | None = None,
    *,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    record_seconds: float = drops.RECORD_SECONDS,
    forget_seconds: float = drops.FORGET_SECONDS,
) -> GcReport:
    """Drop the manifests ``retention`` does not keep, then delete unreferenced objects older
    than ``grace_seconds`` (any age for the dropped manifests' objects) and stale temp files;
    last, the drop records older than ``record_seconds`` no mirror needs (``drops.prune``; a
    mirror they name that gc is not given counts as removed after ``forget_seconds``)."""
    if not grace_seconds >= MIN_GRACE_SECONDS:
        raise ConfigError(f"gc: grace_seconds must be >= {MIN_GRACE_SECONDS}, got {grace_seconds!r}")
    backend = store._backend
    if not dry_run:
        _put_back(store)
        _settle_all(store)
    start = time.time()
    decided = plan(store, retention, now=start) if retention is not None and not retention.empty else None
    dropped = 0
    if decided is not None and not dry_run:
        dropped = sum(_drop(store, e.manifest) for e in decided.dropped)
    index = getattr(backend, "index", None)
    maybe: set[str] | None = None
    if dry_run and decided is None and index is not None:
        live, maybe = index.unreferenced()  # a report: as the index says (gc itself decides from listings)
    else:
        live = store.live_objects()
    if decided is not None and dry_run:
        live -= set(decided.freed)
    freed_now = set(decided.freed) if decided is not None else set()
    candidates: list[tuple[str, int]] = []
    young: dict[str, tuple[int, float]] = {}  # unreferenced, kept for the grace period
    temps = 0
    if maybe is not None:  # the index names the objects that may be unreferenced: no listing of them all
        scanned = sorted(maybe) + list(backend.list(layout.TMP))
    else:
        scanned = list(backend.list(layout.OBJECTS))
    for rel in track(scanned, "gc scan", unit="objects"):  # a bar if it proves long
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
        elif start - st.mtime >= grace_seconds or rel in freed_now:
            candidates.append((rel, st.size))
        else:
            young[rel] = (st.size, st.mtime)
    dirs = backend.remove_stale_empty(
        layout.CHECKPOINTS, layout.CHECKPOINT_DIR_DEPTH, start - grace_seconds, dry_run=dry_run
    )
    if dry_run:
        n = len(decided.dropped) if decided is not None else 0
        freed = sum(size for _, size in candidates)
        return GcReport(
            len(live), len(candidates), freed, temps, True, n, decided, indexed=maybe is not None, removed_dirs=dirs
        )
    deleted, freed, relive = _sweep(store, candidates, start, store.live_objects)
    if index is not None:  # what the deltas missed (older writers, a writer killed in between) is listed now
        index.relist({rel: kept for rel, kept in young.items() if rel not in relive})
    records = drops.prune(store, older_than=record_seconds, forget_after=forget_seconds, now=start)
    return GcReport(
        len(relive or live), deleted, freed, temps, False, dropped, decided, records=records, removed_dirs=dirs
    )


def free(store: Store, objects: Mapping[str, int] | Iterable[str]) -> tuple[int, int]:
    """Delete those of ``objects`` (paths of objects of manifests just deleted) that no
    manifest mentions, by gc's protocol; (count, bytes: as ``objects`` gives their sizes, when it
    does, else as a ``stat`` says). One read of the manifests, after
    the set-aside: an object some manifest needs is put back then (and a reader that wants
    it meanwhile finds it set aside and puts it back itself, as during any gc).

    "Mentions" is a byte search of every manifest for the object ids, not a parse: cheaper
    than ``live_objects()`` and more cautious (a damaged manifest naming an id keeps it)."""
    backend = store._backend
    candidates = []
    sizes = objects if isinstance(objects, Mapping) else None
    for rel in objects:
        if not layout.is_object(rel):
            continue
        if sizes is not None:  # the sizes the manifests gave: no stat (one gone already is not moved aside)
            candidates.append((rel, sizes[rel]))
            continue
        try:
            candidates.append((rel, backend.stat(rel).size))
        except FileNotFoundError:
            continue
    if not candidates:
        return 0, 0
    mentioned = functools.partial(_mentioned, store, [r for r, _ in candidates])
    deleted, freed, _ = _sweep(store, candidates, time.time(), mentioned, leftovers=False)
    return deleted, freed


def _mentioned(store: Store, rels: list[str]) -> set[str]:
    """The object paths among ``rels`` whose id some manifest's bytes contain."""
    ids = {layout.object_id(rel).encode(): rel for rel in rels}  # type: ignore[union-attr]
    found: set[str] = set()
    backend = store._backend
    for root in layout.MANIFEST_ROOTS:
        listed = (rel for rel in backend.list(root) if rel.endswith(".json"))
        for _rel, got in backend.read_many(listed):  # (locally: each directory opened once)
            if isinstance(got, FileNotFoundError):
                continue
            if isinstance(got, IntegrityError):  # behind a symbolic link: count it as mentioning everything
                return set(rels)
            if isinstance(got, BaseException):
                raise got
            raw = bytes(got)
            found.update(path for oid, path in ids.items() if oid in raw)
            if len(found) == len(ids):
                return found
    return found


def _sweep(
    store: Store,
    candidates: list[tuple[str, int]],
    start: float,
    live_now: Callable[[], set[str]],
    *,
    leftovers: bool = True,
) -> tuple[int, int, set[str]]:
    """Set ``candidates`` aside, ask ``live_now()`` again (manifests committed meanwhile count),
    put back what is live now, delete the rest: (deleted, bytes freed, the live set it used).
    Last, the empty directories under ``gc/`` go: all of them (``leftovers``: those of earlier
    sweeps too), else just this sweep's (no listing)."""
    backend = store._backend
    sweep = f"{int(start)}-{uuid.uuid4().hex[:12]}"
    aside = []
    backend.make_parents(layout.trash_path(sweep, rel) for rel, _ in candidates)  # gc/<sweep>/, durable first
    for rel, size in candidates:
        with contextlib.suppress(FileNotFoundError):
            backend.move(rel, layout.trash_path(sweep, rel), made=True)
            aside.append((rel, size))
    live = live_now() if aside else set()
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
    within = None if leftovers else [layout.trash_path(sweep, rel) for rel, _ in candidates]
    backend.remove_empty(layout.TRASH, within)
    return deleted, freed, live


def _drop(store: Store, planned: Manifest) -> bool:
    """Delete a manifest the plan dropped, unless what is there now is another commit (a
    writer committed the same key again since the plan was made).

    Where the store deletes conditionally (S3's ``If-Match``, see ``unchanged``) the delete
    names the version that was read and checked: a commit of the same key landing after
    that read is another version and stays. Elsewhere the manifest is moved aside first
    (one rename on local disk) and what was moved is checked: a commit that landed after
    the read is put back, never deleted. A gc killed with a manifest aside: the next gc
    settles it (``_settle_aside``)."""
    rel = manifest_rel(planned)
    try:
        held = unchanged.read(store, rel)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return False
    if held.manifest != planned:
        return False
    mirrors = [place(m.url) for m in store.mirrors.mirrors] if store.mirrors is not None else []
    data = drops.record(store._backend, rel, planned, mirrors=mirrors, durable=store.durable)  # first: never unrecorded
    if held.tag is not None:
        if not unchanged.delete(store, rel, held):
            return False
    elif not _move_and_settle(store, rel):
        return False
    if store.mirrors is not None:
        store.mirrors.dropped(store, rel, drops.ident(planned), data)
    return True


def _move_and_settle(store: Store, rel: str) -> bool:
    """Move the manifest at ``rel`` aside and settle it: True when it was the dropped one."""
    aside = layout.dropping_path(rel)
    try:
        store._backend.move(rel, aside)
    except FileNotFoundError:
        return False
    return _settle_aside(store, aside, rel)


def _settle_aside(store: Store, aside: str, rel: str) -> bool:
    """A manifest gc moved aside from ``rel``: deleted if it is the commit the drop record
    names; else (a writer's later commit, or one that can't be read) put back, unless another
    commit is at ``rel`` by now (then it is superseded). True when it was the dropped one."""
    backend = store._backend
    try:
        raw = bytes(backend.read(aside))
    except FileNotFoundError:
        return False
    try:
        moved: Manifest | None = store._check_manifest(rel, raw)
    except (ValueError, TypeError, KeyError):
        moved = None
    if moved is not None and drops.dropped(backend, rel) == drops.ident(moved):
        backend.delete(aside)
        return True
    if not backend.exists(rel):
        backend.move(aside, rel)
    else:
        backend.delete(aside)
    return False


def _settle_all(store: Store) -> None:
    """Manifests (and drop records) an earlier gc moved aside and was killed before it settled
    (see ``_drop``, ``drops.remove``)."""
    for rel in list(store._backend.list(layout.DROPPED)):
        origin = layout.dropping_manifest(rel)
        if origin is not None and origin.startswith(layout.DROPPED + "/"):
            drops.settle_aside(store._backend, rel, origin)  # a record: put back (a later gc prunes it again)
        elif origin is not None:
            _settle_aside(store, rel, origin)
