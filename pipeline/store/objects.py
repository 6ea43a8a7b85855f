"""Content-addressed blobs: put streams a value through a codec while hashing it; get
verifies the checksum of the bytes it decodes, quarantining an object that fails.

An object a gc sweep has set aside (``gc/<sweep>/…``, see ``retention``) is still an
object: reading a missing object first puts a set-aside copy back."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from typing import Any, Callable

import xxhash

from ..errors import IntegrityError, StoreError, UnsignedError
from ..progress_bar import advance, progress
from . import layout
from .backend import Backend, SymlinkRefused
from .codecs import CODECS, Codec, candidates
from .seal import BadSignature, Hmac, Sha256Tee
from .tree import Leaf

_CHUNK = 64 << 20


def checksum(buf: Any) -> str:
    """xxh3_128 of ``buf``; a big buffer in 64 MiB steps that advance the innermost bar."""
    with memoryview(buf) as mv:
        if mv.nbytes <= _CHUNK:
            return xxhash.xxh3_128_hexdigest(buf)
        h = xxhash.xxh3_128()
        with mv.cast("B") as view:  # released before the caller closes a memory map
            for i in range(0, view.nbytes, _CHUNK):
                h.update(view[i : i + _CHUNK])
                advance(min(_CHUNK, view.nbytes - i))
        return h.hexdigest()


def leaf_path(leaf: Leaf) -> str:
    return layout.object_path(leaf.object, leaf.suffix)


def _write(codec: Codec, value: Any, tee: list[Sha256Tee] | None, f: Any) -> None:
    """Encode ``value`` into ``f``; with ``tee``, through a SHA-256 tee (what is signed is the
    SHA-256 of the bytes as they are written)."""
    if tee is not None:
        tee.append(Sha256Tee(f))
        f = tee[-1]
    codec.write(value, f)


class Objects:
    def __init__(self, backend: Backend, signer: Hmac | None = None, *, small_frames: bool = False) -> None:
        """``signer``: the store's signing key; objects whose codec executes code on load are
        signed when written and refused unless signed with it when read. ``small_frames``:
        numeric frames go to Parquet (compressed) instead of Arrow IPC."""
        self._backend = backend
        self.small_frames = small_frames
        self.repair: Callable[[Leaf], Any] | None = None
        """Set by a store with mirrors: a verified copy of a missing or corrupt object, put
        back in place (None: no mirror has one)."""
        self.written: Callable[[Leaf, bytes], None] | None = None
        """Set by a store with mirrors: told the bytes of each object just written to a remote
        backend, so that replication need not download them again."""
        self._signer = signer
        self.read_only = False
        """Set by a store opened read-only: a corrupt object is reported, never moved (nor a
        gc sweep's set-aside copy put back)."""

    def put(self, value: Any, *, what: str = "value", durable: bool = True) -> Leaf:
        """Write ``value`` with the first codec that takes it; return its reference."""
        errors: dict[str, str] = {}
        for codec in candidates(value, small_frames=self.small_frames):
            signing = self._signer is not None and codec.executes_code
            tee: list[Sha256Tee] = []
            try:
                with progress(f"write {what}"):  # advanced by the hashing writer, as bytes go out
                    staged = self._backend.stage(functools.partial(_write, codec, value, tee if signing else None))
            except StoreError:
                raise
            except Exception as e:  # this codec can't take the value: try the next one
                errors[codec.name] = str(e)  # (of the joblib codec's two picklers, the last one's)
                continue
            data = getattr(staged, "data", None)  # a remote backend's staged bytes (emptied by commit)
            self._backend.commit(staged, layout.object_path(staged.digest, codec.suffix), durable=durable)
            signature = self._signer.sign_object(staged.digest, tee[-1].hash.hexdigest()) if signing else None
            leaf = Leaf(staged.digest, codec.name, staged.size, signature=signature)
            if self.written is not None and data is not None:
                self.written(leaf, data)
            return leaf
        raise StoreError(
            f"cannot save {what} of type {type(value).__module__}.{type(value).__qualname__}: "
            + "; ".join(f"{name}: {e}" for name, e in errors.items())
            + ". Return data that can be pickled (arrays, frames, models, plain objects)."
        )

    def read_verified(self, leaf: Leaf) -> Any:
        """The object's bytes, checked against its name. Missing -> StoreError;
        mismatch (or a symbolic link) -> quarantined, IntegrityError. Either way a mirror's
        good copy (``repair``) is restored and served instead."""
        rel = leaf_path(leaf)
        try:
            buf = self._read(rel)
        except FileNotFoundError:
            if (copy := self._repaired(leaf)) is not None:
                return copy
            raise StoreError(f"object {leaf.object} is missing from store {self._backend.url}") from None
        except SymlinkRefused as e:
            moved = self.quarantine(rel)
            if (copy := self._repaired(leaf)) is not None:
                return copy
            raise IntegrityError(f"object {leaf.object} in store {self._backend.url}: {e}; {moved}") from None
        actual = checksum(buf)
        if actual != leaf.object:
            del buf
            moved = self.quarantine(rel)
            if (copy := self._repaired(leaf)) is not None:
                return copy
            raise IntegrityError(
                f"object {leaf.object} in store {self._backend.url} is corrupt (checksum {actual}); {moved}"
            )
        return buf

    def _repaired(self, leaf: Leaf) -> Any | None:
        return None if self.repair is None else self.repair(leaf)

    def _read(self, rel: str) -> Any:
        try:
            return self._backend.read(rel)
        except FileNotFoundError:
            if not self.recover(rel):
                raise
        return self._backend.read(rel)

    def get(self, leaf: Leaf) -> Any:
        codec = CODECS[leaf.codec]
        sha = None
        if self._signer is not None and codec.executes_code:
            try:  # the reference first: nothing is read for an unsigned or forged one
                sha = self._signer.signed_sha256(leaf.object, leaf.signature)
            except BadSignature as e:
                raise self._refused(leaf, str(e)) from None
        with progress(f"read {leaf.object[:12]}", leaf.bytes):  # advanced by checksum()
            buf = self.read_verified(leaf)
        if sha is not None and hashlib.sha256(buf).hexdigest() != sha:  # same xxh3 name, other bytes than signed
            del buf
            moved = self.quarantine(leaf_path(leaf))
            raise self._refused(leaf, f"its bytes are not the ones signed ({moved})")
        return codec.read(buf)

    def _refused(self, leaf: Leaf, why: str) -> UnsignedError:
        return UnsignedError(
            f"refused to load object {leaf.object} ({leaf.codec}) from store {self._backend.url}: {why}. "
            f"{leaf.codec} objects run code when loaded, and this store has a signing key "
            f"(key id {self._signer.key_id if self._signer else '?'}): only objects signed with it are loaded; "
            "recompute the result (--force STAGE) to write a signed one"
        )

    def present(self, leaf: Leaf) -> bool:
        """True when the object is in place (put back first if a gc sweep set it aside)."""
        rel = leaf_path(leaf)
        return self._backend.exists(rel) or self.recover(rel) or self._repaired(leaf) is not None

    def recover(self, rel: str) -> bool:
        """Put back a copy of object ``rel`` that a gc sweep set aside; True if one was."""
        if self.read_only:
            return False
        for trashed in list(self._backend.list(layout.TRASH)):
            if layout.untrash(trashed) == rel:
                with contextlib.suppress(FileNotFoundError):  # the sweep put it back itself
                    self._backend.move(trashed, rel)
                return self._backend.exists(rel)
        return False

    def quarantine(self, rel: str) -> str:
        """Move ``rel`` to quarantine/ (not when read-only); what became of it, for a message."""
        return quarantine(self._backend, rel, self.read_only)


def quarantine(backend: Backend, rel: str, read_only: bool) -> str:
    """Move a damaged file to quarantine/; what became of it: moved, or left in place (a store
    opened read-only, or one that cannot be written: it is reported and served as a miss)."""
    if read_only:
        return "left in place (store opened read-only; `python -m pipeline verify` quarantines it)"
    try:
        with contextlib.suppress(FileNotFoundError, SymlinkRefused):  # behind a link: the next write moves it
            backend.move(rel, layout.quarantine_path(rel))
    except (OSError, StoreError) as e:
        return f"left in place (cannot move it to quarantine/: {e})"
    return "moved to quarantine/"
