"""A new local file whose bytes start for the disk while the rest is still being written.

A durable save writes every byte into the page cache, then ``fsync`` waits while the kernel
writes them all to the disk: the two steps run one after the other. ``FlushingFile`` overlaps
them: each time another ``STEP`` bytes are written, a flusher thread asks the kernel to write
that range out now (Linux ``sync_file_range``), so by the time the caller's ``fsync`` runs only
the tail is left. Durability is unchanged: the caller still fsyncs the file before its rename,
and nothing is committed until that returns. The pages stay in the page cache (clean), so a
load right after the save reads memory, not the disk.

Objects smaller than ``STEP`` start no thread. Without ``sync_file_range`` (not Linux) the file
is a plain file.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from typing import Any

STEP = 16 << 20
"""Bytes per range handed to the flusher."""
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


@functools.cache
def sync_file_range() -> Any:
    """libc's ``sync_file_range``, or None where there is none (looked up on first use: no
    ctypes at import)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


class FlushingFile:
    """A write-only, create-only raw file at ``path`` (``write`` -> bytes written) whose written
    ranges a thread hands to the disk as they fill. ``close`` ends the thread and the file
    (not fsynced: the caller does that)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._size = 0
        self._flushed = 0  # ranges up to here are handed to the flusher
        self._ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.closed = False

    def write(self, b: Any) -> int:
        n = os.write(self._fd, b)
        self._size += n
        if self._size - self._flushed >= STEP and sync_file_range() is not None:
            self._hand_over()
        return n

    def _hand_over(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_flusher, args=(self._fd, self._ranges, self._stop), daemon=True)
            self._thread.start()
        end = self._size - self._size % STEP
        self._ranges.put((self._flushed, end - self._flushed))
        self._flushed = end

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._thread is not None:  # ranges still queued are left to the caller's fsync
                self._stop.set()
                self._ranges.put(None)
                self._thread.join()
        finally:
            os.close(self._fd)

    def __enter__(self) -> FlushingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _flusher(fd: int, ranges: queue.SimpleQueue[tuple[int, int] | None], stop: threading.Event) -> None:
    """Start write-out of each range as it comes, then wait for the one before it (two ranges in
    flight; the waits keep the thread from racing ahead of the disk). A failure here only loses
    the head start: the caller's fsync reports any write error. Once the file is closed the
    ranges still queued are dropped: the fsync that follows writes them all at once."""
    flush = sync_file_range()
    previous = None
    while (item := ranges.get()) is not None and not stop.is_set():
        flush(fd, *item, _WRITE)
        if previous is not None:
            flush(fd, *previous, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
        previous = item
