"""Backup mirrors: replicate each commit to other stores, repair the primary from them.

A mirror is a store of its own (same layout, openable directly as ``Store(url)``) at any
local path or fsspec URL. What it holds and how it gets there:

- **Replication on commit**, objects first and manifest last, so a mirror never holds a
  manifest without its objects (a process killed half-way leaves objects, no entry).
  ``mode="sync"`` (default) copies before ``commit`` returns; ``"background"`` hands the
  commit to one replicator thread through a bounded queue (a full queue makes ``commit``
  wait) that is flushed at exit, with a warning naming what could not be replicated.
- **A mirror that is down never fails the primary**: it is warned about once, skipped for
  ``RETRY_SECONDS`` (5 min), and ``mirror_sync.push`` (``python -m pipeline mirror push``) catches it up.
- **Reads repair themselves**: an object or manifest missing or corrupt in the primary is
  read from each mirror in turn, verified (the object's checksum, the manifest's seal and
  path), written back into the primary and served; only when no copy verifies is it a
  miss. A corrupt copy in a mirror is quarantined there.

- **Drops and tags are replicated too**: an entry ``gc`` drops is recorded (``drops``) and
  dropped in each mirror that is up, and never given back by a mirror (lookup, ``pull``); a
  tag or untag is applied to each mirror that is up at once. ``push`` catches a mirror that
  was down up with both (tags it lacks, drops it missed; it never deletes a tag: a missed
  untag leaves the mirror pinning more, never less).
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import threading
import time
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..errors import ConfigError, IntegrityError, StoreError
from . import drops
from .manifest import Manifest, Unverified
from .objects import checksum, leaf_path
from .tree import Leaf, leaves

if TYPE_CHECKING:
    from .store import Store

MODES = ("sync", "background")
RETRY_SECONDS = 300.0
"""A mirror that failed is skipped this long before it is tried again (a client library may
retry for seconds before it gives up: an S3 endpoint that refuses connections costs ~10 s)."""
RECENT_BYTES = 256 << 20
"""Bytes of just-written objects a store on a remote backend keeps for its replication."""
QUEUE_SIZE = 256
"""Commits the background replicator holds at most; a full queue makes ``commit`` wait."""
FLUSH_SECONDS = 120.0
"""How long exit waits for the background replicator to finish."""

_UNREACHABLE = (OSError, StoreError)
MIRROR_ERRORS = (Exception,)
"""What a mirror's backend may raise when it is down: anything its client library does
(botocore's EndpointConnectionError is no OSError). A mirror never fails the primary."""


class SourceBroken(StoreError):
    """An object to copy is missing or corrupt in the store it is copied from (not the
    target's fault: the target is not marked down)."""


def plain(buf: Any) -> bytes:
    """The bytes of a buffer (a memory-mapped one is copied)."""
    return buf if isinstance(buf, bytes) else bytes(buf)


class Mirror:
    """One secondary location: a store over its own backend, opened on first use."""

    def __init__(self, target: Store | str | os.PathLike, **storage_options: Any) -> None:
        """``target``: a path or URL (opened with ``storage_options``), or an open Store."""
        is_store = hasattr(target, "_backend")  # a Store (not imported here: store.py imports this module)
        self._target = target if is_store else os.fspath(target)
        self._options = storage_options
        self._store: Store | None = target if is_store else None  # type: ignore[assignment]
        self._down_until = 0.0
        self._warned = False
        self.last_error = ""
        self.absent = False
        """True when a read-only look found no store at this local path yet."""
        self.url = self._store.url if self._store is not None else str(self._target)

    def __repr__(self) -> str:
        return f"Mirror({self.url!r})"

    def __reduce__(self) -> Any:  # shipped to a worker: the location, not the failure state
        return (_rebuild_mirror, (self._target, self._options))

    def open(self, primary: Store, *, retry: bool = False) -> Store | None:
        """The mirror's store (created on first use), or None while it is down (``retry``:
        try again all the same, as ``push`` / ``pull`` / ``status`` do)."""
        if time.monotonic() < self._down_until and not retry:
            return None
        if self._store is not None:
            return self._store
        if primary.read_only and "://" not in self.url and not os.path.isdir(self.url):
            self.last_error = f"no store at {self.url} yet (`python -m pipeline mirror push` creates it)"
            self.absent = True  # the mirror of a read-only store is not created either
            return None
        try:
            self._store = type(primary)(
                self._target, fsync=getattr(primary._backend, "fsync", True), sealer=primary._sealer,
                read_only=primary.read_only, **self._options,
            )  # fmt: skip
        except MIRROR_ERRORS as e:
            self.failed(e, "open", warn=not retry)
            return None
        return self._store

    def failed(self, e: BaseException, doing: str, warn: bool = True) -> None:
        """Mark the mirror down for a while; warn the first time (``warn``: a commit's or a
        read's replication, which goes on without it; ``push`` / ``status`` report it themselves)."""
        self._down_until = time.monotonic() + RETRY_SECONDS
        self.last_error = str(e)
        if warn and not self._warned:
            self._warned = True
            warnings.warn(
                f"mirror {self.url} is unreachable ({doing}: {e}); results are committed to the primary only "
                "until it is back: `python -m pipeline mirror push` catches it up",
                stacklevel=4,
            )


def _rebuild_mirror(target: Any, options: dict[str, Any]) -> Mirror:
    return Mirror(target, **options)


@dataclass(frozen=True)
class Job:
    """One commit to replicate: the manifest's path, its exact bytes, the manifest."""

    rel: str
    data: bytes
    manifest: Manifest
    primary: Store = field(repr=False, compare=False)

    def __str__(self) -> str:
        m = self.manifest
        return f"{m.stage} {m.key}" + ("" if m.step is None else f" step {m.step}")


class Recent:
    """The bytes of objects just written to a remote primary (checksummed as they were
    written), kept until their commit is replicated: up to ``max_bytes``, oldest dropped first."""

    def __init__(self, max_bytes: int = RECENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, leaf: Leaf, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if leaf.object in self._items:
                return
            self._items[leaf.object] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                self._size -= len(self._items.popitem(last=False)[1])

    def get(self, oid: str) -> bytes | None:
        with self._lock:
            return self._items.get(oid)

    def drop(self, oids: Iterable[str]) -> None:
        with self._lock:
            for oid in oids:
                data = self._items.pop(oid, None)
                if data is not None:
                    self._size -= len(data)


class Mirrors:
    """The mirrors of one store and how commits reach them (``mode``: sync / background)."""

    def __init__(self, targets: Sequence[Mirror | Store | str | os.PathLike], mode: str = "sync") -> None:
        if mode not in MODES:
            raise ConfigError(f"mirror_mode {mode!r} is not one of {', '.join(MODES)}")
        self.mirrors = tuple(t if isinstance(t, Mirror) else Mirror(t) for t in targets)
        self.mode = mode
        self.recent = Recent()
        self._replicator: Replicator | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Mirrors({[m.url for m in self.mirrors]!r}, mode={self.mode!r})"

    def __reduce__(self) -> Any:
        return (Mirrors, (self.mirrors, self.mode))

    def check_distinct(self, primary: Store) -> None:
        for m in self.mirrors:
            if _same_place(m.url, primary.url):
                raise ConfigError(f"mirror {m.url} is the store itself: a mirror must be another location")

    # -- replication ---------------------------------------------------------------------
    def remember(self, leaf: Leaf, data: bytes) -> None:
        """The bytes of an object just written to the primary: replication need not read them back."""
        self.recent.add(leaf, data)

    def committed(self, primary: Store, rel: str, data: bytes, manifest: Manifest) -> None:
        """Replicate one commit (now, or through the background replicator)."""
        job = Job(rel, data, manifest, primary)
        if self.mode == "sync":
            self.replicate(job)
            return
        with self._lock:
            if self._replicator is None:
                self._replicator = Replicator(self)
        self._replicator.submit(job)

    def replicate(self, job: Job) -> list[Mirror]:
        """Copy one commit to every mirror that is up; the mirrors it did not reach."""
        missed = []
        for mirror in self.mirrors:
            target = mirror.open(job.primary)
            if target is None:
                missed.append(mirror)
                continue
            try:
                copy_entry(job.primary, target, job.rel, job.data, job.manifest, self.recent)
            except SourceBroken as e:
                warnings.warn(f"{job} not replicated to mirror {mirror.url}: {e}", stacklevel=4)
                missed.append(mirror)
            except MIRROR_ERRORS as e:
                mirror.failed(e, f"replicate {job}")
                missed.append(mirror)
        self.recent.drop(leaf.object for leaf in leaves(job.manifest.outputs))
        return missed

    def dropped(self, primary: Store, rel: str, which: drops.Ident, data: bytes) -> None:
        """``gc`` dropped the entry at ``rel`` from the primary: drop it in every mirror that is
        up (its record, then its copy); one that is down gets it from ``mirror push``."""
        for mirror in self.mirrors:
            target = mirror.open(primary)
            if target is None:
                continue
            try:
                drops.apply(target, rel, which, data)
            except MIRROR_ERRORS as e:
                mirror.failed(e, f"drop {rel}")

    def tagged(self, primary: Store, rel: str, data: bytes | None) -> None:
        """A tag file was written (``data``) or deleted (None) in the primary: the same in every
        mirror that is up, at once in either mode (tags are small and rare)."""
        for mirror in self.mirrors:
            target = mirror.open(primary)
            if target is None:
                continue
            try:
                if data is None:
                    target._backend.delete(rel)
                else:
                    target._backend.write_atomic(rel, data, durable=primary.durable)
            except MIRROR_ERRORS as e:
                mirror.failed(e, f"{'untag' if data is None else 'tag'} {rel}")

    def flush(self, timeout: float = FLUSH_SECONDS) -> list[Job]:
        """Wait for the background replicator; the commits it has not replicated yet."""
        return [] if self._replicator is None else self._replicator.flush(timeout)

    # -- repair --------------------------------------------------------------------------
    def fetch_object(self, primary: Store, leaf: Leaf) -> Any | None:
        """A verified copy of ``leaf`` from the first mirror that has one, written back into
        the primary; None when no mirror has a good copy."""
        rel = leaf_path(leaf)
        for mirror in self.mirrors:
            source = mirror.open(primary)
            if source is None:
                continue
            try:
                buf = source._objects._read(rel)
            except FileNotFoundError:
                continue
            except IntegrityError:  # a symbolic link in the mirror
                source._objects.quarantine(rel)
                continue
            except MIRROR_ERRORS as e:
                mirror.failed(e, f"read object {leaf.object}")
                continue
            if checksum(buf) != leaf.object:
                del buf
                source._objects.quarantine(rel)
                continue
            try:
                if primary.read_only:
                    raise StoreError("the store was opened read-only")
                primary._backend.write_atomic(rel, plain(buf))
            except _UNREACHABLE as e:  # the primary can't take it back: serve it all the same
                warnings.warn(f"object {leaf.object} read from mirror {mirror.url}, not restored: {e}", stacklevel=4)
            else:
                warnings.warn(
                    f"object {leaf.object} was missing or corrupt in store {primary.url}: restored from mirror "
                    f"{mirror.url}",
                    stacklevel=4,
                )
            return buf
        return None

    def fetch_manifest(self, primary: Store, rel: str, damaged: bool) -> Manifest | None:
        """The manifest at ``rel`` from the first mirror whose copy checks (seal, path),
        written back into the primary (a ``damaged`` primary copy is quarantined first)."""
        for mirror in self.mirrors:
            source = mirror.open(primary)
            if source is None:
                continue
            try:
                raw = plain(source._backend.read(rel))
            except FileNotFoundError:
                continue
            except MIRROR_ERRORS as e:
                mirror.failed(e, f"read manifest {rel}")
                continue
            try:
                m = primary._check_manifest(rel, raw)
            except Unverified:
                continue
            except (ValueError, TypeError, KeyError):
                source._quarantine_manifest(rel)
                continue
            if drops.is_dropped(primary._backend, rel, m):
                continue  # gc dropped this very commit from the store: never given back
            try:
                if primary.read_only:
                    raise StoreError("the store was opened read-only")
                if damaged:
                    primary._quarantine_manifest(rel)
                primary._backend.write_atomic(rel, raw)
            except _UNREACHABLE as e:
                warnings.warn(f"manifest {rel} read from mirror {mirror.url}, not restored: {e}", stacklevel=4)
            else:
                how = "damaged" if damaged else "missing"
                warnings.warn(
                    f"manifest {rel} was {how} in store {primary.url}: restored from mirror {mirror.url}", stacklevel=4
                )
            return m
        return None


def place(url: str) -> str:
    """Where a store is, spelled one way (a URL without its trailing slash, a real local path)."""
    return url.rstrip("/") if "://" in url else os.path.realpath(url)


def _same_place(a: str, b: str) -> bool:
    return place(a) == place(b)


def copy_entry(
    source: Store, target: Store, rel: str, data: bytes, manifest: Manifest, recent: Recent | None = None
) -> None:
    """Copy one committed entry: each object the target lacks (the bytes just written, from
    ``recent``, or read back and verified), then the manifest. An object missing or corrupt in
    ``source`` (after its own repair) raises SourceBroken."""
    for leaf in leaves(manifest.outputs):
        orel = leaf_path(leaf)
        if not _holds(target, orel, leaf.bytes):
            try:
                buf = (recent.get(leaf.object) if recent is not None else None) or plain(source.read_verified(leaf))
            except StoreError as e:
                raise SourceBroken(str(e)) from e
            target._backend.write_atomic(orel, buf, durable=source.durable)
    target._backend.write_atomic(rel, data, durable=source.durable)


def _holds(store: Store, rel: str, size: int) -> bool:
    """True when ``rel`` is there with the right size (one stat; a truncated copy is replaced)."""
    try:
        return store._backend.stat(rel).size == size
    except FileNotFoundError:
        return False


class Replicator:
    """One daemon thread replicating commits in order from a bounded queue; flushed at exit."""

    def __init__(self, mirrors: Mirrors, maxsize: int = QUEUE_SIZE) -> None:
        self._mirrors = mirrors
        self._maxsize = maxsize
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._exited = False

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # first use, or a forked child
                self._pending.clear()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="pipeline-mirror", daemon=True)
                self._thread.start()
                self._exited = False
                atexit.register(self._at_exit)
                # A multiprocessing worker (a process pool's, Dask's) leaves by os._exit, past
                # atexit: its exit finalizers run all the same.
                multiprocessing.util.Finalize(self, self._at_exit, exitpriority=100)
            while len(self._pending) >= self._maxsize:
                self._cond.wait()
            self._pending.append(job)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                job = self._pending[0]  # stays pending (for flush) until replicated
            try:
                self._mirrors.replicate(job)
            except Exception as e:  # a corrupt source object, say: this entry waits for `push`
                warnings.warn(f"could not replicate {job} to the mirrors: {e}", stacklevel=1)
            with self._cond:
                self._pending.popleft()
                self._cond.notify_all()

    def flush(self, timeout: float) -> list[Job]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return list(self._pending)

    def _at_exit(self) -> None:
        if self._pid != os.getpid() or self._exited:
            return
        self._exited = True
        left = self.flush(FLUSH_SECONDS)
        if left:
            names = ", ".join(str(j) for j in left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            warnings.warn(
                f"exiting before {len(left)} commits reached the mirrors ({names}): "
                "run `python -m pipeline mirror push` to copy them",
                stacklevel=1,
            )


__all__ = ["Mirror", "Mirrors", "Job", "Replicator", "copy_entry", "plain", "SourceBroken"]
