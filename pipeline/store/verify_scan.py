"""The lean pass of ``Store.verify``: the manifests a store would serve, judged without
building a Manifest each, and the objects they name re-hashed; on a large local store in
worker processes too (``pipeline.store.verify_worker``), over shares of the manifests.

It only ever concludes "fine": a manifest it passes is one ``Store._check_manifest`` serves
(sealed by the store's sealer, of the current format, naming the stage, key and step of its
path, with a well-formed output tree and code components); an object it passes hashes to its
name. Everything else (damaged, unsealed, of format 1, another key's seal, unreadable, a
symbolic link, missing, corrupt) goes back to ``Store.verify``'s full checks, which count,
warn, quarantine and name users as they always have: this pass can make verify faster, never
change what it finds.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..progress_bar import track
from . import layout
from . import seal as _seal
from .backend import Backend
from .local import LocalBackend
from .manifest import FORMAT, loads, plain_components
from .objects import checksum, leaf_path
from .tree import from_doc, leaves

GROUP = 256 << 20
"""Object bytes read ahead at most (a remote backend reads many at once)."""
GUESS = 8 << 10
"""A manifest is read by one ``read`` of this many bytes (they are ~2 KB); a larger one as any file."""
MIN_SHARE = 25_000
"""Manifests a worker process must get for one to start (its start-up, ~0.2-0.4 s, must pay)."""
MAX_WORKERS = 3

Who = tuple[str, str, "int | None"]
"""(stage, key, step) of a manifest."""


@dataclass
class Share:
    """What the lean pass found in one share of the manifests."""

    fine: int = 0
    """Manifests found fine (each would be served)."""
    slow: list[str] = field(default_factory=list)
    """Manifest paths it could not vouch for: the full checks judge them."""
    ok: list[str] = field(default_factory=list)
    """Paths of the objects of fine manifests that hash to their names."""
    failed: list[str] = field(default_factory=list)
    """Paths of the objects of fine manifests that did not (missing, corrupt, unreadable…)."""
    users: dict[str, list[tuple[str, Who]]] = field(default_factory=dict)
    """Failed path -> (manifest path, who) of each fine manifest of the share naming it."""


class _Guess(Mapping[str, int]):
    """Every manifest's expected size for ``read_many``: at most ``GUESS`` bytes."""

    def __getitem__(self, _rel: str) -> int:
        return GUESS

    def get(self, _rel: str, _default: Any = None) -> int:  # type: ignore[override]
        return GUESS

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def judge(rel: str, raw: Any, sealer: _seal.Sealer) -> tuple[Who, tuple[tuple[str, str, int], ...]] | None:
    """``((stage, key, step), ((object path, object id, bytes)…))`` of the manifest ``raw``
    (the bytes read from ``rel``) when the full check would serve it; None when it can't
    tell cheaply (then the full check judges it)."""
    if type(raw) is not bytes or not raw.startswith(b'{"seal": "'):
        return None
    try:
        doc = loads(_seal.unseal(raw, sealer))
    except (ValueError, RecursionError):  # a bad or foreign seal, or not JSON
        return None
    if type(doc) is not dict or doc.get("format") != FORMAT:
        return None
    stage, key, step = doc.get("stage"), doc.get("key"), doc.get("step")
    if type(stage) is not str or type(key) is not str or (step is not None and (type(step) is not int or step < 0)):
        return None
    if "code_components" in doc and not plain_components(doc["code_components"]):
        return None
    try:
        tree = from_doc(doc.get("outputs"))
        if layout.manifest_path(stage, key, step) != rel:
            return None
    except (ValueError, TypeError, KeyError):
        return None
    # (tuples of strings and numbers only: the cyclic GC stops tracking them, so that holding
    # 100k of them does not make each of its collections longer)
    return (stage, key, step), tuple([(leaf_path(leaf), leaf.object, leaf.bytes) for leaf in leaves(tree)])


def read_grouped(backend: Backend, sizes: Mapping[str, int]) -> Iterator[tuple[str, Any]]:
    """``(path, bytes or the exception)`` of each object of ``sizes`` (path -> bytes), in path
    order, read many at once in groups of at most ``GROUP`` bytes."""
    group: list[str] = []
    size = 0
    for rel in sorted(sizes):
        if group and size + sizes[rel] > GROUP:
            yield from backend.read_many(group, sizes)
            group, size = [], 0
        group.append(rel)
        size += sizes[rel]
    yield from backend.read_many(group, sizes)


