"""Manifest seals: a checksum over a manifest's exact bytes, written into the manifest.

A sealed manifest on disk is ``{"seal": "<seal>",`` followed by the rest of its JSON body,
so it stays plain JSON, and the seal covers every byte of the body as written: any change
to the body (a bit flip, an edit, another manifest copied over it) fails the check.

``Checksum`` (xxh3_128) catches accidents; a keyed seal (an HMAC, for a store with a
signing key) is another :class:`Sealer` with its own prefix, e.g. ``hmac-sha256:<hex>``.
"""

from __future__ import annotations

from typing import Protocol

import xxhash

_OPEN = b'{"seal": "'


class Sealer(Protocol):
    def seal(self, body: bytes) -> str: ...
    def check(self, body: bytes, seal: str) -> bool: ...


class Checksum:
    """The default seal: ``xxh3:<32 hex>`` over the body's bytes."""

    def seal(self, body: bytes) -> str:
        return "xxh3:" + xxhash.xxh3_128_hexdigest(body)

    def check(self, body: bytes, seal: str) -> bool:
        return seal == self.seal(body)


CHECKSUM = Checksum()


class BadSeal(ValueError):
    """The manifest's seal does not match its bytes (or it has none)."""


def seal(body: bytes, sealer: Sealer = CHECKSUM) -> bytes:
    """``body`` (a JSON object's bytes) with its seal as the first member."""
    if not body.startswith(b"{"):
        raise ValueError("a manifest body is a JSON object")
    return _OPEN + sealer.seal(body).encode() + b'",' + body[1:]


def is_sealed(data: bytes) -> bool:
    return data.startswith(_OPEN)


def unseal(data: bytes, sealer: Sealer = CHECKSUM) -> bytes:
    """The body of a sealed manifest; BadSeal when the seal does not match."""
    end = data.find(b'",', len(_OPEN))
    if not data.startswith(_OPEN) or end < 0:
        raise BadSeal("the manifest has no seal")
    body = b"{" + data[end + 2 :]
    try:
        text = data[len(_OPEN) : end].decode("ascii")
    except UnicodeDecodeError:
        raise BadSeal("the manifest's seal is not text") from None
    if not sealer.check(body, text):
        raise BadSeal("the manifest does not match its seal (changed after it was written)")
    return body
