"""The checkpoint store: objects + manifests under one root, local or any fsspec URL.

Every path is ``layout``'s; everyone outside ``pipeline.store`` asks the store: ``save`` /
``load`` values as typed trees, ``commit`` / ``manifest`` / ``manifests`` results,
``checkpoints(stage, key)``, ``runs`` and ``searches`` records, ``live_objects()``,
``verify()``. A manifest is believed only when its seal matches its bytes and it names
the stage, key and step of the path it was read from; anything else is quarantined and
reported as a miss.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import warnings
from typing import Any, Iterable, Iterator, Sequence

from ..config import settings
from ..errors import FingerprintError, IntegrityError, StoreError, StoreUnreachable
from ..fingerprint import fingerprint, fingerprint_entries
from . import layout, listing
from .backend import UNREACHABLE_HINT, SymlinkRefused, open_backend
from .checkpoints import Checkpoints
from .codecs import CODECS, _is_jsonable
from .listing import Page
from .local import LocalBackend
from .locks import Leases
from .manifest import Manifest, Unsigned, Unverified
from .mirror import Mirrors
from .objects import Objects, quarantine
from .records import Runs, Searches
from .seal import CHECKSUM, Hmac, Sealer
from .tags import Tags
from .tree import DictNode, Leaf, Tree, TupleNode, from_doc, leaves, named_objects
from .verify import Problem, VerifyReport, verify_store

STORE_FORMAT = 1
_NO_VALUE: Any = object()
_UNKNOWN: Any = object()
_COMMIT_ATTEMPTS = 4
_OUTPUTS = b'\n "outputs": '
"""How a manifest's ``outputs`` member starts as ``Manifest.to_json`` writes it (indent 1, so
only a top-level member follows a newline and exactly one space; strings hold no newline)."""
_DECODER = json.JSONDecoder()


@functools.lru_cache(maxsize=4)
def _hmac(key: bytes) -> Hmac:
    return Hmac(key)


def configured_sealer() -> Sealer:
    """The signing key's HMAC sealer when one is configured, else the plain checksum."""
    key = settings().signing_secret()
    return CHECKSUM if key is None else _hmac(key)


def _named_objects(raw: Any) -> Iterator[tuple[str, str]]:
    """``(object id, codec)`` of each object a manifest's bytes name, decoding only its
    ``outputs`` when it is laid out as the store writes it, else the whole document."""
    data = bytes(raw)
    at = data.find(_OUTPUTS)
    try:
        if at >= 0:
            outputs = _DECODER.raw_decode(data[at + len(_OUTPUTS) :].decode())[0]
        else:
            doc = json.loads(data)
            outputs = doc.get("outputs") if isinstance(doc, dict) else None
    except ValueError:  # not JSON (damaged): try the whole document, else it names nothing
        try:
            doc = json.loads(data)
        except ValueError:
            return iter(())
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
    return named_objects(outputs)


