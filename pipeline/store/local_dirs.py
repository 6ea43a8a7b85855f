"""Empty directories of a local store, removed: one ``rmdir`` each, so a directory a writer put a
file in meanwhile stays, and one a writer was about to use is made again by it
(``LocalBackend._place``). Nothing here deletes a file."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Iterator


def remove_empty(path_of: Callable[[str], str], prefix: str, within: Iterable[str] | None = None) -> None:
    """Remove empty directories under ``prefix`` (and ``prefix`` itself when empty); ``path_of``
    maps a store-relative path to the file system's. ``within``: paths under ``prefix`` whose
    files were just removed; then only the directories they lie in (and theirs, up to
    ``prefix``) are tried, deepest first, no listing."""
    if within is not None:
        top = prefix.strip("/")
        dirs = {top}
        for rel in within:
            d = rel.rpartition("/")[0]
            while d.startswith(top + "/") and d not in dirs:
                dirs.add(d)
                d = d.rpartition("/")[0]
        for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            with contextlib.suppress(OSError):  # not empty (a writer, another sweep)
                os.rmdir(path_of(d))
        return
    for root, _dirs, _files in os.walk(path_of(prefix), topdown=False):
        with contextlib.suppress(OSError):  # not empty (a writer is using it)
            os.rmdir(root)


def remove_stale_empty(top: str, depth: int, before: float, *, dry_run: bool = False) -> int:
    """Remove the empty directories ``depth`` levels below directory ``top`` last changed before
    ``before`` (seconds since the epoch: no entry added or removed since); how many (with
    ``dry_run``, how many would go: none is removed)."""
    removed = 0
    for path, changed in _dirs_below(top, depth):
        if changed >= before:
            continue
        if dry_run:
            try:
                with os.scandir(path) as it:
                    removed += next(it, None) is None
            except OSError:  # gone meanwhile
                pass
            continue
        try:
            os.rmdir(path)
        except OSError:  # not empty (or gone meanwhile)
            continue
        removed += 1
    return removed


def _dirs_below(path: str, depth: int) -> Iterator[tuple[str, float]]:
    """The directories ``depth`` levels below ``path`` (no symbolic link followed), each with
    its modification time."""
    try:
        it = os.scandir(path)
    except OSError:  # missing (or not a directory): none
        return
    with it:
        found = []
        for entry in it:
            try:
                if entry.is_dir(follow_symlinks=False):
                    found.append((entry.path, entry.stat(follow_symlinks=False).st_mtime))
            except OSError:  # gone since it was listed
                continue
    for sub, changed in found:
        if depth <= 1:
            yield sub, changed
        else:
            yield from _dirs_below(sub, depth - 1)
