"""Manifests this machine has read from a remote store, by path and ETag, so that listing
the store is enough to know which ones are new or changed since the last time.

An S3 listing gives each key's ETag: the version of the bytes there (their MD5 for a
single-part PUT). A manifest is read from the store once per version; afterwards, a
listing that shows the same ETag for the same path lets ``ls``, ``gc`` and ``verify`` take
its bytes from here instead of a GET each. It is safe because

- only an ETag that is an MD5 (what S3 gives a single-part PUT without KMS; a manifest is
  one small PUT) is used, and a body is stored under the ETag of the GET response that
  returned it (never the listing's, which may be older), only if it is that body's MD5;
- it is used only when the path's ETag in a listing just made is that same ETag, and only
  if its MD5 is that ETag still (a damaged or tampered entry is ignored and dropped): the
  bytes used are provably the version the listing shows, as a GET would have returned;
- what reads a cached body checks it as it checks any manifest (seal, HMAC, path);
- a lookup (``Store.manifest``) never uses it, and gc decides from a complete listing.

One SQLite file per store URL and endpoint, in ``$PIPELINE_MANIFEST_CACHE`` (``off``: no
cache), else ``$XDG_CACHE_HOME/pipeline/manifests`` (``~/.cache/...``). Several processes
may use it at once (WAL). Any trouble with it (unwritable, damaged, locked too long) turns
it off for the process: the store is read as if there were no cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import xxhash

ENV = "PIPELINE_MANIFEST_CACHE"
_MD5 = re.compile(r'"?([0-9a-f]{32})"?')
_SCHEMA = "CREATE TABLE IF NOT EXISTS manifests (rel TEXT PRIMARY KEY, etag TEXT NOT NULL, body BLOB NOT NULL)"
_CHUNK = 500
"""Paths per SELECT (SQLite allows 999 parameters by default in older builds)."""


def directory() -> Path | None:
    """Where the cache files live; None when the cache is turned off."""
    where = os.environ.get(ENV)
    if where is not None:
        return None if where.strip().lower() in ("", "off", "0", "false", "no") else Path(where).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipeline" / "manifests"


def is_version(etag: str, body: bytes) -> bool:
    """True when ``etag`` is an MD5, the MD5 of ``body``: then ``body`` is that version's bytes."""
    m = _MD5.fullmatch(etag)
    return m is not None and hashlib.md5(body, usedforsecurity=False).hexdigest() == m.group(1)


class ManifestCache:
    """Manifest bodies by (path, ETag), in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = self._connect()

    @classmethod
    def for_store(cls, url: str, endpoint: str) -> ManifestCache | None:
        """The cache of the store at ``url`` served by ``endpoint``; None when turned off."""
        where = directory()
        if where is None:
            return None
        name = xxhash.xxh3_64_hexdigest(f"{endpoint}\n{url.rstrip('/')}".encode())
        return cls(where / f"{name}.v1.sqlite")  # the table layout's version

    def _connect(self) -> sqlite3.Connection | None:
        for attempt in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                return db
            except sqlite3.DatabaseError as e:  # not a database (damaged): start it again, once
                if attempt or isinstance(e, sqlite3.OperationalError):
                    self._off(e)
                    return None
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            except OSError as e:
                self._off(e)
                return None
        return None

    def _off(self, e: Exception) -> None:
        warnings.warn(f"manifest cache {self.path} not used ({e}): manifests are read from the store", stacklevel=4)
        if getattr(self, "_db", None) is not None:
            try:
                self._db.close()  # type: ignore[union-attr]
            except sqlite3.Error:
                pass
        self._db = None

    def get_many(self, wanted: Mapping[str, str]) -> dict[str, bytes]:
        """The cached bodies of the paths in ``wanted`` (path -> the ETag a listing shows now)
        whose cached version is that ETag and whose bytes are its MD5; the others are not returned."""
        if self._db is None or not wanted:
            return {}
        found: dict[str, bytes] = {}
        bad: list[str] = []
        rels = list(wanted)
        with self._lock:
            try:
                for start in range(0, len(rels), _CHUNK):
                    chunk = rels[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(f"SELECT rel, etag, body FROM manifests WHERE rel IN ({marks})", chunk)
                    for rel, etag, body in rows:
                        if etag != wanted[rel]:
                            continue
                        body = bytes(body)
                        if is_version(etag, body):
                            found[rel] = body
                        else:
                            bad.append(rel)
                if bad:
                    self._db.executemany("DELETE FROM manifests WHERE rel = ?", [(r,) for r in bad])
            except sqlite3.Error as e:
                self._off(e)
                return {}
        return found

    def put_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        """Remember ``(path, ETag of the response, body)`` of manifests just read from the store."""
        if self._db is None:
            return
        rows = [(rel, etag, body) for rel, etag, body in items if is_version(etag, body)]
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._off(e)

    def prune(self, prefix: str, listed: set[str]) -> None:
        """Drop the entries under ``prefix`` that a complete listing of it no longer shows."""
        if self._db is None:
            return
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT rel FROM manifests WHERE rel >= ? AND rel < ?", (prefix + "/", prefix + "0")
                ).fetchall()
                gone = [(r,) for (r,) in rows if r not in listed]
                if gone:
                    self._db.executemany("DELETE FROM manifests WHERE rel = ?", gone)
            except sqlite3.Error as e:
                self._off(e)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
