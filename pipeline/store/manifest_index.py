"""An index of the manifests of an S3 store, so a reader need not list every manifest key.

Listing 100k keys takes ~10 s on a local SeaweedFS server; ``ls`` needs only which manifests
there are and when each was written (``listing`` reads and checks just the page it shows).
The index gives that from two kinds of small immutable object:

- a *delta* record per manifest write or delete, ``index/deltas/<ms>-<host>-<pid>-<unique>.json``
  (one object each: S3 has no append, so concurrent writers never overwrite each other's).
  The backend writes the ``put`` record *before* the manifest's PUT (its time is then after
  the manifest's ``created`` and before the manifest can be seen) and the ``gone`` record
  *after* a manifest is deleted or moved away. A writer that crashes in between leaves an
  entry for a manifest that is not there (a reader finds it missing, as if just deleted) or
  keeps one for a manifest that went: the index may hold too much, never too little, of what
  this code wrote.
- a *snapshot*, ``index/snapshots/<mark>-<unique>.idx``: every manifest (path, time written,
  ETag, the objects it names) as of its mark, with a checksum.

A reader takes the newest snapshot and applies, in name order, every delta named after
``mark - WINDOW`` (one listing with ``StartAfter``): a delta named up to ``WINDOW`` before a
snapshot's writer read the deltas, but not yet visible then (a writer's clock behind, a slow
PUT), is still applied. Applying deltas is idempotent (each states a path's whole entry).
Once many deltas precede that window, a reader writes a new snapshot (compaction) and
deletes the snapshots before the one it read and the deltas no reader of those needs; a
reader whose snapshot was deleted while it listed starts again (a HEAD after the listing
says so, and deltas are deleted only after the snapshots that needed them).

No snapshot, a damaged one, or one whose last full listing is older than ``FULL_EVERY``: the
manifests are listed (the store's own listing, as without an index) and a snapshot is built
from that listing. So manifests the deltas never told of (written by an older version of
this code, copied in by another tool, a writer killed between its manifest and a delta it
never wrote) are found by the next full listing at the latest; ``gc`` (not ``--dry-run``)
ends with one.

What the index is *not*: an authority. ``ls`` reads and checks every manifest it shows
(a missing one is left out), ``gc`` decides what to delete from a full listing of the store,
and a lookup reads the manifest's own path. The index only says which manifests to consider.
"""

from __future__ import annotations

import array
import bisect
import functools
import hashlib
import itertools
import json
import operator
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, TypeVar

import xxhash

from . import layout, manifest_cache
from .backend import describe_oserror
from .dir_times import DirTimes

if TYPE_CHECKING:
    from .remote import FsspecBackend

WINDOW_MS = 30_000
"""How late (ms) a delta may become visible after the time its name carries and still be seen."""
COMPACT_AT = 500
"""Deltas before the re-read window past which a reader writes a new snapshot."""
FULL_EVERY = 24 * 3600.0
"""Seconds after which a reader lists the manifests again rather than trust the deltas alone."""
_FORMAT = 2
_READERS = 16
_GONE = object()


class Entry(NamedTuple):
    """One manifest as the index knows it."""

    written: float
    """Seconds since the epoch, not before its ``created`` (less ``listing.SKEW``)."""
    etag: str
    """The MD5 of its bytes when written ('' when unknown)."""
    objects: str | None
    """The object paths it names, space-separated (None: not known; read the manifest)."""