class Store:
    """A checkpoint store at a local path or any fsspec URL (``memory://``, ``s3://``…)."""

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        fsync: bool = True,
        create: bool = True,
        sealer: Sealer | None = None,
        mirrors: Sequence[Any] | Mirrors = (),
        mirror_mode: str = "sync",
        read_only: bool = False,
        frames: str | None = None,
        **storage_options: Any,
    ) -> None:
        """``create=False`` opens an existing store for reading: nothing is created or
        written on opening, and a missing local store is a StoreError. ``read_only`` (implies
        ``create=False``; ``ls``, ``show``, ``status``…): reads write nothing either, here or in a
        mirror: a damaged manifest or object is reported and served as a miss, left in place;
        a copy a mirror gives back is served, not restored; a missing mirror is not created.
        ``mirrors``: backup stores (paths, URLs or Stores) each commit is replicated to and
        reads repair from (``pipeline.store.mirror``); ``mirror_mode``: "sync" or "background".
        ``sealer``: how manifests are sealed; None: with the configured signing key
        (``PIPELINE_SIGNING_KEY`` / ``signing_key_file``: :class:`~pipeline.store.seal.Hmac`),
        else a plain checksum. ``frames``: "fast" or "small", how frames of plain numbers are
        written (see ``Settings.frames``); None: as configured."""
        self.url = os.fspath(url)
        frames = settings().frames if frames is None else frames
        if frames not in ("fast", "small"):
            raise StoreError(f"frames={frames!r}: choose 'fast' (Arrow IPC) or 'small' (Parquet, zstd)")
        self.read_only = read_only
        create = create and not read_only
        self._backend = open_backend(self.url, fsync=fsync, **storage_options)
        self._sealer = sealer if sealer is not None else configured_sealer()
        signer = self._sealer if isinstance(self._sealer, Hmac) else None
        self._objects = Objects(self._backend, signer=signer, small_frames=frames == "small")
        self._objects.read_only = read_only
        self._durable = True
        self._relaxed: Store | None = None
        self._warned_unserved: set[type] = set()  # kinds of unserved manifests warned of (once each)
        self.runs = Runs(self._backend)
        self.leases = Leases(self._backend)
        self.searches = Searches(self._backend)
        self.tags = Tags(self._backend)
        self._mirrors = mirrors if isinstance(mirrors, Mirrors) else Mirrors(mirrors, mirror_mode) if mirrors else None
        if self._mirrors is not None:
            self._mirrors.check_distinct(self)
            self._objects.repair = functools.partial(self._mirrors.fetch_object, self)
            self._objects.written = self._mirrors.remember
            self.tags.changed = functools.partial(self._mirrors.tagged, self)
        local = isinstance(self._backend, LocalBackend)
        if not create:
            if local and not os.path.isdir(self._backend.root):
                raise StoreError(f"no store at {self._backend.root} (a run creates it; check --store / PIPELINE_STORE)")
        elif local:
            self._open_local(self._backend.root)
        self._check_marker(create)
        if local and create:
            self.remove_dead_temps()

    def _open_local(self, root: str) -> None:
        if os.path.exists(root) and not os.path.isdir(root):
            raise StoreError(f"store path {root} is a file, not a directory: choose another --store")
        try:
            os.makedirs(os.path.join(root, *layout.TMP.split("/")), exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create store directory {root}: {e.strerror} (choose a writable --store / PIPELINE_STORE)"
            ) from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreError(f"store directory {root} is not writable (choose another --store or fix its permissions)")

    def _check_marker(self, create: bool = True) -> None:
        try:
            raw = self._backend.read(layout.MARKER)
        except FileNotFoundError:
            if not create:
                return
            self._backend.write_atomic(layout.MARKER, json.dumps({"format": STORE_FORMAT}).encode())
            return
        except (OSError, StoreError) as e:
            cause = e.__cause__ if isinstance(e, StoreError) and e.__cause__ is not None else e
            if isinstance(e, StoreUnreachable) or isinstance(cause, ConnectionError):
                why = getattr(cause, "strerror", None) or cause
                raise StoreUnreachable(f"cannot read store {self.url}: {why} ({UNREACHABLE_HINT})") from e
            raise StoreError(
                f"cannot read store {self.url}: {cause} (check its location, credentials and permissions)"
            ) from e
        try:
            fmt = json.loads(bytes(raw)).get("format")
        except (ValueError, AttributeError):
            fmt = None
        if fmt != STORE_FORMAT:
            raise StoreError(f"{self.url} is not a checkpoint store of format {STORE_FORMAT} (store.json says {fmt!r})")

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def relaxed(self) -> Store:
        """A view of this store (same backend, same files) whose writes skip fsync: for
        writes a crash may lose (epoch checkpoints a committed result supersedes)."""
        if not self._durable:
            return self
        if self._relaxed is None:
            view = copy.copy(self)
            view._durable, view._relaxed = False, None
            self._relaxed = view
        return self._relaxed

    @property
    def key_id(self) -> str | None:
        """The id of the signing key this store seals and signs with (None: no key)."""
        return self._sealer.key_id if isinstance(self._sealer, Hmac) else None

    @property
    def durable(self) -> bool:
        return self._durable

    @property
    def mirrors(self) -> Mirrors | None:
        """The backup mirrors commits are replicated to and reads repair from (None: none)."""
        return self._mirrors

    # -- values ----------------------------------------------------------------------
    def save(self, value: Any, *, what: str = "value") -> Tree:
        """Write a value as objects (a tuple or dict part by part); return its tree.

        Each node records the value's fingerprint, or None when it can't be fingerprinted
        (an unknown content, which never equals any fingerprint)."""
        return self._save(value, what, _UNKNOWN)

    def _save(self, value: Any, what: str, fp: str | None | object) -> Tree:
        """``save``; ``fp``: the value's fingerprint when its dict's walk gave it (else _UNKNOWN)."""
        if type(value) is tuple:
            tree: Tree = TupleNode(tuple(self._save(v, f"{what}[{i}]", _UNKNOWN) for i, v in enumerate(value)))
        elif type(value) is dict and value and all(type(k) is str for k in value) and not _is_jsonable(value):
            # The dict's and its values' fingerprints in one walk of each value (a trial's model
            # is encoded once, not once alone and again inside {"model": m}).
            fp_here, own = fingerprint_entries(value, name=what)
            fp = fp_here if fp is _UNKNOWN else fp
            tree = DictNode(tuple((k, self._save(v, f"{what}[{k!r}]", own[k])) for k, v in value.items()))
        else:
            tree = self.put(value, what=what)
        if fp is _UNKNOWN:
            try:
                fp = fingerprint(value, name=what)
            except FingerprintError:
                fp = None
        return dataclasses.replace(tree, fingerprint=fp)

    def save_parts(self, parts: dict[str, Any], *, what: str = "value") -> DictNode:
        """Write each entry as one object, without fingerprints (training checkpoints)."""
        return DictNode(tuple((k, self.put(v, what=f"{what} {k!r}")) for k, v in parts.items()))

    def put(self, value: Any, *, what: str = "value") -> Leaf:
        """Write one value as one object (no fingerprint)."""
        return self._objects.put(value, what=what, durable=self._durable)

    def load(self, tree: Tree) -> Any:
        """Read a tree back. Raises IntegrityError / StoreError when it can't."""
        if isinstance(tree, TupleNode):
            return tuple(self.load(t) for t in tree.items)
        if isinstance(tree, DictNode):
            return {k: self.load(t) for k, t in tree.entries}
        return self._objects.get(tree)

    def read_verified(self, leaf: Leaf) -> Any:
        """The verified bytes of one object (not decoded)."""
        return self._objects.read_verified(leaf)

    def missing(self, tree: Tree) -> list[Leaf]:
        """The objects of ``tree`` that are not in the store."""
        return [leaf for leaf in leaves(tree) if not self._objects.present(leaf)]

    # -- manifests -------------------------------------------------------------------
    @staticmethod
    def manifest_path(stage: str, key: str, step: int | None = None) -> str:
        return layout.manifest_path(stage, key, step)

    def commit(self, manifest: Manifest, *, value: Any = _NO_VALUE) -> Manifest:
        """Write the manifest last: from here on the result exists. Returns what was committed.

        Then every object it references is checked to be there: a gc that ran since the
        objects were written may have set one aside (it is put back) or deleted it (it is
        written again from ``value``, the value the tree was saved from)."""
        rel = layout.manifest_path(manifest.stage, manifest.key, manifest.step)
        for _ in range(_COMMIT_ATTEMPTS):
            data = manifest.to_json(self._sealer)
            self._backend.write_atomic(rel, data, durable=self._durable)
            gone = self.missing(manifest.outputs)
            if not gone:
                if self._mirrors is not None:  # objects first, manifest last, in each mirror
                    self._mirrors.committed(self, rel, data, manifest)
                return manifest
            if value is _NO_VALUE:
                break
            outputs = self._rewrite(manifest.outputs, value, f"the result of {manifest.stage!r}")
            manifest = dataclasses.replace(manifest, outputs=outputs)
        raise StoreError(
            f"objects {', '.join(leaf.object for leaf in self.missing(manifest.outputs))} of {manifest.stage!r} "
            f"{manifest.key} vanished from store {self.url} while it was committed (a gc with no grace?): "
            "save the result again"
        )

    def _rewrite(self, tree: Tree, value: Any, what: str) -> Tree:
        """``tree`` with every missing object written again from ``value``."""
        if isinstance(tree, TupleNode) and type(value) is tuple and len(value) == len(tree.items):
            return dataclasses.replace(tree, items=tuple(self._rewrite(t, v, what) for t, v in zip(tree.items, value)))
        if isinstance(tree, DictNode) and isinstance(value, dict) and list(value) == tree.names():
            entries = tuple((k, self._rewrite(t, value[k], what)) for k, t in tree.entries)
            return dataclasses.replace(tree, entries=entries)
        if isinstance(tree, Leaf):
            if self._objects.present(tree):
                return tree
            return dataclasses.replace(self.put(value, what=what), fingerprint=tree.fingerprint)
        raise StoreError(f"cannot write {what} again: the value does not have the shape of its tree")

    def _parse_manifest(self, rel: str) -> Manifest:
        """The manifest at ``rel``, checked: FileNotFoundError when there is none, Unverified
        for format 1, ValueError when damaged or not the one this path names."""
        try:
            raw = bytes(self._backend.read(rel))
        except SymlinkRefused as e:
            raise ValueError(str(e)) from None
        return self._check_manifest(rel, raw)

    def _check_manifest(self, rel: str, raw: Any) -> Manifest:
        """The manifest ``raw`` (the bytes read from ``rel``) holds, if it is the one at ``rel``
        (see ``_parse_manifest``)."""
        m = Manifest.from_json(bytes(raw), self._sealer)
        if layout.manifest_path(m.stage, m.key, m.step) != rel:
            step = "" if m.step is None else f" step {m.step}"
            raise ValueError(f"it is the manifest of {m.stage!r} {m.key}{step}, not the one its path names")
        return m

    def _quarantine_manifest(self, rel: str) -> str:
        return quarantine(self._backend, rel, self.read_only)

    def _repair_manifest(self, rel: str, damaged: bool = False) -> Manifest | None:
        """The manifest at ``rel`` restored from a mirror whose copy checks; None: no mirror has one."""
        return None if self._mirrors is None else self._mirrors.fetch_manifest(self, rel, damaged)

    def _read_manifest(self, rel: str, ask_mirrors: bool = False) -> Manifest | None:
        """``ask_mirrors``: a missing manifest is looked for in the mirrors too (a damaged one always is)."""
        try:
            raw = self._backend.read(rel)
        except FileNotFoundError:
            return self._repair_manifest(rel) if ask_mirrors else None
        except SymlinkRefused as e:
            raw = e
        return self._accept(rel, raw)

    def _accept(self, rel: str, raw: Any) -> Manifest | None:
        """The manifest read from ``rel`` (its bytes, or the SymlinkRefused reading it raised)
        if it can be served; else None: not served (format 1, a seal this store can't vouch
        for: warned once per kind), or damaged (quarantined, and restored from a mirror if one
        has a good copy)."""
        try:
            if isinstance(raw, SymlinkRefused):
                raise ValueError(str(raw))
            return self._check_manifest(rel, raw)
        except Unverified as e:
            if type(e) not in self._warned_unserved:  # once per store and kind: an old store holds many
                self._warned_unserved.add(type(e))
                warnings.warn(
                    f"store {self.url} holds manifests {_why_unserved(e)} (e.g. {rel}): they are "
                    "not served, so their stages recompute once (`verify` counts them)",
                    stacklevel=4,
                )
            return None
        except (ValueError, TypeError, KeyError) as e:
            self._reject(rel, e, stacklevel=5)
            return self._repair_manifest(rel)

    def _read_served(self, rels: Iterable[str]) -> Iterator[tuple[str, Manifest | None]]:
        """``(path, manifest or None)`` as ``_read_manifest`` gives, for many paths at once
        (in any order); paths deleted since they were listed are left out."""
        for rel, raw in self._backend.read_many(rels):
            if isinstance(raw, FileNotFoundError):
                continue
            if isinstance(raw, BaseException) and not isinstance(raw, SymlinkRefused):
                raise raw
            yield rel, self._accept(rel, raw)

    def _reject(self, rel: str, e: Exception, stacklevel: int = 4) -> None:
        moved = self._quarantine_manifest(rel)
        warnings.warn(f"manifest {rel} in {self.url} is unreadable ({e}); {moved}", stacklevel=stacklevel)

    def manifest(self, stage: str, key: str, step: int | None = None) -> Manifest | None:
        # A stage result the store lacks is looked for in the mirrors; a checkpoint never is:
        # one deleted here (a dropped shard record, say) must not come back into a set of steps.
        m = self._read_manifest(layout.manifest_path(stage, key, step), ask_mirrors=step is None)
        if m is not None and (m.stage, m.key, m.step) != (stage, key, step):
            return None  # another stage or key whose bounded path is the same (never, short of a hash collision)
        return m

    def manifests(self, stage: str | None = None, *, since: float | None = None) -> Iterator[Manifest]:
        """Every readable stage manifest (of one stage, or of all), in path order; with
        ``since`` (seconds since the epoch), only those created at or after it, in no
        particular order, reading only the manifests written since then."""
        if since is not None:
            yield from listing.created_since(self, stage, since)
            return
        prefix = layout.stage_dir(stage) if stage is not None else layout.STAGES
        rels = sorted(rel for rel in self._backend.list(prefix) if rel.endswith(".json"))
        for _rel, m in self._read_served(rels):
            if m is not None and (stage is None or m.stage == stage):
                yield m

    def newest(self, stage: str | None = None, *, limit: int = 50, since: float | None = None) -> Page:
        """The newest ``limit`` readable stage results (of one stage, or of all; created at or
        after ``since``, seconds since the epoch), newest first, reading only as many
        manifests as it takes (see ``pipeline.store.listing``)."""
        return listing.newest(self, stage, limit=limit, since=since)

    def latest(self, stage: str) -> Manifest | None:
        """The newest manifest of a stage (by creation time)."""
        page = self.newest(stage, limit=1)
        return page.manifests[0] if page.manifests else None

    def stages(self) -> list[str]:
        return sorted({m.stage for m in self.manifests()})

    def delete_manifest(self, manifest: Manifest) -> None:
        self._backend.delete(layout.manifest_path(manifest.stage, manifest.key, manifest.step))

    def checkpoints(self, stage: str, key: str) -> Checkpoints:
        """The training checkpoints of one stage key."""
        return Checkpoints(self, stage, key)

    # -- integrity -------------------------------------------------------------------
    def _manifest_paths(self) -> list[str]:
        """Every manifest file in the store (stage results and training checkpoints), sorted."""
        found = (rel for root in layout.MANIFEST_ROOTS for rel in self._backend.list(root))
        return sorted(rel for rel in found if rel.endswith(".json"))

    def _read_manifests(self, rels: Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:
        """``(path, bytes)`` of every manifest file, or of those at ``rels`` (many read at once
        on remote backends).
        One deleted since it was listed is skipped; a symbolic link yields its SymlinkRefused;
        any other failure to read one is raised: nothing may be concluded without it."""
        for rel, raw in self._backend.read_many(self._manifest_paths() if rels is None else rels):
            if isinstance(raw, FileNotFoundError):
                continue
            if isinstance(raw, BaseException) and not isinstance(raw, SymlinkRefused):
                raise raw
            yield rel, raw

    def _walk(
        self, quarantine: bool, rels: Sequence[str] | None = None
    ) -> Iterator[tuple[str, Manifest | None, Unverified | None]]:
        """Every manifest path (or those of ``rels``) with its manifest: checked; one that is
        kept but not served (format 1, or a seal this store can't judge) as it says, with the
        reason; None when damaged (quarantined when ``quarantine``)."""
        for rel, raw in self._read_manifests(rels):
            try:
                if isinstance(raw, SymlinkRefused):
                    raise ValueError(str(raw))
                yield rel, self._check_manifest(rel, raw), None
            except Unverified as e:
                yield rel, e.manifest, e
            except (ValueError, TypeError, KeyError) as e:
                if quarantine:
                    self._reject(rel, e, stacklevel=5)
                yield rel, None, None

    def live_objects(self) -> set[str]:
        """Paths of every object some manifest references. Manifests that are not served
        count too (format 1; a seal this store can't check, such as another key's HMAC;
        damaged ones, for what they still name): whatever a manifest in the store names is
        kept, until ``verify`` quarantines it. Only the ``outputs`` part of each is decoded."""
        live: set[str] = set()
        for _rel, raw in self._read_manifests():
            if not isinstance(raw, BaseException):  # a symbolic link is not followed
                live.update(layout.object_path(oid, CODECS[codec].suffix) for oid, codec in _named_objects(raw))
        return live

    def _named_tree(self, rel: str) -> Tree | None:
        """The output tree a manifest that fails its checks names, if it names one."""
        try:
            doc = json.loads(bytes(self._backend.read(rel)))
            return from_doc(doc.get("outputs")) if isinstance(doc, dict) else None
        except (OSError, StoreError, ValueError, TypeError, AttributeError):
            return None

    def verify(self, *, workers: int | None = None) -> VerifyReport:
        """Check every manifest and re-hash every object they reference; quarantine what fails
        (see ``pipeline.store.verify``)."""
        return verify_store(self, workers)

    def remove_dead_temps(self) -> int:
        """Delete temp files whose writer (a process on this host) is gone; how many."""
        dead = [rel for rel in self._backend.list(layout.TMP) if layout.temp_state(rel) == "dead"]
        for rel in dead:
            self._backend.delete(rel)
        return len(dead)


def _why_unserved(e: Unverified) -> str:
    if isinstance(e, Unsigned):
        return f"this store can't vouch for: {e}"
    return "of format 1, without a checksum"


__all__ = ["Store", "VerifyReport", "Problem", "IntegrityError", "configured_sealer"]
