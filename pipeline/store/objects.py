"""Content-addressed blobs: put streams a value through a codec while hashing it; get
verifies the checksum of the bytes it decodes, quarantining an object that fails.

An object a gc sweep has set aside (``gc/<sweep>/…``, see ``retention``) is still an
object: reading a missing object first puts a set-aside copy back."""

from __future__ import annotations

import contextlib
from typing import Any

import xxhash

from ..errors import IntegrityError, StoreError
from ..progress_bar import advance, progress
from . import layout
from .backend import Backend, SymlinkRefused
from .codecs import CODECS, candidates
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


class Objects:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def put(self, value: Any, *, what: str = "value", durable: bool = True) -> Leaf:
        """Write ``value`` with the first codec that takes it; return its reference."""
        errors = []
        for codec in candidates(value):
            try:
                with progress(f"write {what}"):  # advanced by the hashing writer, as bytes go out
                    staged = self._backend.stage(lambda f, c=codec: c.write(value, f))
            except StoreError:
                raise
            except Exception as e:  # this codec can't take the value: try the next one
                errors.append(f"{codec.name}: {e}")
                continue
            self._backend.commit(staged, layout.object_path(staged.digest, codec.suffix), durable=durable)
            return Leaf(staged.digest, codec.name, staged.size)
        raise StoreError(
            f"cannot save {what} of type {type(value).__module__}.{type(value).__qualname__}: "
            + "; ".join(errors)
            + ". Return data that can be pickled (arrays, frames, models, plain objects)."
        )

    def read_verified(self, leaf: Leaf) -> Any:
        """The object's bytes, checked against its name. Missing -> StoreError;
        mismatch (or a symbolic link) -> quarantined, IntegrityError."""
        rel = leaf_path(leaf)
        try:
            buf = self._read(rel)
        except FileNotFoundError:
            raise StoreError(f"object {leaf.object} is missing from store {self._backend.url}") from None
        except SymlinkRefused as e:
            self.quarantine(rel)
            raise IntegrityError(
                f"object {leaf.object} in store {self._backend.url}: {e}; moved to quarantine/"
            ) from None
        actual = checksum(buf)
        if actual != leaf.object:
            del buf
            self.quarantine(rel)
            raise IntegrityError(
                f"object {leaf.object} in store {self._backend.url} is corrupt "
                f"(checksum {actual}); moved to quarantine/"
            )
        return buf

    def _read(self, rel: str) -> Any:
        try:
            return self._backend.read(rel)
        except FileNotFoundError:
            if not self.recover(rel):
                raise
        return self._backend.read(rel)

    def get(self, leaf: Leaf) -> Any:
        with progress(f"read {leaf.object[:12]}", leaf.bytes):  # advanced by checksum()
            buf = self.read_verified(leaf)
        return CODECS[leaf.codec].read(buf)

    def present(self, leaf: Leaf) -> bool:
        """True when the object is in place (put back first if a gc sweep set it aside)."""
        rel = leaf_path(leaf)
        return self._backend.exists(rel) or self.recover(rel)

    def recover(self, rel: str) -> bool:
        """Put back a copy of object ``rel`` that a gc sweep set aside; True if one was."""
        for trashed in list(self._backend.list(layout.TRASH)):
            if layout.untrash(trashed) == rel:
                with contextlib.suppress(FileNotFoundError):  # the sweep put it back itself
                    self._backend.move(trashed, rel)
                return self._backend.exists(rel)
        return False

    def quarantine(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError, SymlinkRefused):  # behind a link: the next write moves it
            self._backend.move(rel, layout.quarantine_path(rel))
