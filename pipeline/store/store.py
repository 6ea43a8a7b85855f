"""The checkpoint store: objects + manifests under one root, local or any fsspec URL.

Layout (DESIGN.md "The store")::

    objects/<2 hex>/<30 hex>.<parquet|joblib|json>   content-addressed by file checksum
    stages/<stage>/<key>.json                         manifest = the commit of a stage result
    checkpoints/<stage>/<key>/<step>.json             training checkpoint manifests
    quarantine/                                       objects that failed verification
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import xxhash

from ..errors import FingerprintError, IntegrityError, StoreError
from ..fingerprint import fingerprint
from .backend import LocalBackend, open_backend
from .codecs import CODECS, _is_jsonable
from .manifest import Manifest, iter_leaves
from .objects import Objects, checksum, object_path

STORE_FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class VerifyReport:
    """What ``Store.verify()`` found. ``clean`` when nothing is corrupt, missing or unreadable."""

    manifests: int
    ok: int
    corrupt: int
    missing: int
    quarantined: int
    bad_manifests: int
    orphans: int
    temp_files: int

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.missing or self.bad_manifests)


def safe_name(stage: str) -> str:
    """A stage name as a directory name: unchanged when already safe, else escaped + hashed."""
    safe = _SAFE.sub("_", stage)
    if safe == stage and stage not in ("", ".", ".."):
        return stage
    return f"{safe}-{xxhash.xxh3_64_hexdigest(stage.encode())[:8]}"


def _key_file(key: str) -> str:
    return key.partition(":")[2] or key


class Store:
    """A checkpoint store at a local path or any fsspec URL (``memory://``, ``s3://``…)."""

    def __init__(
        self, url: str | os.PathLike, *, fsync: bool = True, create: bool = True, **storage_options: Any
    ) -> None:
        """``create=False`` opens an existing store for reading: nothing is created or
        written, and a missing local store is a StoreError (read-only commands use it)."""
        self.url = os.fspath(url)
        self.backend = open_backend(self.url, fsync=fsync, **storage_options)
        self.objects = Objects(self.backend)
        if not create:
            if isinstance(self.backend, LocalBackend) and not os.path.isdir(self.backend.root):
                raise StoreError(f"no store at {self.backend.root} (a run creates it; check --store / PIPELINE_STORE)")
        elif isinstance(self.backend, LocalBackend):
            self._open_local(self.backend.root)
        self._check_marker(create)

    def _open_local(self, root: str) -> None:
        if os.path.exists(root) and not os.path.isdir(root):
            raise StoreError(f"store path {root} is a file, not a directory: choose another --store")
        try:
            os.makedirs(os.path.join(root, "objects", "tmp"), exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create store directory {root}: {e.strerror} (choose a writable --store / PIPELINE_STORE)"
            ) from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreError(f"store directory {root} is not writable (choose another --store or fix its permissions)")

    def _check_marker(self, create: bool = True) -> None:
        try:
            raw = self.backend.read("store.json")
        except FileNotFoundError:
            if not create:
                return
            self.backend.write_atomic("store.json", json.dumps({"format": STORE_FORMAT}).encode())
            return
        except OSError as e:
            raise StoreError(
                f"cannot read store {self.url}: {e} (check its location, credentials and permissions)"
            ) from e
        try:
            fmt = json.loads(bytes(raw)).get("format")
        except (ValueError, AttributeError):
            fmt = None
        if fmt != STORE_FORMAT:
            raise StoreError(f"{self.url} is not a checkpoint store of format {STORE_FORMAT} (store.json says {fmt!r})")

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- values ----------------------------------------------------------------------
    def save(self, value: Any, *, what: str = "value") -> dict[str, Any]:
        """Write a value as objects (a tuple or dict part by part); return its output tree."""
        if type(value) is tuple:
            tree: dict[str, Any] = {"tuple": [self.save(v, what=f"{what}[{i}]") for i, v in enumerate(value)]}
        elif type(value) is dict and value and all(type(k) is str for k in value) and not _is_jsonable(value):
            tree = {"dict": {k: self.save(v, what=f"{what}[{k!r}]") for k, v in value.items()}}
        else:
            tree = self.objects.put(value, what=what)
        try:
            tree["fingerprint"] = fingerprint(value, name=what)
        except FingerprintError:
            tree["fingerprint"] = ""
        return tree

    def load(self, tree: dict[str, Any]) -> Any:
        """Read an output tree back. Raises IntegrityError / StoreError when it can't."""
        if "tuple" in tree:
            return tuple(self.load(t) for t in tree["tuple"])
        if "dict" in tree:
            return {k: self.load(t) for k, t in tree["dict"].items()}
        return self.objects.get(tree)

    # -- manifests -------------------------------------------------------------------
    @staticmethod
    def manifest_path(stage: str, key: str, step: int | None = None) -> str:
        if step is None:
            return f"stages/{safe_name(stage)}/{safe_name(_key_file(key))}.json"
        return f"checkpoints/{safe_name(stage)}/{safe_name(_key_file(key))}/{int(step)}.json"

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest last: from here on the result exists."""
        self.backend.write_atomic(self.manifest_path(manifest.stage, manifest.key, manifest.step), manifest.to_json())

    def _read_manifest(self, rel: str) -> Manifest | None:
        try:
            raw = self.backend.read(rel)
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(bytes(raw))
        except (ValueError, TypeError, KeyError) as e:
            warnings.warn(f"manifest {rel} in {self.url} is unreadable ({e}); moved to quarantine/", stacklevel=3)
            with contextlib.suppress(FileNotFoundError):  # another reader moved it first
                self.backend.move(rel, "quarantine/" + rel.replace("/", "__"))
            return None

    def manifest(self, stage: str, key: str, step: int | None = None) -> Manifest | None:
        return self._read_manifest(self.manifest_path(stage, key, step))

    def manifests(self, stage: str | None = None) -> Iterator[Manifest]:
        """Every readable stage manifest (of one stage, or of all)."""
        prefix = f"stages/{safe_name(stage)}" if stage is not None else "stages"
        for rel in sorted(self.backend.list(prefix)):
            if rel.endswith(".json"):
                m = self._read_manifest(rel)
                if m is not None:
                    yield m

    def latest(self, stage: str) -> Manifest | None:
        """The newest manifest of a stage (by creation time)."""
        return max(self.manifests(stage), key=lambda m: m.created, default=None)

    def stages(self) -> list[str]:
        return sorted({m.stage for m in self.manifests()})

    def delete_manifest(self, manifest: Manifest) -> None:
        self.backend.delete(self.manifest_path(manifest.stage, manifest.key, manifest.step))

    # -- integrity -------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Re-hash every object every manifest references; quarantine corrupt ones."""
        referenced: dict[str, str] = {}
        n_manifests = bad = 0
        for prefix in ("stages", "checkpoints"):
            for rel in sorted(self.backend.list(prefix)):
                if not rel.endswith(".json"):
                    continue
                m = self._read_manifest(rel)
                if m is None:
                    bad += 1
                    continue
                n_manifests += 1
                for leaf in iter_leaves(m.outputs):
                    referenced[object_path(leaf["object"], CODECS[leaf["codec"]].suffix)] = leaf["object"]
        ok = corrupt = missing = 0
        for rel, oid in sorted(referenced.items()):
            try:
                buf = self.backend.read(rel)
            except FileNotFoundError:
                missing += 1
                continue
            if checksum(buf) == oid:
                ok += 1
            else:
                corrupt += 1
                del buf
                self.objects.quarantine(rel)
        present = [r for r in self.backend.list("objects") if not r.startswith("objects/tmp/")]
        return VerifyReport(
            manifests=n_manifests,
            ok=ok,
            corrupt=corrupt,
            missing=missing,
            quarantined=sum(1 for _ in self.backend.list("quarantine")),
            bad_manifests=bad,
            orphans=sum(1 for r in present if r not in referenced),
            temp_files=sum(1 for _ in self.backend.list("objects/tmp")),
        )


__all__ = ["Store", "VerifyReport", "IntegrityError", "safe_name"]
