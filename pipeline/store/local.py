"""The local-directory backend: a store on a file system, written the durable way (a temp
file, fsync, ``os.replace``, directory fsync; a new directory fsynced into its parent before
anything moves into it), symbolic links inside the store refused, small objects staged in
memory, large files read memory-mapped. The protocol it implements is ``backend.Backend``.
A directory that vanishes between being made and a file being renamed into it (an emptied
checkpoint key's, removed) is made again and the rename retried (``_place``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import mmap
import os
import stat as stat_module
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import xxhash

from ..errors import StoreError
from . import layout, local_dirs
from .backend import HashingWriter, Stat, SymlinkRefused, Writer
from .flush import FlushingFile
from .oserrors import describe_oserror, described

T = TypeVar("T")
_OPEN_DIRS = 256
"""Directory descriptors a local ``read_many`` keeps open at most."""


SMALL = 1 << 20
"""An object up to this size is staged in memory (hashed in one call) and written to its temp
file only when committed: fsynced before the file is closed, and not at all when a durable
commit finds the store holds it already."""


class _LocalStaged:
    __slots__ = ("tmp", "digest", "size", "inline")

    def __init__(self, tmp: str | None, digest: str, size: int, inline: bytes | None = None) -> None:
        self.tmp, self.digest, self.size, self.inline = tmp, digest, size, inline


class _Spool(io.RawIOBase):
    """The raw sink of a local stage: bytes stay in memory up to ``SMALL``; beyond, they go to a
    temp file (``open_file()``), hashed on their way (the bytes held so far first)."""

    def __init__(self, open_file: Callable[[], tuple[str, Any]]) -> None:
        self._held: bytearray | None = bytearray()
        self._open_file = open_file
        self.tmp: str | None = None
        self.file: Any = None
        self.hashing: HashingWriter | None = None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        held = self._held
        if held is not None:
            n = len(b) if type(b) is bytes else memoryview(b).nbytes
            if len(held) + n <= SMALL:
                held += b
                return n
            self.tmp, self.file = self._open_file()
            self.hashing = HashingWriter(self.file)
            self._held = None
            self.hashing.write(held)
        return self.hashing.write(b)  # type: ignore[union-attr]

    def staged(self) -> _LocalStaged:
        if self.hashing is None:
            data = bytes(self._held or b"")
            return _LocalStaged(None, xxhash.xxh3_128_hexdigest(data), len(data), data)
        return _LocalStaged(self.tmp, self.hashing.hexdigest(), self.hashing.size)

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()


class LocalBackend:
    """A directory on a local filesystem: temp + fsync + rename, reads memory-mapped.

    Symbolic links inside the store are never followed: reading one is a SymlinkRefused."""

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self._prefix = os.path.join(self.root, "")
        self.url = self.root
        self.fsync = fsync
        self._real_root = os.path.realpath(self.root)
        self._temps_checked = False
        """True once ``objects/tmp`` was made or checked (a directory, no link) by this backend:
        a temp file is then created without an ``lstat`` of it first (a missing directory, one
        a test or a hand removed, is made again and the create retried)."""

    def _path(self, rel: str) -> str:
        if _POSIX:  # (a store's paths hold no empty component: the same path as the join's)
            return self._prefix + rel
        return os.path.join(self.root, *rel.split("/"))

    def _makedirs(
        self, path: str, durable: bool = True, gained: set[str] | None = None, known: set[str] | None = None
    ) -> None:
        """Create ``path`` and missing parents, each new entry made durable in its parent (or,
        with ``gained``, the parents that gained one collected there, for the caller to fsync).
        A symbolic link in the way (inside the store) is moved to quarantine/ first.

        A directory that is there costs one ``lstat`` (a directory, and no link); only a missing
        one looks at its parents. ``known``: directories this caller checked or made just
        before (and adds to), not looked at again."""
        if known is not None:
            if path in known:
                return
            known.add(path)  # (checked or made below, or this raises)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = 0
        if stat_module.S_ISDIR(mode):
            return
        if stat_module.S_ISLNK(mode):
            if not path.startswith(self.root + os.sep):  # the store's root (or above it) may be a link
                if os.path.isdir(path):
                    return
            else:
                rel = os.path.relpath(path, self.root).replace(os.sep, "/")
                target = self._path(layout.quarantine_path(rel))
                self._makedirs(os.path.dirname(target), durable or gained is not None)
                os.replace(path, target)
        parent = os.path.dirname(path)
        if parent != path:
            self._makedirs(parent, durable, gained, known)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
            return
        if gained is not None:
            gained.add(parent)
        elif durable:
            self._fsync_dir(parent)

    def make_parents(self, rels: Iterable[str]) -> None:
        """Create the directories ``rels`` lie in, as ``_makedirs`` does, but with one fsync
        per directory that gained entries, however many (many moves into a new tree: gc's
        set-aside), all before this returns: nothing is moved in before its directory is durable."""
        gained: set[str] = set()
        known: set[str] = set()
        for directory in sorted({os.path.dirname(self._path(rel)) for rel in rels}):
            self._makedirs(directory, durable=False, gained=gained, known=known)
        for parent in sorted(gained):
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
        spool = _Spool(self._open_temp)
        try:
            with described("an object", self.url):
                try:
                    with io.BufferedWriter(spool, buffer_size=4 << 20) as buffered:
                        writer(buffered)
                finally:
                    spool.close_file()
        except BaseException:  # an OSError (described by now) or the writer's own error
            if spool.tmp is not None:
                _unlink(spool.tmp)
            raise
        return spool.staged()

    def _open_temp(self) -> tuple[str, Any]:
        """A new temp file for an object beyond ``SMALL`` (one that flushes as it goes when fsynced)."""
        if self.fsync:
            return self._new_temp(FlushingFile)
        return self._new_temp(functools.partial(open, mode="wb", buffering=0))

    def _new_temp(self, create: Callable[[str], T]) -> tuple[str, T]:
        """``create(path)`` of a fresh temp file path; its directory checked once per backend."""
        tmp = self._path(layout.temp_path())
        if not self._temps_checked:
            self._makedirs(os.path.dirname(tmp))
            self._temps_checked = True
        try:
            return tmp, create(tmp)
        except FileNotFoundError:  # the directory went since: make it again
            self._makedirs(os.path.dirname(tmp))
            return tmp, create(tmp)

    def commit(self, staged: _LocalStaged, rel: str, *, durable: bool = True) -> None:
        dest = self._path(rel)
        parent = os.path.dirname(dest)
        with described(rel, self.url, undo=lambda: self.discard(staged)):
            self._makedirs(parent, durable)
            sync = self.fsync and durable
            # A duplicate (common for checkpoints) costs no fsync: it is looked for where one is due
            # or the bytes are on disk already; a small one not fsynced is simply written again.
            if (sync or staged.inline is None) and self._holds(dest, staged):
                try:
                    os.utime(dest, follow_symlinks=False)  # young again: gc spares it until our manifest lands
                except FileNotFoundError:
                    pass  # gone meanwhile (a gc): write ours
                else:
                    self.discard(staged)
                    return
            if staged.inline is not None:
                staged.tmp, staged.inline = self._temp_file(staged.inline, sync), None
            elif sync:
                fd = os.open(staged.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._place(functools.partial(os.replace, staged.tmp, dest), parent, durable)

    def _place(self, put: Callable[[], Any], parent: str, durable: bool) -> Any:
        """``put()``: a rename or link of a temp file into ``parent`` (made just before), then
        ``parent`` fsynced when ``durable``. The directory may go meanwhile (an emptied checkpoint
        key's, removed by ``remove_empty`` or gc): then it is made again and ``put`` retried at
        once (an empty directory is what a remover takes; with the file in, it stays), and the
        directories that gained an entry are fsynced with ``parent`` before this returns (a crash
        before then loses a temp file only). A FileNotFoundError while ``parent`` is there (the
        temp file went) is raised."""
        gained: set[str] = set()
        tries = 0
        while True:
            try:
                done = put()
                break
            except FileNotFoundError:
                tries += 1
                if tries > _PLACE_TRIES or os.path.isdir(parent):
                    raise
            self._makedirs(parent, durable=False, gained=gained)
        if durable:
            for directory in sorted(gained | {parent}, key=len, reverse=True):
                try:
                    self._fsync_dir(directory)
                except FileNotFoundError:  # gone since: so is what was put there (deleted)
                    pass
        return done

    def _temp_file(self, data: bytes, sync: bool) -> str:
        """A new temp file holding ``data``, fsynced (when ``sync``) before it is closed."""
        tmp, fd = self._new_temp(_create)
        try:
            try:
                done = os.write(fd, data)
                if done < len(data):  # a write may take only part of the bytes
                    with memoryview(data) as view:
                        while done < len(view):
                            done += os.write(fd, view[done:])
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink(tmp)
            raise
        return tmp

    def _holds(self, dest: str, staged: _LocalStaged) -> bool:
        """True when ``dest`` is a regular file whose bytes hash to the staged checksum
        (same size alone is not enough: rotted bytes of the same size are replaced)."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return False
        if not stat_module.S_ISREG(st.st_mode) or st.st_size != staged.size:
            return False
        try:
            data = self._read_path(dest)
        except (FileNotFoundError, SymlinkRefused):
            return False
        return xxhash.xxh3_128_hexdigest(data) == staged.digest

    def discard(self, staged: _LocalStaged) -> None:
        staged.inline = None
        if staged.tmp is not None:
            _unlink(staged.tmp)

    def write_atomic(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Replace ``rel`` atomically; ``durable=False`` skips the fsyncs (informational records)."""
        dest = self._path(rel)
        parent = os.path.dirname(dest)
        tmp = None
        try:
            with described(rel, self.url):
                self._makedirs(parent, durable)
                tmp = self._temp_file(data, self.fsync and durable)
                self._place(functools.partial(os.replace, tmp, dest), parent, durable)
                tmp = None
        finally:
            if tmp is not None:
                _unlink(tmp)

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist; False when it does (another writer won).

        Exclusive like ``O_CREAT|O_EXCL``, and complete: the bytes go to a temp file that is
        then hard-linked into place (a link fails when the name exists), so nobody ever reads
        a half-written file. Not fsynced: leases are advisory."""
        dest = self._path(rel)
        parent = os.path.dirname(dest)
        with described(rel, self.url):
            self._makedirs(parent, durable=False)
            tmp = self._temp_file(data, False)
            try:
                self._place(functools.partial(os.link, tmp, dest), parent, False)
            except FileExistsError:
                return False
            finally:
                _unlink(tmp)
            return True

    def read(self, rel: str) -> Any:
        """The file's bytes: memory-mapped when large (zero-copy), plain bytes when small."""
        with described(rel, self.url, "read", missing="raise"):
            return self._read_path(self._path(rel))

    def _read_path(self, path: str) -> Any:
        """The bytes of the file at ``path``. A symbolic link (the file or a directory on the
        way) is refused."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkRefused(f"{path} is a symbolic link: the store never follows one") from None
            raise
        if not self._opened_in_place(fd, path):
            os.close(fd)
            raise SymlinkRefused(f"a directory on the way to {path} is a symbolic link: the store follows none")
        return _read_fd(fd)

    def _opened_in_place(self, fd: int, path: str) -> bool:
        """True when the file open as ``fd`` is the one at ``path`` in the store, reached through
        no symbolic link. On Linux the kernel says where the open file is (one ``readlink``);
        elsewhere, or for a file deleted since it was opened, each directory on the way is
        resolved."""
        if path.startswith(self.root + os.sep):
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
            else:
                if where == self._real_root + path[len(self.root) :]:
                    return True
                if not where.endswith(" (deleted)"):
                    return False
        return self._inside(os.path.dirname(path))

    def _inside(self, directory: str) -> bool:
        """True when no symbolic link leads ``directory`` out of its place in the store: none of
        its components below the root is a link (one ``lstat`` each, up to the first missing
        one: nothing below it exists; ``realpath`` costs 20-70 us)."""
        names = directory[len(self._prefix) :].split("/") if _POSIX and directory.startswith(self._prefix) else None
        if names is not None and not _ODD_NAMES.intersection(names):
            path = self.root
            for name in names:
                path = f"{path}/{name}"
                try:
                    mode = os.lstat(path).st_mode
                except (FileNotFoundError, NotADirectoryError):
                    return True
                if stat_module.S_ISLNK(mode):
                    return False
            return True
        return os.path.realpath(directory) == os.path.normpath(
            os.path.join(self._real_root, os.path.relpath(directory, self.root))
        )

    def exists(self, rel: str) -> bool:
        try:  # (not ``described``: each commit asks this of every object its manifest names)
            return stat_module.S_ISREG(os.lstat(self._path(rel)).st_mode)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise describe_oserror(e, rel, self.url, "read") from e

    def stat(self, rel: str) -> Stat:
        with described(rel, self.url, "read", missing="raise"):
            st = os.lstat(self._path(rel))
        return Stat(st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[str]:
        return self._list(prefix.strip("/"))

    def scan(self, prefix: str) -> Iterator[tuple[str, Stat]]:
        return self._scan(prefix.strip("/"))

    def _scan(self, rel_dir: str) -> Iterator[tuple[str, Stat]]:
        """Every file under ``rel_dir``, depth first, as ``os.walk`` sees them (a symbolic link
        to a directory is neither entered nor listed; any other non-directory is listed), with
        its ``lstat`` (taken relative to its directory: no path lookup each)."""
        try:
            fd = os.open(self._path(rel_dir), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # missing (or not a directory): nothing under it
            return
        subdirs = []
        try:
            with os.scandir(fd) as it:
                for entry in files_of(it, subdirs):
                    rel = f"{rel_dir}/{entry.name}"
                    try:  # (not ``described``: this runs for every file listed, and a with costs)
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted since it was listed
                    except OSError as e:
                        raise describe_oserror(e, rel, self.url, "read") from e
                    yield rel, Stat(st.st_size, st.st_mtime)
        finally:
            os.close(fd)
        for name in subdirs:
            yield from self._scan(f"{rel_dir}/{name}")

    def _list(self, rel_dir: str) -> Iterator[str]:
        """The files ``_scan`` lists, without their ``lstat``: each directory scanned by its path
        (five system calls; a scan of a descriptor, for relative ``lstat``s, takes ten), and
        closed before its files are yielded (a caller may delete them as it goes)."""
        subdirs: list[str] = []
        try:
            it = os.scandir(self._path(rel_dir))
        except OSError:  # missing (or not a directory): nothing under it
            return
        with it:
            names = [entry.name for entry in files_of(it, subdirs)]
        for name in names:
            yield f"{rel_dir}/{name}"
        for name in subdirs:
            yield from self._list(f"{rel_dir}/{name}")

    def read_many(self, rels: Iterable[str], sizes: Mapping[str, int] | None = None) -> Iterator[tuple[str, Any]]:
        """Each file is opened relative to its directory, itself opened once, component by
        component from the root with ``O_NOFOLLOW`` (so no symbolic link is followed and no path
        is looked up again). A file not found that way is looked up again by its path: its
        directory may have been replaced since it was opened. ``sizes``: the size each file is
        expected to have at most (a hint that saves a ``fstat`` each; a larger file is read
        whole all the same)."""
        dirs: dict[str, int] = {}
        expect = sizes.get if sizes is not None else _no_size
        try:
            for rel in rels:
                try:
                    got: Any = self._read_at(rel, dirs, expect(rel))
                except FileNotFoundError:
                    try:
                        got = self.read(rel)
                    except (OSError, StoreError) as e:
                        got = e
                except StoreError as e:
                    got = e
                except OSError as e:  # (the error is the value read: described, not raised)
                    got = describe_oserror(e, rel, self.url, "read")
                yield rel, got
        finally:
            for fd in dirs.values():
                os.close(fd)

    def _read_at(self, rel: str, dirs: dict[str, int], size: int | None = None) -> Any:
        head, _, name = rel.rpartition("/")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dir_fd(head, dirs))
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkRefused(f"{self._path(rel)} is a symbolic link: the store never follows one") from None
            raise
        return _read_fd(fd, size)

    def _dir_fd(self, rel_dir: str, dirs: dict[str, int]) -> int:
        """A descriptor of directory ``rel_dir`` ("" = the root), opened without following links."""
        fd = dirs.get(rel_dir)
        if fd is not None:
            return fd
        if len(dirs) >= _OPEN_DIRS:
            for old in dirs.values():
                os.close(old)
            dirs.clear()
        if not rel_dir:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        else:
            parent, _, name = rel_dir.rpartition("/")
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self._dir_fd(parent, dirs))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(self._path(rel_dir)):
                    raise SymlinkRefused(
                        f"a directory on the way to {self._path(rel_dir)} is a symbolic link: the store follows none"
                    ) from None
                raise
        dirs[rel_dir] = fd
        return fd

    def move(self, rel: str, dest: str, *, made: bool = False) -> None:
        """Move ``rel`` to ``dest``, making (durably) the directories on the way, unless
        ``made``: the caller made them just before (``make_parents``); one missing all the same
        (removed since) is made then."""
        target = self._path(dest)
        if not self._inside(os.path.dirname(self._path(rel))):
            raise SymlinkRefused(f"{rel} lies behind a symbolic link: the store moves nothing outside itself")
        with described(rel, self.url, "move", missing="raise"):
            if made:
                try:
                    os.replace(self._path(rel), target)
                    return
                except FileNotFoundError:
                    if not os.path.lexists(self._path(rel)):
                        raise
            self._makedirs(os.path.dirname(target))
            os.replace(self._path(rel), target)

    def delete(self, rel: str) -> None:
        with described(rel, self.url, "delete", missing="ignore"):
            os.unlink(self._path(rel))

    def remove_empty(self, prefix: str, within: Iterable[str] | None = None) -> None:
        """Remove empty directories under ``prefix`` (``local_dirs.remove_empty``)."""
        local_dirs.remove_empty(self._path, prefix, within)

    def remove_stale_empty(self, prefix: str, depth: int, before: float, *, dry_run: bool = False) -> int:
        """Remove the empty directories ``depth`` levels below ``prefix`` unchanged since
        ``before``; how many (``local_dirs.remove_stale_empty``)."""
        return local_dirs.remove_stale_empty(self._path(prefix.strip("/")), depth, before, dry_run=dry_run)


def files_of(entries: Iterable[os.DirEntry], subdirs: list[str]) -> Iterator[os.DirEntry]:
    """The entries of a directory listing that are not directories (files, links to files);
    the names of its directories are added to ``subdirs`` (a link to a directory is neither)."""
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            yield entry
        elif not entry.is_symlink():
            subdirs.append(entry.name)


_POSIX = os.sep == "/" and os.altsep is None
_ODD_NAMES = frozenset(("", ".", ".."))
"""Path components ``_inside`` leaves to ``realpath`` (never in a path the layout makes)."""
_PLACE_TRIES = 16
"""Times a write makes its vanished directory again before its last try (each loss is to a
removal of the directory while it was empty: between our ``mkdir`` and our rename)."""
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create(path: str) -> int:
    return os.open(path, _NEW_FILE, 0o666)


def _no_size(_rel: str) -> None:
    return None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _read_fd(fd: int, expected: int | None = None) -> Any:
    """The bytes of the open file ``fd`` (closed here): plain bytes when small; large files
    memory-mapped (zero-copy) with MADV_SEQUENTIAL: they are read front to back (checksum,
    then decode), and the kernel's aggressive readahead makes a cold read markedly faster
    than default paging. ``expected``: the size the file should have (at most); a small file
    of that size or less is read by one ``read`` (no ``fstat``: a read of a regular file that
    returns fewer bytes than asked for has reached its end); any other is read as if none was
    given."""
    if expected is not None and expected < 1 << 20:
        try:
            data = os.read(fd, expected + 1)
            if len(data) <= expected:  # all of it: more was asked for than came
                os.close(fd)
                return data
            os.lseek(fd, 0, os.SEEK_SET)  # another size than expected: read it as any other
        except BaseException:
            os.close(fd)
            raise
    try:
        size = os.fstat(fd).st_size
        if size < 1 << 20:
            data = os.read(fd, size + 1)
            if len(data) == size:  # as its size says: one call
                return data
            chunks = [data]  # it grew since, or the read was short: read on to its end
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    if hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_SEQUENTIAL)
    import pyarrow as pa

    return pa.py_buffer(mm)  # keeps the mapping alive for as long as the buffer lives
