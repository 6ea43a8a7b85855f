"""Where bytes live: a fast local-directory backend and an fsspec backend for any URL.

Both speak paths relative to the store root with ``/`` separators. Writes are atomic:
locally a temp file beside the target, fsync, ``os.replace``, directory fsync; on object
stores a single PUT of the whole object (there is no rename; the manifest, written last,
is the commit marker).
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import uuid
from typing import Any, Callable, Iterator, Protocol

import xxhash

from ..errors import StoreError

Writer = Callable[[io.BufferedIOBase], None]


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes (xxh3_128) and counts every byte on its way through."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._h = xxhash.xxh3_128()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self._h.update(view)
        done = 0
        while done < len(view):  # a raw write may take only part of the bytes
            done += self._sink.write(view[done:])
        self.size += done
        return done

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Staged(Protocol):
    """An object written to a temporary place, named by its checksum, not yet committed."""

    digest: str
    size: int


class Backend(Protocol):
    url: str

    def stage(self, writer: Writer) -> Staged: ...
    def commit(self, staged: Staged, rel: str) -> None: ...
    def discard(self, staged: Staged) -> None: ...
    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None: ...
    def read(self, rel: str) -> Any: ...
    def exists(self, rel: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def move(self, rel: str, dest: str) -> None: ...
    def delete(self, rel: str) -> None: ...


def describe_oserror(e: OSError, what: str, url: str) -> StoreError:
    """Turn an OSError during a store write into one line that says what to do."""
    if e.errno == errno.ENOSPC:
        hint = "free disk space on that volume or point --store / PIPELINE_STORE elsewhere"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a writable store (--store / PIPELINE_STORE) or fix its permissions"
    else:
        hint = "check the store location"
    return StoreError(f"cannot write {what} in store {url}: {e.strerror or e} ({hint})")


class _LocalStaged:
    __slots__ = ("tmp", "digest", "size")

    def __init__(self, tmp: str, digest: str, size: int) -> None:
        self.tmp, self.digest, self.size = tmp, digest, size


class LocalBackend:
    """A directory on a local filesystem: temp + fsync + rename, reads memory-mapped."""

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self.fsync = fsync

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def _makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents, each new entry made durable in its parent."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._makedirs(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        self._fsync_dir(parent)

    def _fsync_dir(self, path: str) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stage(self, writer: Writer) -> _LocalStaged:
        tmp = os.path.join(self.root, "objects", "tmp", uuid.uuid4().hex)
        try:
            self._makedirs(os.path.dirname(tmp))
            with open(tmp, "wb", buffering=0) as raw:
                hashing = HashingWriter(raw)
                with io.BufferedWriter(hashing, buffer_size=4 << 20) as buffered:
                    writer(buffered)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise describe_oserror(e, "an object", self.url) from e
            raise
        return _LocalStaged(tmp, hashing.hexdigest(), hashing.size)

    def commit(self, staged: _LocalStaged, rel: str) -> None:
        dest = self._path(rel)
        parent = os.path.dirname(dest)
        try:
            self._makedirs(parent)
            if _size(dest) == staged.size:  # content-addressed: already there = deduplicated
                os.utime(dest)  # fresh again: gc spares young objects until their manifest lands
                os.unlink(staged.tmp)
                return
            if self.fsync:  # only now: a duplicate (common for checkpoints) costs no fsync
                fd = os.open(staged.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(staged.tmp, dest)
            self._fsync_dir(parent)
        except OSError as e:
            self.discard(staged)
            raise describe_oserror(e, rel, self.url) from e

    def discard(self, staged: _LocalStaged) -> None:
        with contextlib.suppress(OSError):
            os.unlink(staged.tmp)

    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Replace ``rel`` atomically; ``durable=False`` skips the fsyncs (informational records)."""
        dest = self._path(rel)
        parent = os.path.dirname(dest)
        tmp = os.path.join(self.root, "objects", "tmp", uuid.uuid4().hex)
        try:
            self._makedirs(os.path.dirname(tmp))
            self._makedirs(parent)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync and durable:
                    os.fsync(f.fileno())
            os.replace(tmp, dest)
            if durable:
                self._fsync_dir(parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise describe_oserror(e, rel, self.url) from e

    def read(self, rel: str) -> Any:
        """The file's bytes: memory-mapped when large (zero-copy), plain bytes when small.

        Large files are mapped with MADV_SEQUENTIAL: they are read front to back (checksum,
        then decode), and the kernel's aggressive readahead makes a cold read markedly
        faster than default paging."""
        with open(self._path(rel), "rb") as f:
            if os.fstat(f.fileno()).st_size < 1 << 20:
                return f.read()
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        import pyarrow as pa

        return pa.py_buffer(mm)  # keeps the mapping alive for as long as the buffer lives

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._path(rel))

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        for root, _dirs, files in os.walk(base):
            rel_root = os.path.relpath(root, self.root).replace(os.sep, "/")
            for name in files:
                yield f"{rel_root}/{name}"

    def move(self, rel: str, dest: str) -> None:
        target = self._path(dest)
        self._makedirs(os.path.dirname(target))
        os.replace(self._path(rel), target)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(rel))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


class _RemoteStaged:
    __slots__ = ("data", "digest", "size")

    def __init__(self, data: bytes, digest: str, size: int) -> None:
        self.data, self.digest, self.size = data, digest, size


class FsspecBackend:
    """Any fsspec URL (memory://, s3://, gcs://…): one PUT per object, manifest last."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = self.root.rstrip("/")

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def stage(self, writer: Writer) -> _RemoteStaged:
        buf = io.BytesIO()
        hashing = HashingWriter(buf)
        with io.BufferedWriter(hashing, buffer_size=4 << 20) as buffered:
            writer(buffered)
        return _RemoteStaged(buf.getvalue(), hashing.hexdigest(), hashing.size)

    def commit(self, staged: _RemoteStaged, rel: str) -> None:
        # Always PUT, even when the object is already there: it renews its modification time,
        # and gc spares only young unreferenced objects (an old one could go before our manifest).
        try:
            self.fs.pipe_file(self._path(rel), staged.data)
        except OSError as e:
            raise describe_oserror(e, rel, self.url) from e
        finally:
            staged.data = b""

    def _size(self, path: str) -> int:
        self.fs.invalidate_cache(path)  # listings may be cached, and other writers exist
        try:
            return self.fs.info(path).get("size", -1)
        except FileNotFoundError:
            return -1

    def discard(self, staged: _RemoteStaged) -> None:
        staged.data = b""

    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        try:
            self.fs.pipe_file(self._path(rel), data)
        except OSError as e:
            raise describe_oserror(e, rel, self.url) from e

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def exists(self, rel: str) -> bool:
        return self._size(self._path(rel)) >= 0

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        root = self.root.lstrip("/") + "/"
        for path in found:
            path = path.lstrip("/")
            if path.startswith(root):
                yield path[len(root) :]

    def move(self, rel: str, dest: str) -> None:
        self.fs.mv(self._path(rel), self._path(dest))

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(rel))


def open_backend(url: str | os.PathLike, *, fsync: bool = True, **storage_options: Any) -> Backend:
    """A local path or ``file://`` URL -> LocalBackend; any other URL -> FsspecBackend."""
    text = os.fspath(url)
    if "://" not in text:
        return LocalBackend(text, fsync=fsync)
    if text.startswith("file://"):
        return LocalBackend(text[len("file://") :], fsync=fsync)
    return FsspecBackend(text, **storage_options)