def scan(backend: Backend, sealer: _seal.Sealer, rels: Sequence[str]) -> Share:
    """The lean pass over the manifests at ``rels`` and the objects the fine ones name."""
    share = Share()
    named: list[tuple[str, Who, tuple[tuple[str, str, int], ...]]] = []
    objects: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for rel, raw in backend.read_many(rels, _Guess()):
        got = judge(rel, raw, sealer)
        if got is None:
            share.slow.append(rel)
            continue
        named.append((rel, *got))
        for path, oid, size in got[1]:
            objects[path] = oid
            sizes[path] = size
    share.fine = len(named)
    _hash_all(backend, objects, sizes, share)
    if share.failed:
        wanted = set(share.failed)
        for rel, who, paths in named:
            for path, _oid, _size in paths:
                if path in wanted:
                    share.users.setdefault(path, []).append((rel, who))
    return share


def _hash_all(backend: Backend, objects: dict[str, str], sizes: dict[str, int], share: Share) -> None:
    """Read and hash each object of ``objects`` (path -> id): its path into ``share.ok`` when
    it hashes to its id, else into ``share.failed``. (Large objects hash at memory speed in one
    thread, 12-15 GB/s here: more threads measured no faster.)"""
    ok, failed = share.ok, share.failed
    for path, buf in track(read_grouped(backend, sizes), "verify", total=len(sizes), unit="objects"):
        if not isinstance(buf, BaseException) and checksum(buf) == objects[path]:
            ok.append(path)
        else:
            failed.append(path)
        del buf  # (a memory map is released before the next is made)


def workers_for(backend: Backend, n: int) -> int:
    """How many worker processes a lean pass over ``n`` manifests of ``backend`` takes: none
    unless the store is local, large enough to pay for their start-up, and the machine has
    a core to spare (its 1-minute load average at most its number of cores less one: measured
    at load 2-4 on 2 cores, a second process made verify slower, 8.2 s vs 6.1 s)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not isinstance(backend, LocalBackend) or cores < 2 or n < 2 * MIN_SHARE:
        return 0
    try:
        if os.getloadavg()[0] > cores - 1:  # no core idle: another process would only take turns with this one
            return 0
    except OSError:
        pass
    return max(0, min(MAX_WORKERS, cores - 1, n // MIN_SHARE - 1))


def scan_all(backend: Backend, sealer: _seal.Sealer, rels: Sequence[str], workers: int | None = None) -> list[Share]:
    """The lean pass over ``rels``: one share here, and one in each of ``workers`` worker
    processes (None: as many as pay, ``workers_for``). A worker that fails leaves its share
    to be done here (with a warning): the result is the same, only slower."""
    n = workers_for(backend, len(rels)) if workers is None else workers
    if n <= 0 or not isinstance(backend, LocalBackend) or len(rels) < 2:
        return [scan(backend, sealer, rels)]
    n = min(n, len(rels) - 1)
    cut = [len(rels) * i // (n + 1) for i in range(n + 2)]
    parts = [rels[cut[i] : cut[i + 1]] for i in range(n + 1)]
    started = [_Worker(backend.root, sealer, part) for part in parts[1:]]
    try:
        shares = [scan(backend, sealer, parts[0])]
    except BaseException:
        for worker in started:
            worker.stop()
        raise
    for worker, part in zip(started, parts[1:]):
        got = worker.result()
        if isinstance(got, Share):
            shares.append(got)
        else:
            warnings.warn(f"a verify worker process failed ({got}); its share was checked here", stacklevel=3)
            shares.append(scan(backend, sealer, part))
    return shares


class _Worker:
    """``pipeline.store.verify_worker`` over one share, in a fresh interpreter (started, not
    forked: it imports the store itself) fed its share through its stdin."""

    def __init__(self, root: str, sealer: _seal.Sealer, rels: Sequence[str]) -> None:
        self._out: tuple[bytes, bytes] | BaseException = OSError("no result")
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        try:
            data = pickle.dumps((root, sealer, list(rels)), pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - a sealer that does not pickle: done here
            self._out = e
            return
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {package_root!r}); from pipeline.store.verify_worker import main; main()"
        )
        env = {**os.environ, "PIPELINE_PROGRESS": "0"}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            self._out = e
            return
        self._thread = threading.Thread(target=self._talk, args=(data,), name="verify-worker", daemon=True)
        self._thread.start()

    def _talk(self, data: bytes) -> None:
        try:
            self._out = self._proc.communicate(data)  # type: ignore[union-attr]
        except BaseException as e:  # noqa: BLE001 - reported by result()
            self._out = e

    def stop(self) -> None:
        """Kill the worker (its result is not wanted any more)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> Share | str:
        """The worker's Share, or what went wrong."""
        if self._thread is not None:
            self._thread.join()
        if isinstance(self._out, BaseException):
            return f"{type(self._out).__name__}: {self._out}"
        out, err = self._out
        code = self._proc.returncode if self._proc is not None else None
        if code == 0:
            try:
                got = pickle.loads(out)
            except Exception as e:  # noqa: BLE001 - a torn result
                return f"unreadable result: {e}"
            if isinstance(got, Share):
                return got
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {code}"]
        return last[0]


__all__ = ["Share", "judge", "scan", "scan_all", "read_grouped", "workers_for"]
