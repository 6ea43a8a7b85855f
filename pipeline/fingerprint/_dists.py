"""Which installed distributions provide each top-level module, cached across runs.

``importlib.metadata.packages_distributions()`` reads every installed distribution's
metadata: 0.3-0.45 s on each run of a typical environment. Its result depends only on
what the ``sys.path`` directories hold, and installing, removing or upgrading anything
adds or removes an entry (a ``*.dist-info`` directory, a ``.pth`` file) and so changes
the directory's mtime. So the map is kept in a file keyed on the interpreter and every
``sys.path`` entry with its mtime; any change of them recomputes it.

The map only says which distribution *names* to ask. A name it lacks (or a distribution
since removed) is a miss that recomputes the map once in this process before giving up.
Versions (``importlib.metadata.version`` costs ~10 ms each) are kept beside the map with
the ``name-<version>.dist-info`` directory they were read from, and served only while
that directory exists; any other layout (an egg-info, an editable install without the
version in its name) is read live every time. So a stale file can cost time, never a
wrong version.

The file: ``$PIPELINE_DIST_CACHE`` if set, else ``~/.cache/pipeline/distributions-<id>.json``
(``<id>`` from the interpreter and the ``sys.path`` entries, so two projects or checkouts on
one environment keep a file each instead of recomputing over each other's on every run);
written atomically (temp file next to it, renamed).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
import threading

import xxhash

_lock = threading.Lock()
_map: dict[str, list[str]] | None = None
_versions: dict[str, list[str]] = {}  # distribution -> [its dist-info directory, version]
_key_now: list | None = None
_fresh = False  # the map in memory was computed in this process (not read from the file)


def cache_file() -> str:
    override = os.environ.get("PIPELINE_DIST_CACHE")
    if override:
        return override
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = [sys.executable, sys.prefix, *(os.path.abspath(p or os.curdir) for p in sys.path)]
    tag = xxhash.xxh3_64_hexdigest("\0".join(where).encode("utf-8", "surrogatepass"))
    return os.path.join(base, "pipeline", f"distributions-{tag}.json")


def _key() -> list:
    """What the map depends on: the interpreter and each sys.path entry with its mtime."""
    entries = []
    for p in sys.path:
        full = os.path.abspath(p or os.curdir)
        try:
            mtime = os.stat(full).st_mtime_ns
        except OSError:
            mtime = None
        entries.append([full, mtime])
    return [sys.version, sys.executable, entries]


def _read(key: list) -> dict[str, list[str]] | None:
    global _versions
    try:
        with open(cache_file(), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: computed afresh
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("map"), dict):
        return None
    versions = doc.get("versions")
    _versions = versions if isinstance(versions, dict) else {}
    return doc["map"]


def _write(key: list, mapping: dict[str, list[str]]) -> None:
    """Best effort: a cache that can't be written costs the next run its scan, nothing else."""
    path = cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".distributions-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "map": mapping, "versions": _versions}, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _compute(key: list) -> dict[str, list[str]]:
    global _fresh, _versions
    _versions = {}
    mapping = {k: list(v) for k, v in importlib.metadata.packages_distributions().items()}
    _fresh = True
    _write(key, mapping)
    return mapping


def distributions_map() -> dict[str, list[str]]:
    """top-level module -> distribution names, from the file when nothing changed."""
    global _map
    with _lock:
        _load()
        return _map


def _load() -> None:
    global _map, _key_now
    if _map is None:
        _key_now = _key()
        _map = _read(_key_now)
        if _map is None:
            _map = _compute(_key_now)


def version(dist: str) -> str:
    """The installed version of distribution ``dist`` (PackageNotFoundError if none)."""
    with _lock:
        _load()
        entry = _versions.get(dist)
    if isinstance(entry, list) and len(entry) == 2 and os.path.isdir(entry[0]):
        return entry[1]
    found = importlib.metadata.distribution(dist)
    number = found.version
    where = getattr(found, "_path", None)  # PathDistribution's directory
    if where is not None and str(where).endswith(f"-{number}.dist-info") and os.path.isdir(where):
        with _lock:
            _versions[dist] = [str(where), number]
            if _map is not None and _key_now is not None:
                _write(_key_now, _map)
    return number


def refresh() -> bool:
    """After a miss in a map read from the file: recompute it once in this process.
    True when that happened (the caller looks again), False when the map is already fresh."""
    global _map, _key_now
    with _lock:
        if _fresh:
            return False
        _key_now = _key()
        _map = _compute(_key_now)
        return True
