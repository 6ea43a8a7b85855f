"""Content-addressed blobs: put streams a value through a codec while hashing it; get
verifies the checksum of the bytes it decodes, quarantining an object that fails."""

from __future__ import annotations

import time
from typing import Any

import xxhash

from ..errors import IntegrityError, StoreError
from .backend import Backend
from .codecs import CODECS, candidates


def object_path(oid: str, suffix: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}.{suffix}"


def checksum(buf: Any) -> str:
    return xxhash.xxh3_128_hexdigest(buf)


class Objects:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def put(self, value: Any, *, what: str = "value") -> dict[str, Any]:
        """Write ``value`` with the first codec that takes it; return its reference."""
        errors = []
        for codec in candidates(value):
            try:
                staged = self.backend.stage(lambda f, c=codec: c.write(value, f))
            except StoreError:
                raise
            except Exception as e:  # this codec can't take the value: try the next one
                errors.append(f"{codec.name}: {e}")
                continue
            self.backend.commit(staged, object_path(staged.digest, codec.suffix))
            return {"object": staged.digest, "codec": codec.name, "bytes": staged.size}
        raise StoreError(
            f"cannot save {what} of type {type(value).__module__}.{type(value).__qualname__}: "
            + "; ".join(errors)
            + ". Return data that can be pickled (arrays, frames, models, plain objects)."
        )

    def read_verified(self, ref: dict[str, Any]) -> Any:
        """The object's bytes, checked against its name. Missing -> StoreError;
        mismatch -> quarantined, IntegrityError."""
        codec = CODECS[ref["codec"]]
        rel = object_path(ref["object"], codec.suffix)
        try:
            buf = self.backend.read(rel)
        except FileNotFoundError:
            raise StoreError(f"object {ref['object']} is missing from store {self.backend.url}") from None
        actual = checksum(buf)
        if actual != ref["object"]:
            del buf
            self.quarantine(rel)
            raise IntegrityError(
                f"object {ref['object']} in store {self.backend.url} is corrupt "
                f"(checksum {actual}); moved to quarantine/"
            )
        return buf

    def get(self, ref: dict[str, Any]) -> Any:
        buf = self.read_verified(ref)
        return CODECS[ref["codec"]].read(buf)

    def quarantine(self, rel: str) -> None:
        name = rel.replace("objects/", "", 1).replace("/", "")
        try:
            self.backend.move(rel, f"quarantine/{int(time.time())}-{name}")
        except FileNotFoundError:
            pass
