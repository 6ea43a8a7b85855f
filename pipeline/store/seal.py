"""Manifest seals: a checksum over a manifest's exact bytes, written into the manifest.

A sealed manifest on disk is ``{"seal": "<seal>",`` followed by the rest of its JSON body,
so it stays plain JSON, and the seal covers every byte of the body as written: any change
to the body (a bit flip, an edit, another manifest copied over it) fails the check.

``Checksum`` (xxh3_128) catches accidents. :class:`Hmac` (a store with a signing key) seals
with ``hmac-sha256:<key id>:<hex>``: only a holder of the key can make a seal it accepts. It
also signs each object whose codec executes code on load (joblib): ``sign_object`` binds the
object id to the SHA-256 of its bytes (the xxh3 object id is no cryptographic hash), and the
signature sits in the object's reference inside the sealed manifest body.

A seal of another form (an unsigned manifest read with a key, another key's, a signed one
read without the key) is a :class:`ForeignSeal`: it proves nothing either way, so such a
manifest is kept but never served; a seal of this sealer's form that does not match is a
:class:`BadSeal` (damaged or tampered with).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Protocol

import xxhash

_OPEN = b'{"seal": "'


class Sealer(Protocol):
    keyed: bool
    """True when the seal needs a secret key (and objects that execute code must be signed)."""

    def seal(self, body: bytes) -> str: ...
    def check(self, body: bytes, seal: str) -> bool: ...
    def owns(self, seal: str) -> bool:
        """True when ``seal`` has the form this sealer makes (so ``check`` can judge it)."""
        ...


class Checksum:
    """The default seal: ``xxh3:<32 hex>`` over the body's bytes."""

    keyed = False

    def seal(self, body: bytes) -> str:
        return "xxh3:" + xxhash.xxh3_128_hexdigest(body)

    def check(self, body: bytes, seal: str) -> bool:
        return seal == self.seal(body)

    def owns(self, seal: str) -> bool:
        return seal.startswith("xxh3:")


CHECKSUM = Checksum()
HMAC_PREFIX = "hmac-sha256:"
_KNOWN = re.compile(r"xxh3:[0-9a-f]{32}|hmac-sha256:[0-9a-f]{16}:[0-9a-f]{64}")


class Hmac:
    """HMAC-SHA256 seals and object signatures with a secret key (``PIPELINE_SIGNING_KEY``)."""

    keyed = True

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._key = bytes(key)
        self.key_id = hmac.new(self._key, b"pipeline signing key id", hashlib.sha256).hexdigest()[:16]
        """Names the key (not secret: nothing about the key can be learnt from it)."""

    def __repr__(self) -> str:
        return f"Hmac(key id {self.key_id})"  # never the key

    def _mac(self, *parts: bytes) -> str:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "little") + part)
        return mac.hexdigest()

    def seal(self, body: bytes) -> str:
        return f"{HMAC_PREFIX}{self.key_id}:{self._mac(b'manifest', body)}"

    def check(self, body: bytes, seal: str) -> bool:
        return hmac.compare_digest(seal, self.seal(body))

    def owns(self, seal: str) -> bool:
        return seal.startswith(f"{HMAC_PREFIX}{self.key_id}:")

    def sign_object(self, oid: str, sha256: str) -> str:
        """The signature of object ``oid`` whose bytes have SHA-256 ``sha256``."""
        return f"{HMAC_PREFIX}{self.key_id}:{sha256}:{self._mac(b'object', oid.encode(), sha256.encode())}"

    def signed_sha256(self, oid: str, signature: str | None) -> str:
        """The SHA-256 that ``signature`` vouches for object ``oid``; BadSignature when it is
        missing, made with another key, or not valid for this object."""
        if not signature:
            raise BadSignature("it carries no signature")
        prefix = f"{HMAC_PREFIX}{self.key_id}:"
        if not signature.startswith(prefix):
            raise BadSignature(
                "it was signed with another key" if signature.startswith(HMAC_PREFIX) else "bad signature"
            )
        sha, _, _ = signature[len(prefix) :].partition(":")
        if not hmac.compare_digest(signature, self.sign_object(oid, sha)):
            raise BadSignature("its signature does not match (forged, or made for another object)")
        return sha


class Sha256Tee:
    """A file object that writes through to ``sink`` and hashes (SHA-256) what passes."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.hash = hashlib.sha256()

    def write(self, b: Any) -> int:
        self.hash.update(b)
        return self._sink.write(b)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)


class BadSeal(ValueError):
    """The manifest's seal does not match its bytes (or it has none)."""


class ForeignSeal(BadSeal):
    """The manifest is sealed in a form this sealer can't judge: unsigned while the store has
    a key, signed with another key, or signed while the store has none."""


class BadSignature(ValueError):
    """An object's signature is missing or wrong."""


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
    if not sealer.owns(text):
        if not _KNOWN.fullmatch(text):  # no seal any sealer makes: damaged
            raise BadSeal("the manifest's seal is damaged")
        raise ForeignSeal(_foreign(text, sealer))
    if not sealer.check(body, text):
        raise BadSeal("the manifest does not match its seal (changed after it was written)")
    return body


def body_of(data: bytes) -> bytes:
    """The body of a sealed manifest, unchecked (to see what a foreign-sealed one names)."""
    end = data.find(b'",', len(_OPEN))
    return b"{" + data[end + 2 :]


def _foreign(seal: str, sealer: Sealer) -> str:
    if not seal.startswith(HMAC_PREFIX):
        return "it is not signed (this store has a signing key)"
    if sealer.keyed:
        return "it is signed with another key"
    return "it is signed, and no signing key is set (PIPELINE_SIGNING_KEY / signing_key_file)"