class _Dir:
    """The manifests of one directory, newest-written first (ties: by name, descending)."""

    __slots__ = ("names", "times", "etags", "objects")

    def __init__(self, names: list[str], times: list[float], etags: list[str], objects: list[str]) -> None:
        self.names, self.times, self.etags, self.objects = names, times, etags, objects

    @classmethod
    def of(cls, entries: dict[str, Entry]) -> _Dir:
        rows = sorted(((e.written, name, e.etag, "?" if e.objects is None else e.objects)
                       for name, e in entries.items()), reverse=True)  # fmt: skip
        return cls([r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows])

    def entries(self) -> dict[str, Entry]:
        return {n: Entry(t, e, None if o == "?" else o)
                for n, t, e, o in zip(self.names, self.times, self.etags, self.objects)}  # fmt: skip

    def update(self, changes: dict[str, Entry | None]) -> list[str]:
        """Drop the names ``changes`` holds, then put back those it gives an entry, in order;
        the objects the dropped entries named (space-separated, as kept)."""
        dropped: list[str] = []
        if not changes.keys().isdisjoint(self.names):
            dropped = [o for n, o in zip(self.names, self.objects) if n in changes and o not in ("?", "")]
            keep = [i for i, n in enumerate(self.names) if n not in changes]
            self.names, self.times = [self.names[i] for i in keep], [self.times[i] for i in keep]
            self.etags, self.objects = [self.etags[i] for i in keep], [self.objects[i] for i in keep]
        for name, e in changes.items():
            if e is None:
                continue
            at = bisect.bisect_left(self.times, -e.written, key=operator.neg)  # times descend
            self.names.insert(at, name)
            self.times.insert(at, e.written)
            self.etags.insert(at, e.etag)
            self.objects.insert(at, "?" if e.objects is None else e.objects)
        return dropped


@dataclass
class _Snapshot:
    rel: str
    mark: int
    """Milliseconds: every delta named up to ``mark - WINDOW_MS`` is in it."""
    full: int
    """Milliseconds: when the listing this line of snapshots started from was taken."""
    dirs: dict[str, _Dir] = field(default_factory=dict)
    orphans: dict[str, tuple[int, float]] | None = None
    """Objects no manifest named at the last ``gc`` (path -> size, time written); None: not known."""
    released: set[str] = field(default_factory=set)
    """Objects named by manifests replaced or deleted since the last ``gc`` (they may be unreferenced)."""

    def apply(self, bodies: Iterable[bytes | None]) -> None:
        """Apply delta records in order (the last one of each path counts)."""
        touched: dict[str, dict[str, Entry | None]] = {}
        for body in bodies:
            change = _change(body)
            if change is not None:
                head, _, name = change[0].rpartition("/")
                changes = touched.setdefault(head, {})
                changes.pop(name, None)  # (the last change of a name is the one that counts)
                changes[name] = change[1]
        for head, changes in touched.items():
            for objects in self.dirs.setdefault(head, _Dir([], [], [], [])).update(changes):
                self.released.update(objects.split(" "))

    def entries(self) -> dict[str, Entry]:
        return {f"{head}/{name}": e for head, d in self.dirs.items() for name, e in d.entries().items()}

    def encode(self) -> bytes:
        heads = sorted(self.dirs)
        parts = [
            "\n".join(n for h in heads for n in self.dirs[h].names).encode(),
            array.array("d", [t for h in heads for t in self.dirs[h].times]).tobytes(),
            "\n".join(e for h in heads for e in self.dirs[h].etags).encode(),
            "\n".join(o for h in heads for o in self.dirs[h].objects).encode(),
        ]
        if self.orphans is not None:
            parts.append("\n".join(f"{rel} {size} {t!r}" for rel, (size, t) in sorted(self.orphans.items())).encode())
            parts.append("\n".join(sorted(self.released)).encode())
        body = b"".join(parts)
        counts = [[h, len(self.dirs[h].names)] for h in heads]
        head = {"format": _FORMAT, "mark": self.mark, "full": self.full, "sizes": [len(p) for p in parts],
                "dirs": counts, "xxh3": xxhash.xxh3_128_hexdigest(body)}  # fmt: skip
        return json.dumps(head).encode() + b"\n" + body


_F = TypeVar("_F", bound=Callable[..., Any])


