"""Entries a manifest carries: small pickled values sealed in its ``extra``, not objects.

A checkpoint's small pickled entry (a fitted estimator of a kilobyte; which ones is the
writer's choice, ``pipeline.training.entries``) rides in its manifest instead of being an object
file: ``extra["pickled"]`` (``PICKLED``) maps ``name -> {"codec": "joblib", "object": <xxh3 id>,
"bytes": n, "base64": ...}``, byte for byte the object the store would have written, with that
object's id and size. The store owns this record shape, so it can size a manifest whole
(``Manifest.bytes``: objects and carried entries; retention budgets and every size column use
it) without knowing what wrote it. Carried bytes are never object files: freeing a manifest's
objects frees none of them (they go with the manifest).
"""

from __future__ import annotations

import binascii
from typing import Any, Mapping

import xxhash

from ..errors import IntegrityError
from . import codecs

PICKLED = "pickled"
"""``extra`` key of the pickled entries a manifest carries (name -> encoded record)."""


def encode(data: bytes) -> dict[str, Any]:
    """The record of pickled ``data`` carried in a manifest (as its object would be: id, size)."""
    return {
        "codec": codecs.PICKLED.name,
        "object": xxhash.xxh3_128_hexdigest(data),
        "bytes": len(data),
        "base64": binascii.b2a_base64(data, newline=False).decode("ascii"),
    }


def records(extra: Mapping[str, Any]) -> dict[str, Any]:
    """name -> encoded record of the pickled entries a manifest's ``extra`` carries."""
    docs = extra.get(PICKLED)
    return dict(docs) if isinstance(docs, dict) else {}


def sizes(extra: Mapping[str, Any]) -> dict[str, int]:
    """name -> bytes of each carried entry (as its object's would be; 0 for a record without a size:
    ``read`` refuses it)."""
    return {name: _size(doc) for name, doc in records(extra).items()}


def _size(doc: Any) -> int:
    n = doc.get("bytes") if isinstance(doc, dict) else None
    return n if type(n) is int and n >= 0 else 0


def read(name: str, doc: Any) -> Any:
    """The value of carried entry ``name`` (from a sealed, checked manifest); IntegrityError when
    its bytes are not the ones its record names."""
    if not isinstance(doc, dict) or doc.get("codec") != codecs.PICKLED.name or not isinstance(doc.get("base64"), str):
        raise IntegrityError(f"checkpoint entry {name!r} carried in the manifest is not an encoded pickle")
    try:
        data = binascii.a2b_base64(doc["base64"], strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise IntegrityError(f"checkpoint entry {name!r} carried in the manifest is damaged ({e})") from None
    if len(data) != doc.get("bytes") or xxhash.xxh3_128_hexdigest(data) != doc.get("object"):
        raise IntegrityError(f"checkpoint entry {name!r} carried in the manifest does not match its checksum")
    return codecs.PICKLED.read(data)
