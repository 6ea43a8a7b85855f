"""Where bytes live: the backend protocol (the local-directory backend is ``local``, the fsspec
backend for any other URL is ``remote``).

Both speak paths relative to the store root with ``/`` separators. Writes are atomic:
locally a temp file beside the target, fsync, ``os.replace``, directory fsync; on object
stores a single PUT of the whole object (there is no rename; the manifest, written last,
is the commit marker).
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol

import xxhash

from ..errors import IntegrityError
from ..progress_bar import advance
from .oserrors import UNREACHABLE_HINT, describe_oserror, described  # noqa: F401  (UNREACHABLE_HINT: re-exported)

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
        advance(done)  # the bar of the object being written, if it proves long (progress_bar)
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
    """Bytes under relative paths. ``read``, ``stat`` and ``move`` raise FileNotFoundError
    for a missing path; every other OS error is a StoreError naming the path.

    ``scan`` is ``list`` with each file's size and modification time, from the listing itself
    where it carries them (an S3 listing does; locally one ``lstat`` per file, no open).
    ``read_many`` yields ``(rel, bytes or the exception reading it raised)`` for each path, in
    any order; remote backends read many at once."""

    url: str

    def stage(self, writer: Writer) -> Staged: ...
    def commit(self, staged: Staged, rel: str, *, durable: bool = True) -> None: ...
    def discard(self, staged: Staged) -> None: ...
    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None: ...
    def create(self, rel: str, data: bytes) -> bool: ...
    def read(self, rel: str) -> Any: ...
    def exists(self, rel: str) -> bool: ...
    def stat(self, rel: str) -> Stat: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def scan(self, prefix: str) -> Iterator[tuple[str, Stat]]: ...
    def read_many(self, rels: Iterable[str], sizes: Mapping[str, int] | None = None) -> Iterator[tuple[str, Any]]: ...
    def move(self, rel: str, dest: str, *, made: bool = False) -> None: ...
    def make_parents(self, rels: Iterable[str]) -> None: ...
    def delete(self, rel: str) -> None: ...
    def remove_empty(self, prefix: str, within: Iterable[str] | None = None) -> None: ...
    def remove_stale_empty(self, prefix: str, depth: int, before: float, *, dry_run: bool = False) -> int: ...


class Stat(NamedTuple):
    size: int
    mtime: float
    """Seconds since the epoch of the last write (or, for objects, of the last dedup refresh)."""


class SymlinkRefused(IntegrityError):
    """A path inside the store is a symbolic link: the store never follows one."""


def open_backend(url: str | os.PathLike, *, fsync: bool = True, **storage_options: Any) -> Backend:
    """A local path or ``file://`` URL -> LocalBackend; any other URL -> FsspecBackend."""
    from .local import LocalBackend  # (it imports this module's protocol)

    text = os.fspath(url)
    if "://" not in text:
        return LocalBackend(text, fsync=fsync)
    if text.startswith("file://"):
        return LocalBackend(text[len("file://") :], fsync=fsync)
    from .remote import FsspecBackend  # fsspec is imported only for remote stores

    return FsspecBackend(text, **storage_options)
