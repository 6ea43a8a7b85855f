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
the directory. Other backends give their listing's times as they are (an S3 listing carries
them at no extra cost).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import re
import stat as stat_module
import tempfile
import time
from typing import TYPE_CHECKING, NamedTuple

import xxhash

from .backend import LocalBackend, describe_oserror, files_of

if TYPE_CHECKING:
    from .backend import Backend

SETTLED = 1.0
"""Seconds a directory must have been unchanged when it is listed for that listing to be kept."""
_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9._-]+\.json")
"""A manifest file name as ``layout`` makes them (anything else read from a file is refused)."""


class DirTimes(NamedTuple):
    """The ``.json`` files directly in directory ``rel``, newest-written first (ties: by name,
    descending), with their file times."""

    rel: str
    names: list[str]
    times: list[float]


def json_times(backend: Backend, prefix: str) -> list[DirTimes]:
    """Every directory under ``prefix`` (itself included) that holds ``.json`` files, with them."""
    prefix = prefix.strip("/")
    if isinstance(backend, LocalBackend):
        return _Local(backend).walk(prefix)
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
    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
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
        kept = self._load(rel, ident)
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
        if (after.st_dev, after.st_ino, after.st_mtime_ns) == ident and taken - ident[2] >= SETTLED * 1e9:
            self._save(rel, ident, times, subdirs)
        return times, subdirs

    def _file(self, rel: str) -> str:
        return os.path.join(self.where, xxhash.xxh3_64_hexdigest(rel.encode("utf-8", "surrogatepass")))

    def _load(self, rel: str, ident: tuple[int, int, int]) -> tuple[DirTimes, list[str]] | None:
        try:
            with open(self._file(rel), "rb") as f:
                data = f.read()
            head, _, rest = data.partition(b"\n")
            meta = json.loads(head)
            if meta.get("format") != _FORMAT or meta.get("rel") != rel or meta.get("ident") != list(ident):
                return None
            n, subdirs = meta["n"], meta["subdirs"]
            times = array.array("d")
            times.frombytes(rest[: 8 * n])
            names = rest[8 * n :].decode().split("\n") if n else []
            if len(times) != n or len(names) != n or not all(map(_NAME.fullmatch, names)):
                return None
            if not all(isinstance(d, str) and d not in ("", ".", "..") and "/" not in d for d in subdirs):
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none kept, or unreadable: list the directory
        return DirTimes(rel, names, times.tolist()), subdirs

    def _save(self, rel: str, ident: tuple[int, int, int], times: DirTimes, subdirs: list[str]) -> None:
        meta = {"format": _FORMAT, "rel": rel, "ident": list(ident), "n": len(times.names), "subdirs": subdirs}
        data = json.dumps(meta).encode() + b"\n" + array.array("d", times.times).tobytes()
        data += "\n".join(times.names).encode()
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
