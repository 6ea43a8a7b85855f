"""The fsspec backend: a store at any URL (memory://, s3://, gcs://…), one PUT per object,
the manifest written last as the commit marker (there is no rename on object stores)."""

from __future__ import annotations

import datetime as dt
import functools
import io
import itertools
from typing import Any, Iterable, Iterator, Mapping

from ..errors import StoreError
from . import layout, unchanged
from .backend import HashingWriter, Stat, Writer
from .manifest_cache import ManifestCache
from .oserrors import describe_oserror, described
from .s3 import Got, S3Reader, client_error

READERS = 16
"""Reads a remote backend has in flight at once (``read_many``): each costs a round trip."""
READ_AHEAD = 256
_CONDITIONAL: dict[tuple[str, str], bool] = {}
"""Whether the server (endpoint, bucket) honours ``If-Match`` on DeleteObject, as probed."""


class _RemoteStaged:
    __slots__ = ("data", "digest", "size")

    def __init__(self, data: bytes, digest: str, size: int) -> None:
        self.data, self.digest, self.size = data, digest, size


class FsspecBackend:
    """Any fsspec URL (memory://, s3://, gcs://…): one PUT per object, manifest last.

    Directory listings are never cached (``use_listings_cache=False``): other processes
    write to the same store, and every read, lookup, verify and gc must see what they did.

    On ``s3://`` (storage options ``S3Reader`` understands) reads, HEADs and listings go
    through one warm botocore client (``pipeline.store.s3``), s3fs is only imported to write,
    and ``read_many`` of manifests a listing just showed takes those whose ETag is unchanged
    from the manifest cache (``pipeline.store.manifest_cache``) instead of a GET each."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        storage_options.setdefault("use_listings_cache", False)
        self._options = storage_options
        self._reader: S3Reader | None = None
        self._cache: ManifestCache | None = None
        self.index: Any = None
        """The manifest index (``pipeline.store.manifest_index``) of an ``s3://`` store."""
        self._listed: dict[str, str] = {}
        """ETag of each manifest path the latest listing showed, until a ``read_many`` takes it."""
        if url.startswith("s3://"):
            self.root = url[len("s3://") :].rstrip("/")
            self._reader = S3Reader.open(self.root, dict(storage_options))
        if self._reader is None:
            self.fs  # noqa: B018  (creating the filesystem sets ``root``)
        else:
            self._cache = ManifestCache.for_store(url, self._reader.endpoint)
            from .manifest_index import ManifestIndex

            self.index = ManifestIndex(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Shipped to worker processes with the run context: opened afresh there (its client,
        # connections and cache file are this process's).
        return (_reopen, (self.url, self._options))

    @functools.cached_property
    def fs(self) -> Any:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **self._options)
        self.root = root.rstrip("/")
        return _OSErrors(fs)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def stage(self, writer: Writer) -> _RemoteStaged:
        buf = io.BytesIO()
        hashing = HashingWriter(buf)
        with io.BufferedWriter(hashing, buffer_size=4 << 20) as buffered:
            writer(buffered)
        return _RemoteStaged(buf.getvalue(), hashing.hexdigest(), hashing.size)

    def commit(self, staged: _RemoteStaged, rel: str, *, durable: bool = True) -> None:
        # Always PUT, even when the object is already there: it renews its modification time,
        # and it replaces bytes that may have rotted (same size or not).
        try:
            with described(rel, self.url):
                self.fs.pipe_file(self._path(rel), staged.data)
        finally:
            staged.data = b""

    def _info(self, rel: str) -> dict[str, Any]:
        path = self._path(rel)
        self.fs.invalidate_cache(path)  # in case a listing cache was asked for after all
        with described(rel, self.url, "read", missing="raise"):
            return self.fs.info(path)

    def discard(self, staged: _RemoteStaged) -> None:
        staged.data = b""

    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        manifest = layout.is_manifest(rel)
        if self.index is not None and manifest:
            self.index.put(rel, data)  # before the manifest (see ``manifest_index``)
        self._put_raw(rel, data)
        if manifest and not self._deletes_conditionally and unchanged.lost_to_a_drop(self, rel):
            if self.index is not None:  # gc drops by copy + delete here: written again if deleted
                self.index.put(rel, data)
            self.create(rel, data)

    def _put_raw(self, rel: str, data: bytes) -> None:
        with described(rel, self.url):
            self.fs.pipe_file(self._path(rel), data)

    def _delete_raw(self, rels: list[str]) -> None:
        """Delete many paths at once (the index's own objects)."""
        if rels:
            with described(rels[0], self.url, "delete", missing="ignore"):
                self.fs.rm([self._path(rel) for rel in rels])

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist; False when it does (another writer won).

        A conditional PUT (``If-None-Match: *``; SeaweedFS and AWS S3 honour it) where the
        filesystem takes ``mode="create"``; then, and on filesystems without it, the object
        is read back: only the writer whose bytes are there won. Without a conditional PUT
        that is a best effort (two writers racing within one round trip may both win)."""
        path = self._path(rel)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as e:
            if not _precondition_failed(e):
                raise describe_oserror(e, rel, self.url) from e
            return False
        except (TypeError, NotImplementedError, ValueError):  # no exclusive mode: check, write, re-read
            if self.exists(rel):
                return False
            self.write_atomic(rel, data)
        try:
            return bytes(self.read(rel)) == data
        except FileNotFoundError:
            return False

    def read(self, rel: str) -> bytes:
        with described(rel, self.url, "read", missing="raise"):
            if self._reader is not None:
                return self._reader.get(rel).data
            return self.fs.cat_file(self._path(rel))

    def exists(self, rel: str) -> bool:
        try:
            if self._reader is not None:
                self._head(rel)
                return True
            return self._info(rel).get("type", "file") == "file"
        except FileNotFoundError:
            return False

    def stat(self, rel: str) -> Stat:
        if self._reader is not None:
            head = self._head(rel)
            return Stat(head.size, head.mtime)
        return _stat_of(self._info(rel))

    def _head(self, rel: str) -> Any:
        with described(rel, self.url, "read", missing="raise"):
            return self._reader.head(rel)  # type: ignore[union-attr]

    def list(self, prefix: str) -> Iterator[str]:
        for rel, _st in self.scan(prefix):
            yield rel

    def scan(self, prefix: str) -> Iterator[tuple[str, Stat]]:
        if self._reader is None:
            for rel, info in self._find(prefix):
                yield rel, _stat_of(info)
            return
        manifests: set[str] = set()
        with described(prefix, self.url, "list"):
            for item in self._reader.list(prefix):
                if layout.is_manifest(item.rel) and item.etag:
                    self._listed[item.rel] = item.etag
                    manifests.add(item.rel)
                yield item.rel, Stat(item.size, item.mtime)
        if prefix in layout.MANIFEST_ROOTS:  # a complete listing: forget what it no longer shows
            under = prefix + "/"
            for rel in [r for r in self._listed if r.startswith(under) and r not in manifests]:
                self._listed.pop(rel, None)
            if self._cache is not None:
                self._cache.prune(prefix, manifests)

    def _find(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every file under ``prefix`` with what the listing says of it (one listing call)."""
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        root = self.root.lstrip("/") + "/"
        for path, info in found.items():
            path = path.lstrip("/")
            if path.startswith(root):
                yield path[len(root) :], info

    def read_many(self, rels: Iterable[str], sizes: Mapping[str, int] | None = None) -> Iterator[tuple[str, Any]]:
        """Reads ``READ_AHEAD`` paths at a time, ``READERS`` at once (one round trip each).

        A manifest whose ETag the latest listing showed (each listing vouches for one read)
        is taken from the manifest cache when its cached version is that ETag: its bytes as
        of that listing, as a GET right after it would have returned them. ``sizes``: unused
        (a local read's hint)."""
        from concurrent.futures import ThreadPoolExecutor

        def one(rel: str) -> tuple[str, Any]:
            try:
                if self._reader is not None:
                    return rel, self._reader.get(rel)
                return rel, self.read(rel)
            except FileNotFoundError as e:
                return rel, e
            except OSError as e:
                return rel, describe_oserror(e, rel, self.url, "read")
            except StoreError as e:
                return rel, e

        pending = iter(rels)
        with ThreadPoolExecutor(READERS, thread_name_prefix="store-read") as pool:
            while batch := list(itertools.islice(pending, READ_AHEAD)):
                listed = {rel: etag for rel in batch if (etag := self._listed.pop(rel, None)) is not None}
                cached = self._cache.get_many(listed) if self._cache is not None else {}
                yield from cached.items()
                fetched = list(pool.map(one, [rel for rel in batch if rel not in cached]))
                if self._cache is not None:
                    got_manifests = (r for r in fetched if isinstance(r[1], Got) and layout.is_manifest(r[0]))
                    self._cache.put_many((rel, got.etag, got.data) for rel, got in got_manifests)
                for rel, got in fetched:
                    yield rel, got.data if isinstance(got, Got) else got

    def read_tagged(self, rel: str) -> Got | None:
        """The bytes at ``rel`` with the ETag of that very version, for ``delete_tagged``;
        None when this store can't delete conditionally (no plain S3 client, or a server
        that ignores ``If-Match`` on DeleteObject: probed once)."""
        if not self._deletes_conditionally:
            return None
        with described(rel, self.url, "read", missing="raise"):
            return self._reader.get(rel)  # type: ignore[union-attr]

    def delete_tagged(self, rel: str, etag: str) -> bool:
        """Delete ``rel`` only if it still is the version ``etag`` (``read_tagged``) names: a
        write of ``rel`` since stays. True when deleted."""
        with described(rel, self.url, "delete"):
            deleted = self._reader.delete_if(rel, etag)  # type: ignore[union-attr]
        if deleted and self.index is not None and layout.is_manifest(rel):
            self.index.gone(rel)
        return deleted

    @functools.cached_property
    def _deletes_conditionally(self) -> bool:
        if self._reader is None:
            return False
        server = (self._reader.endpoint, self._reader.bucket)
        if server not in _CONDITIONAL:  # once per server and process (a probe is 5 requests: ~20 ms)
            with described(layout.TMP, self.url):
                _CONDITIONAL[server] = self._reader.deletes_conditionally(layout.temp_path())
        return _CONDITIONAL[server]

    def move(self, rel: str, dest: str, *, made: bool = False) -> None:
        with described(rel, self.url, "move", missing="raise"):
            self.fs.mv(self._path(rel), self._path(dest))
        if self.index is not None and layout.is_manifest(rel):
            self.index.gone(rel)

    def delete(self, rel: str) -> None:
        with described(rel, self.url, "delete", missing="ignore"):
            self.fs.rm_file(self._path(rel))
        if self.index is not None and layout.is_manifest(rel):
            self.index.gone(rel)

    def make_parents(self, rels: Iterable[str]) -> None:
        """Object stores have no directories to make."""

    def remove_empty(self, prefix: str, within: Iterable[str] | None = None) -> None:
        """Object stores have no directories to remove."""

    def remove_stale_empty(self, prefix: str, depth: int, before: float, *, dry_run: bool = False) -> int:
        """Object stores have no directories to remove."""
        return 0


class _OSErrors:
    """A filesystem whose client library's own errors are OSErrors (s3fs lets botocore's
    connection errors through as they are), so that every caller's ``except OSError`` turns
    them into a StoreError naming the store and what to do."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                translated = client_error(e, str(args[0]) if args else name, name)
                if translated is e:
                    raise
                raise translated from e

        return call


def _reopen(url: str, options: dict[str, Any]) -> FsspecBackend:
    return FsspecBackend(url, **options)


def _precondition_failed(e: OSError) -> bool:
    """True when an S3 PUT failed its ``If-None-Match`` precondition (HTTP 412)."""
    cause = e.__cause__ or e.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause is not None else None
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or "pre-condition" in str(e).lower()


def _stat_of(info: dict[str, Any]) -> Stat:
    modified = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(modified, dt.datetime):
        modified = modified.timestamp()
    return Stat(int(info.get("size") or 0), float(modified) if modified is not None else 0.0)