def _reads(fn: _F) -> _F:
    """A reader of the index: a server that does not answer is the store's one clear error
    (the index reads through the S3 reader, not through the backend that translates it)."""

    @functools.wraps(fn)
    def wrapper(self: ManifestIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except ConnectionError as e:
            raise describe_oserror(e, "the manifest index", self.backend.url, "read") from e

    return wrapper  # type: ignore[return-value]


class ManifestIndex:
    """The index of the manifests of one S3 store (see the module docstring)."""

    def __init__(self, backend: FsspecBackend) -> None:
        self.backend = backend
        self.reader = backend._reader

    # -- writers -------------------------------------------------------------------------
    def put(self, rel: str, data: bytes) -> None:
        """Record that the manifest ``data`` is about to be written at ``rel`` (before its PUT)."""
        now = time.time()
        record = {"put": rel, "written": now, "etag": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                  "objects": _objects_named(data)}  # fmt: skip
        self.backend._put_raw(layout.index_delta(int(now * 1000)), json.dumps(record).encode())

    def gone(self, rel: str) -> None:
        """Record that the manifest at ``rel`` was deleted or moved away (after it was)."""
        now = time.time()
        self.backend._put_raw(layout.index_delta(int(now * 1000)), json.dumps({"gone": rel}).encode())

    # -- readers -------------------------------------------------------------------------
    def entries(self) -> dict[str, Entry]:
        """Every manifest the index knows of now, by path (see the module docstring)."""
        return self.current().entries()

    @_reads
    def current(self) -> _Snapshot:
        """The index as of now: the newest snapshot with the deltas after its mark applied."""
        for _attempt in range(4):
            snapshots = sorted(r.rel for r in self.reader.list(layout.INDEX_SNAPSHOTS) if layout.index_time(r.rel))
            snapshot = self._read_snapshot(snapshots[-1]) if snapshots else None
            if snapshot is _GONE:  # deleted since it was listed (a newer one is there)
                continue
            if snapshot is None or time.time() * 1000 - snapshot.full > FULL_EVERY * 1000:
                self.rebuild(snapshots)
                continue
            after = layout.index_deltas_after(snapshot.mark - WINDOW_MS)
            deltas = list(self.reader.list_after(layout.INDEX_DELTAS, after))
            bodies = self._bodies(deltas)
            if not self.backend.exists(snapshot.rel):  # compacted meanwhile: deltas it needs may be gone
                continue
            snapshot.apply(bodies.get(d.rel) for d in deltas)
            settled = int(time.time() * 1000) - 2 * WINDOW_MS
            if sum(1 for d in deltas if (layout.index_time(d.rel) or 0) < settled) > COMPACT_AT:
                self._compact(snapshot, snapshots)
            return snapshot
        raise OSError(f"the manifest index of {self.backend.url} kept changing while it was read")

    def _read_snapshot(self, rel: str) -> Any:
        """The snapshot at ``rel``; None when damaged, ``_GONE`` when not there."""
        try:
            data = self.reader.get(rel).data
        except FileNotFoundError:
            return _GONE
        try:
            return _parse(rel, data)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            warnings.warn(
                f"manifest index {rel} in {self.backend.url} is damaged ({e}): listing the manifests", stacklevel=4
            )
            return None

    def _bodies(self, deltas: list[Any]) -> dict[str, bytes]:
        """The bytes of each delta record (the manifest cache's, when it holds that version)."""
        cache = self.backend._cache
        found = cache.get_many({d.rel: d.etag for d in deltas}) if cache is not None else {}
        wanted = [d.rel for d in deltas if d.rel not in found]

        def one(rel: str) -> tuple[str, Any]:
            try:
                return rel, self.reader.get(rel)
            except FileNotFoundError:
                return rel, None

        if wanted:
            with ThreadPoolExecutor(min(_READERS, len(wanted)), thread_name_prefix="index-read") as pool:
                got = [(rel, g) for rel, g in pool.map(one, wanted) if g is not None]
            if cache is not None:
                cache.put_many((rel, g.etag, g.data) for rel, g in got)
            found.update((rel, g.data) for rel, g in got)
        return found

    # -- snapshots ------------------------------------------------------------------------
    @_reads
    def rebuild(
        self,
        older: Iterable[str] = (),
        known: dict[str, Entry] | None = None,
        orphans: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        """List every manifest and write a snapshot of that listing (deleting ``older`` ones).
        ``known``: entries believed so far; the objects of one whose ETag the listing shows
        still are kept (not to read the manifest again for them). ``orphans``: the objects no
        manifest named, as a full listing of the objects just found (``gc``)."""
        started = int(time.time() * 1000)
        known = known or {}
        by_dir: dict[str, dict[str, Entry]] = {}
        for root in layout.MANIFEST_ROOTS:
            for item in self.reader.list(root):
                if layout.is_manifest(item.rel):
                    was = known.get(item.rel)
                    objects = was.objects if was is not None and was.etag == item.etag else None
                    head, _, name = item.rel.rpartition("/")
                    by_dir.setdefault(head, {})[name] = Entry(item.mtime, item.etag, objects)
        if orphans is not None:  # gc: it has just read every manifest (cached): note what each names
            self._learn_objects(by_dir)
        mark = started - WINDOW_MS
        dirs = {head: _Dir.of(entries) for head, entries in by_dir.items()}
        released = set()  # what known manifests that went or changed named (deleted since ``orphans`` was taken)
        for rel, was in known.items():
            head, _, name = rel.rpartition("/")
            now = by_dir.get(head, {}).get(name)
            if was.objects and (now is None or now.etag != was.etag):
                released.update(was.objects.split(" "))
        snapshot = _Snapshot("", mark, started, dirs, orphans, released if orphans is not None else set())
        self._write(snapshot, older, prune_before=mark - WINDOW_MS)

    def _learn_objects(self, by_dir: dict[str, dict[str, Entry]]) -> None:
        """Fill in the objects of the entries that lack them, reading their manifests (the
        manifest cache's bytes when the ETag just listed is cached)."""
        unknown = {f"{head}/{name}": e for head, entries in by_dir.items() for name, e in entries.items()
                   if e.objects is None}  # fmt: skip
        for rel, e in unknown.items():
            if e.etag:
                self.backend._listed[rel] = e.etag
        for rel, raw in self.backend.read_many(sorted(unknown)):
            if isinstance(raw, BaseException):
                continue  # gone since, or unreadable: left unknown (a dry run reads it)
            named = _objects_named(bytes(raw))
            if named is not None and manifest_cache.is_version(unknown[rel].etag, bytes(raw)):
                head, _, name = rel.rpartition("/")
                by_dir[head][name] = unknown[rel]._replace(objects=" ".join(named))

    @_reads
    def relist(self, orphans: dict[str, tuple[int, float]] | None = None) -> None:
        """Rebuild the index from a full listing now (``gc`` does, after its sweep, with the
        unreferenced objects it kept)."""
        snapshots = sorted(r.rel for r in self.reader.list(layout.INDEX_SNAPSHOTS) if layout.index_time(r.rel))
        try:
            known = self.entries()
        except OSError:
            known = {}
        self.rebuild(snapshots, known, orphans)

    def _compact(self, snapshot: _Snapshot, snapshots: list[str]) -> None:
        """A snapshot of ``snapshot`` with the deltas applied; the snapshots before ``snapshot``
        go, and the deltas none of its readers lists (named before its mark - WINDOW)."""
        now = int(time.time() * 1000)
        older = [r for r in snapshots if r != snapshot.rel]
        again = _Snapshot("", now - WINDOW_MS, snapshot.full, snapshot.dirs, snapshot.orphans, snapshot.released)
        self._write(again, older, snapshot.mark - WINDOW_MS)

    def _write(self, snapshot: _Snapshot, older: Iterable[str], prune_before: int) -> None:
        """Write ``snapshot``, then delete the ``older`` snapshots, then the deltas named before
        ``prune_before`` (in that order: a reader of a deleted snapshot starts again)."""
        self.backend._put_raw(layout.index_snapshot(snapshot.mark), snapshot.encode())
        self.backend._delete_raw(list(older))
        cutoff = layout.index_deltas_after(prune_before)
        old = []
        for item in self.reader.list_after(layout.INDEX_DELTAS, ""):
            if item.rel >= cutoff:
                break
            old.append(item.rel)
        for start in range(0, len(old), 1000):
            self.backend._delete_raw(old[start : start + 1000])

    @_reads
    def live_objects(self) -> set[str]:
        """The object paths the manifests the index knows of name (see ``unreferenced``)."""
        return self.unreferenced()[0]

    @_reads
    def unreferenced(self) -> tuple[set[str], set[str] | None]:
        """(the objects the manifests the index knows of name, the objects that may be named by
        none: left unreferenced at the last ``gc``, or named by a manifest replaced or deleted
        since; None when no ``gc`` told). For ``gc --dry-run``: as the index says, each
        manifest whose objects it does not know read (its cached bytes when the ETag the
        index has is cached). Never the basis of a deletion: ``gc`` lists the store."""
        current = self.current()
        live: set[str] = set()
        unknown = []
        for rel, e in current.entries().items():
            if e.objects is None:
                unknown.append(rel)
                if e.etag:
                    self.backend._listed[rel] = e.etag
            elif e.objects:
                live.update(e.objects.split(" "))
        for _rel, raw in self.backend.read_many(sorted(unknown)):
            if isinstance(raw, FileNotFoundError):
                continue
            if isinstance(raw, BaseException):
                raise raw
            live.update(_objects_named(bytes(raw)) or ())
        if current.orphans is None:
            return live, None
        return live, (set(current.orphans) | current.released) - live

    # -- what ``listing`` asks ------------------------------------------------------------
    @_reads
    def json_times(self, prefix: str) -> list[DirTimes]:
        """The manifests under ``prefix`` by directory, newest-written first (as ``dir_times``)."""
        prefix = prefix.strip("/")
        dirs = self.current().dirs
        return [DirTimes(head, d.names, d.times) for head, d in sorted(dirs.items())
                if d.names and (head == prefix or head.startswith(prefix + "/"))]  # fmt: skip


def _change(body: bytes | None) -> tuple[str, Entry | None] | None:
    """(path, its entry; None: gone) a delta record states; None when it states nothing usable."""
    if body is None:
        return None
    try:
        doc = json.loads(body)
        if "gone" in doc:
            rel = str(doc["gone"])
            return (rel, None) if layout.is_manifest(rel) else None
        rel = str(doc["put"])
        objects = doc.get("objects")
        listed = " ".join(map(str, objects)) if isinstance(objects, list) else None
        return (
            (rel, Entry(float(doc["written"]), str(doc.get("etag", "")), listed)) if layout.is_manifest(rel) else None
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged delta tells nothing: a full listing finds what it was about


def _split(text: str, n: int) -> list[str]:
    return text.split("\n") if n else []


def _parse(rel: str, data: bytes) -> _Snapshot:
    head, _, body = bytes(data).partition(b"\n")
    meta = json.loads(head)
    if meta.get("format") != _FORMAT or xxhash.xxh3_128_hexdigest(body) != meta["xxh3"]:
        raise ValueError("checksum or format mismatch")
    sizes, dirs = meta["sizes"], meta["dirs"]
    total = sum(n for _, n in dirs)
    if len(sizes) not in (4, 6) or sum(sizes) != len(body) or sizes[1] != 8 * total:
        raise ValueError("sizes do not add up")
    cut = [0, *itertools.accumulate(sizes)]
    names = _split(body[cut[0] : cut[1]].decode(), total)
    times = array.array("d")
    times.frombytes(body[cut[1] : cut[2]])
    etags = _split(body[cut[2] : cut[3]].decode(), total)
    objects = _split(body[cut[3] : cut[4]].decode(), total)
    if not len(names) == len(times) == len(etags) == len(objects) == total:
        raise ValueError("column lengths differ")
    all_times = times.tolist()
    out: dict[str, _Dir] = {}
    at = 0
    for d, n in dirs:
        if not isinstance(d, str) or not layout.is_manifest(f"{d}/x.json"):
            raise ValueError(f"not a manifest directory: {d!r}")
        out[d] = _Dir(names[at : at + n], all_times[at : at + n], etags[at : at + n], objects[at : at + n])
        at += n
    orphans, released = None, set()
    if len(sizes) == 6:
        rows = [line.split(" ") for line in _split(body[cut[4] : cut[5]].decode(), sizes[4])]
        orphans = {o: (int(size), float(t)) for o, size, t in rows}
        released = set(_split(body[cut[5] : cut[6]].decode(), sizes[5]))
    return _Snapshot(rel, int(meta["mark"]), int(meta["full"]), out, orphans, released)


def _objects_named(data: bytes) -> list[str] | None:
    """The object paths the manifest ``data`` names (None: it can't be parsed)."""
    from .codecs import CODECS
    from .store import _named_objects

    try:
        return sorted({layout.object_path(oid, CODECS[codec].suffix) for oid, codec in _named_objects(data)})
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
