"""The newest stage results of a store, read without reading every manifest.

A directory listing already says when each manifest file was last written: ``os.scandir``
(one ``lstat`` per file, no open; kept per directory while it is unchanged, see
``pipeline.store.dir_times``) on local disk, ``LastModified`` in an S3 listing. A
manifest is written after its ``created`` time is taken, so ``created <= written + SKEW``
(``SKEW`` allows for a writer's clock running ahead of the store's). Reading candidates
newest-written first, once ``limit`` results are in hand and the oldest of them was created
after the next candidate was written (+ ``SKEW``), no unread manifest can be newer: the page is
complete. A manifest written long after it was created (copied without its times, restored)
only means more of them are read; the answer stays the same.

On S3 the candidates and their times come from the manifest index instead of a listing of
every manifest key (``pipeline.store.manifest_index``: a delta record per write, ``written``
taken after ``created``, so the same bound holds). Either way each manifest on the page is
read from the store and checked as for any lookup (a damaged one is quarantined and skipped,
a vanished one left out and not counted), so a page never holds a result the store would not
serve; what the index may lack (a manifest no delta told of) is missing from the page until
the next full listing (``gc``, a damaged index, or a day after the last one).
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from . import layout
from .backend import SymlinkRefused
from .dir_times import DirTimes, StaleListing, json_times
from .manifest import Manifest

if TYPE_CHECKING:
    from .store import Store

SKEW = 2.0
"""Seconds a writer's clock may run ahead of the store's (its file times; S3's server clock)."""
_BATCH = 64
"""Manifests read at once (remote backends read them in parallel)."""


@dataclass(frozen=True)
class Page:
    """Stage results newest first (by ``created``), and how many of the store's are not on it."""

    manifests: tuple[Manifest, ...]
    total: int
    """Stage result manifests listed (of the stage asked for), less those found gone or damaged."""

    @property
    def not_shown(self) -> int:
        return self.total - len(self.manifests)


def created_at(m: Manifest) -> float:
    """``m.created`` as seconds since the epoch (UTC when it names no zone); -inf when unknown."""
    try:
        t = dt.datetime.fromisoformat(m.created)
    except (TypeError, ValueError):
        return -math.inf
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def newest(store: Store, stage: str | None, *, limit: int, since: float | None) -> Page:
    """See ``Store.newest``."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    try:
        return _newest(store, stage, limit, since, kept=True)
    except StaleListing:  # a kept listing was tampered with: list again
        return _newest(store, stage, limit, since, kept=False)


def _newest(store: Store, stage: str | None, limit: int, since: float | None, kept: bool) -> Page:
    """Candidates newest-written first, merged lazily across directories (each read as it is
    used), read until the bound holds: memory stays flat however many there are."""
    dirs = _dirs(store, layout.stage_dir(stage) if stage is not None else layout.STAGES, kept)
    page = _Page(store, stage, limit, since)
    page.read(_stream(dirs, -math.inf if since is None else since - SKEW))
    return Page(page.manifests(), sum(len(d.names) for d in dirs) - page.lost)


def _stream(dirs: list[DirTimes], floor: float) -> Iterator[tuple[float, str]]:
    """``(written, path)`` of every file written at or after ``floor``, newest first."""
    streams = [zip(itertools.islice(d.times, k), _paths(d)) for d, k in zip(dirs, _counts(dirs, floor))]
    return heapq.merge(*streams, reverse=True)


def created_since(store: Store, stage: str | None, since: float) -> Iterator[Manifest]:
    """Every readable stage result created at or after ``since``, in no particular order,
    reading only the manifests written at or after ``since - SKEW``."""
    prefix = layout.stage_dir(stage) if stage is not None else layout.STAGES
    try:
        candidates = _written_since(_dirs(store, prefix), since - SKEW)
    except StaleListing:  # a kept listing was tampered with: list again
        candidates = _written_since(_dirs(store, prefix, kept=False), since - SKEW)
    for _rel, m in store._read_served(sorted(candidates)):
        if m is not None and (stage is None or m.stage == stage) and created_at(m) >= since:
            yield m


def _dirs(store: Store, prefix: str, kept: bool = True) -> list[DirTimes]:
    """Each directory's manifest files under ``prefix`` with their written times, newest first:
    from the manifest index on S3, else from the listing (kept ones: ``kept``)."""
    index = getattr(store._backend, "index", None)
    return index.json_times(prefix) if index is not None else json_times(store._backend, prefix, kept=kept)


def _counts(dirs: list[DirTimes], floor: float) -> list[int]:
    """How many of each directory's files were written at or after ``floor`` (times descend)."""
    return [bisect.bisect_right(d.times, -floor, key=operator.neg) for d in dirs]


def _written_since(dirs: list[DirTimes], floor: float) -> list[str]:
    return [path for d, k in zip(dirs, _counts(dirs, floor)) for path in itertools.islice(_paths(d), k)]


def _paths(d: DirTimes) -> Iterator[str]:
    return (f"{d.rel}/{n}" for n in d.names)


class _Page:
    """The newest ``limit`` results among the candidates read so far (a min-heap on created)."""

    def __init__(self, store: Store, stage: str | None, limit: int, since: float | None) -> None:
        self.store, self.stage, self.limit, self.since = store, stage, limit, since
        self.kept: list[tuple[float, str, str, Manifest]] = []  # kept[0] is the oldest kept
        self.lost = 0
        """Of those, how many were gone or damaged (quarantined) or of format 1 (not served)."""

    def manifests(self) -> tuple[Manifest, ...]:
        return tuple(entry[-1] for entry in sorted(self.kept, reverse=True))

    def _full(self) -> bool:
        return len(self.kept) >= self.limit

    def _beaten(self, created: float) -> bool:
        """True when a result created at ``created`` can't be on the page."""
        if self.since is not None and created < self.since:
            return True
        return self._full() and (self.limit == 0 or created < self.kept[0][0])

    def read(self, candidates: Iterator[tuple[float, str]]) -> bool:
        """Read candidates (newest-written first) until none unread can be on the page; True
        when that point was reached before they ran out. Each candidate is read, but only one
        that can be on the page (by the ``created`` its bytes say) is decoded and checked
        whole; what fails the check is left off (and counted lost)."""
        while batch := list(itertools.islice(candidates, _BATCH)):
            if self._beaten(batch[0][0] + SKEW):
                return True
            read = dict(self.store._backend.read_many(rel for _, rel in batch))
            for written, rel in batch:
                if self._beaten(written + SKEW):
                    return True
                raw = read[rel]
                if isinstance(raw, FileNotFoundError):
                    self.lost += 1
                    continue
                said = _created_in(raw)
                if said is not None and self._beaten(said):
                    continue
                self._consider(rel, raw)
        return False

    def _consider(self, rel: str, raw: object) -> None:
        if isinstance(raw, BaseException) and not isinstance(raw, SymlinkRefused):
            raise raw
        m = self.store._accept(rel, raw)
        if m is None:
            self.lost += 1
            return
        if self.stage is not None and m.stage != self.stage:
            return
        entry = (created_at(m), m.stage, m.key, m)  # (stage, key) is unique: ties never compare manifests
        if self._beaten(entry[0]) or (self._full() and entry <= self.kept[0]):
            return
        if self._full():
            heapq.heapreplace(self.kept, entry)
        else:
            heapq.heappush(self.kept, entry)


_CREATED = b'\n "created": "'
"""How a manifest's ``created`` member starts as ``Manifest.to_json`` writes it (indent 1)."""


def _created_in(raw: object) -> float | None:
    """The creation time a manifest's bytes state, read without decoding (nor checking) them;
    None when they are not laid out as the store writes manifests. Only ever used to pass a
    manifest over: one that could be on the page is decoded and checked in full."""
    if isinstance(raw, BaseException):
        return None
    data = bytes(raw)
    at = data.find(_CREATED)
    if at < 0:
        return None
    at += len(_CREATED)
    end = data.find(b'"', at)
    try:
        t = dt.datetime.fromisoformat(data[at:end].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
