"""When each manifest file of a store was written, per directory, newest first, without an
``lstat`` of every file each time on local disk.

``listing`` orders the manifests it reads by their file times. A local store of 100k results
costs 100k ``lstat`` calls to learn them (0.3 s of CPU, most of ``ls``). But a directory
whose own mtime has not changed has the same entries, the same files, so the same file
times: the store only ever writes a manifest by renaming a complete file into place, and a
rename, like any added or removed entry, changes its directory's mtime. So the times of each
directory are kept in a small file outside the store, with the directory's identity (device,
inode, mtime in ns) when they were taken, and used while the directory still has it; a
changed directory is listed (and its file ``lstat``-ed) again.

A listing is kept only when it was taken at least ``SETTLED`` after the directory last
changed: timestamps have a granularity, and a change in the same tick as the one before
would leave the mtime as it was (git's "racy" index entries). A file whose time is changed
in place (``touch``, or a copy over an existing file: never the store's own writes) is seen
with its old time until its directory changes. The times only order candidates; every
manifest listed is read and checked as for any lookup, so a stale or tampered file here can
cost a listing its order, never make it show a result the store would not serve.

The files: ``$PIPELINE_LISTING_CACHE`` if set, else ``~/.cache/pipeline/listing/`` (XDG),
one per store directory, written atomically; any failure to read or write them just lists
the directory. A kept listing is not loaded into Python objects: its file (a header line, the
times as float64, each name's end offset as uint32, the names) is checksummed by streaming it
through a small buffer, then kept open and read by offset as it is used (a time, a slice of
times, a hundred names at a time, each name checked again as it is read). So the newest page
of a 100k-result store reads the few thousand names it looks at, and its memory does not grow
with the store (a directory listed afresh is held whole while it is sorted and kept, then
read back from its kept file like any other: one directory at a time, not the whole store).

Other backends give their listing's times as they are (an S3 listing carries
them at no extra cost).
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import os
import re
import stat as stat_module
import struct
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

import xxhash

from .backend import describe_oserror
from .local import LocalBackend, files_of

if TYPE_CHECKING:
    from .backend import Backend

SETTLED = 1.0
"""Seconds a directory must have been unchanged when it is listed for that listing to be kept."""
_FORMAT = 2
_CHUNK = 1 << 16
"""Bytes of a kept listing checksummed at a time (the buffer is reused: memory stays flat)."""
_NAMES_READ = 128
"""Names (or times) of a kept listing read at once as they are iterated."""
_DOUBLE = struct.Struct("=d")
_NAME = re.compile(r"[A-Za-z0-9._-]+\.json")
"""A manifest file name as ``layout`` makes them (anything else read from a file is refused)."""


class DirTimes(NamedTuple):
    """The ``.json`` files directly in directory ``rel``, newest-written first (ties: by name,
    descending), with their file times (lists, or views of a kept listing's file)."""

    rel: str
    names: Sequence[str]
    times: Sequence[float]


class StaleListing(ValueError):
    """A kept listing held a name the store never makes (the file was tampered with):
    list the directory again (``json_times(..., kept=False)``)."""


class _File:
    """A kept listing's open file, read by offset (``os.pread``; not memory-mapped: a file cut
    short in place is a short read, refused, never a crash)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, at: int, n: int) -> bytes:
        data = os.pread(self.fd, n, at) if n else b""
        if len(data) != n:
            raise StaleListing("a kept directory listing was cut short")
        return data

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _Times(Sequence[float]):
    """The file times of a kept listing, read as they are used (a slice: one read)."""

    def __init__(self, f: _File, at: int, n: int) -> None:
        self._f, self._at, self._n = f, at, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1:
                return array.array("d", (self[j] for j in range(start, stop, step)))
            out = array.array("d")
            if stop > start:
                out.frombytes(self._f.read(self._at + 8 * start, 8 * (stop - start)))
            return out
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return _DOUBLE.unpack(self._f.read(self._at + 8 * i, 8))[0]

    def __iter__(self) -> Iterator[float]:
        for start in range(0, self._n, _NAMES_READ):
            yield from self[start : start + _NAMES_READ]


class _Names(Sequence[str]):
    """The names of a kept listing, read and checked as they are used."""

    def __init__(self, f: _File, ends_at: int, blob_at: int, n: int, blob: int) -> None:
        self._f, self._ends_at, self._blob_at, self._n, self._blob = f, ends_at, blob_at, n, blob

    def __len__(self) -> int:
        return self._n

    def _ends(self, start: int, stop: int) -> array.array:
        out = array.array("I")
        out.frombytes(self._f.read(self._ends_at + 4 * start, 4 * (stop - start)))
        return out

    def _names(self, start: int, stop: int) -> list[str]:
        """Names ``start`` to ``stop`` (two reads)."""
        if stop <= start:
            return []
        ends = self._ends(max(start - 1, 0), stop)
        first = ends[0] if start else 0
        ends = ends[1:] if start else ends
        if ends[-1] > self._blob:
            raise StaleListing("a kept directory listing is damaged")
        blob = self._f.read(self._blob_at + first, ends[-1] - first)
        out, at = [], first
        for end in ends:
            name = blob[at - first : end - first].decode("ascii", "replace")
            if end < at or not _NAME.fullmatch(name):
                raise StaleListing(f"a kept directory listing names {name!r}")
            out.append(name)
            at = end
        return out

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            return self._names(start, stop)[::step] if step > 0 else [self[j] for j in range(start, stop, step)]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._names(i, i + 1)[0]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, self._n, _NAMES_READ):
            yield from self._names(start, min(start + _NAMES_READ, self._n))


def json_times(backend: Backend, prefix: str, *, kept: bool = True) -> list[DirTimes]:
    """Every directory under ``prefix`` (itself included) that holds ``.json`` files, with them
    (``kept=False``: list every directory, using no kept listing; one that is settled is kept)."""
    prefix = prefix.strip("/")
    if isinstance(backend, LocalBackend):
        return _Local(backend, use_kept=kept).walk(prefix)
    by_dir: dict[str, list[tuple[float, str]]] = {}
    for rel, st in backend.scan(prefix):
        if rel.endswith(".json"):
            head, _, name = rel.rpartition("/")
            by_dir.setdefault(head, []).append((st.mtime, name))
    return [_sorted(head, found) for head, found in sorted(by_dir.items())]


def _sorted(rel: str, found: list[tuple[float, str]]) -> DirTimes:
    found.sort(reverse=True)
    return DirTimes(rel, [n for _, n in found], [t for t, _ in found])


def cache_dir() -> str:
    override = os.environ.get("PIPELINE_LISTING_CACHE")
    if override:
        return override
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pipeline", "listing")


class _Local:
    def __init__(self, backend: LocalBackend, use_kept: bool = True) -> None:
        self.backend = backend
        self.use_kept = use_kept
        self.where = os.path.join(cache_dir(), xxhash.xxh3_64_hexdigest(os.fsencode(backend._real_root)))

    def walk(self, rel: str) -> list[DirTimes]:
        out: list[DirTimes] = []
        self._walk(rel, out)
        return out

    def _walk(self, rel: str, out: list[DirTimes]) -> None:
        path = self.backend._path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise describe_oserror(e, rel, self.backend.url, "read") from e
        if not stat_module.S_ISDIR(st.st_mode):  # a symbolic link is not followed
            return
        ident = (st.st_dev, st.st_ino, st.st_mtime_ns)
        kept = self._load(rel, ident) if self.use_kept else None
        if kept is None:
            kept = self._list(rel, path, ident)
        times, subdirs = kept
        if times.names:
            out.append(times)
        for name in subdirs:
            self._walk(f"{rel}/{name}", out)

    def _list(self, rel: str, path: str, ident: tuple[int, int, int]) -> tuple[DirTimes, list[str]]:
        """List the directory (``lstat`` each file); keep the listing if it is settled."""
        taken = time.time_ns()
        found: list[tuple[float, str]] = []
        subdirs: list[str] = []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone, or not a directory (any more): nothing under it
            return DirTimes(rel, [], []), []
        try:
            with os.scandir(fd) as it:
                for entry in files_of(it, subdirs):  # as ``LocalBackend.scan`` sees them
                    if entry.name.endswith(".json"):
                        try:
                            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                        except FileNotFoundError:
                            continue  # deleted since it was listed
                        except OSError as e:
                            raise describe_oserror(e, f"{rel}/{entry.name}", self.backend.url, "read") from e
            after = os.fstat(fd)
        finally:
            os.close(fd)
        subdirs.sort()
        times = _sorted(rel, found)
        del found
        if (after.st_dev, after.st_ino, after.st_mtime_ns) == ident and taken - ident[2] >= SETTLED * 1e9:
            self._save(rel, ident, times, subdirs)
            kept = self._load(rel, ident)  # read as it is used, like any kept listing: the lists go now
            if kept is not None:
                return kept
        return times, subdirs

    def _file(self, rel: str) -> str:
        return os.path.join(self.where, xxhash.xxh3_64_hexdigest(rel.encode("utf-8", "surrogatepass")))

    def _load(self, rel: str, ident: tuple[int, int, int]) -> tuple[DirTimes, list[str]] | None:
        try:
            f = _File(os.open(self._file(rel), os.O_RDONLY | os.O_NOFOLLOW))
            size = os.fstat(f.fd).st_size
            head = os.pread(f.fd, min(size, 1 << 16), 0).partition(b"\n")[0] + b"\n"
            meta = json.loads(head)
            if (meta.get("format") != _FORMAT or meta.get("rel") != rel or meta.get("ident") != list(ident)
                    or meta.get("order") != sys.byteorder):  # fmt: skip
                return None
            n, blob, subdirs = meta["n"], meta["blob"], meta["subdirs"]
            if not (isinstance(n, int) and isinstance(blob, int) and n >= 0 and blob >= 0):
                return None
            at = len(head)
            if at % 8 or size != at + 12 * n + blob:
                return None
            if not all(isinstance(d, str) and d not in ("", ".", "..") and "/" not in d for d in subdirs):
                return None
            h = xxhash.xxh3_64()
            for start in range(at, size, _CHUNK):  # (a small buffer at a time: memory stays flat)
                h.update(f.read(start, min(_CHUNK, size - start)))
            if h.hexdigest() != meta["xxh"]:
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none kept, or unreadable: list the directory
        names = _Names(f, at + 8 * n, at + 12 * n, n, blob)
        return DirTimes(rel, names, _Times(f, at, n)), subdirs

    def _save(self, rel: str, ident: tuple[int, int, int], times: DirTimes, subdirs: list[str]) -> None:
        if not all(map(_NAME.fullmatch, times.names)):
            return  # a file the store did not write (``a b.json``): such a directory is listed each time
        encoded = [n.encode() for n in times.names]
        ends = array.array("I", itertools.accumulate(map(len, encoded)))
        body = array.array("d", times.times).tobytes() + ends.tobytes() + b"".join(encoded)
        n = len(encoded)
        meta = {"format": _FORMAT, "rel": rel, "ident": list(ident), "n": n, "blob": len(body) - 12 * n,
                "subdirs": subdirs, "order": sys.byteorder, "xxh": xxhash.xxh3_64_hexdigest(body)}  # fmt: skip
        head = json.dumps(meta).encode()
        head += b" " * (-(len(head) + 1) % 8) + b"\n"  # the times start 8-aligned
        data = head + body
        with contextlib.suppress(OSError):
            os.makedirs(self.where, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.where, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._file(rel))
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
