"""What a checkpoint's entries become: objects of the store, or carried in its manifest.

Each epoch checkpoint of a search's trial used to write its model (a fitted estimator of a
kilobyte or so of pickle) as an object of its own: a temp file, a write, a rename, the
commit's check that it is there and the prune's unlink later, for a few hundred bytes. A
small entry rides in the checkpoint's manifest instead, sealed with it (a keyed store's HMAC
authenticates it as an object's signature would), in one of two ``extra`` members whose names
say what they hold, so one can never be read as the other:

- ``extra["inline"]`` (``INLINE``): small plain JSON (a NumPy Generator's state, counters),
  the value itself, read back as it is;
- ``extra["pickled"]`` (``PICKLED``): small pickled entries (at most ``PICKLED_MAX_BYTES``),
  ``name -> {"codec": "joblib", "object": <xxh3 id>, "bytes": n, "base64": ...}`` (a record shape
  the store owns, ``pipeline.store.carried``, so ``Manifest.bytes`` counts them): byte for byte
  the object the store would have written (the same C pickler, or the ``codecs.Pickled``
  snapshot a background write takes), its id and size as that object's would be. Read back,
  the bytes must have that id and size (a manifest damaged and sealed again is refused, not
  unpickled) and are decoded by the codec the object would have been.

Anything else (bigger, or not pickled: frames, arrays, torch state) is an object as before.
Checkpoints written before this (every entry an object) read as they always have.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..errors import CheckpointError
from ..store import DictNode, Leaf, Manifest, Store, carried, codecs
from . import adapters

INLINE = "inline"
"""``extra`` key of the plain-JSON entries a checkpoint's manifest carries (name -> value)."""
INLINE_ITEMS = 64
"""At most this many JSON values (numbers, strings, list items…) in an entry carried inline."""
PICKLED = carried.PICKLED
"""``extra`` key of the pickled entries a checkpoint's manifest carries (the store owns the record
shape: ``pipeline.store.carried``, which also sizes them into ``Manifest.bytes``)."""
PICKLED_MAX_BYTES = 16 << 10
"""A pickled entry of at most this many bytes rides in the manifest (base64: 4/3 of it)."""


def save(
    kinds: dict[str, str], payloads: dict[str, Any], extra: dict[str, Any], put: Callable[[str, Any], Leaf]
) -> tuple[DictNode, dict[str, Any]]:
    """The checkpoint's output tree (``put(name, payload)`` writes one object) and the
    payloads written as objects (what a commit rewrites should a gc take one); entries that
    ride in the manifest go to ``extra[INLINE]`` / ``extra[PICKLED]``."""
    entries, objects, inline, pickled = [], {}, {}, {}
    for name, payload in payloads.items():
        if _plain_json(payload, [INLINE_ITEMS]):
            inline[name] = payload
            continue
        small = _small_pickle(payload, kinds.get(name))
        if small is not None:
            pickled[name] = carried.encode(small)
            continue
        objects[name] = payload
        entries.append((name, put(name, payload)))
    if inline:
        extra[INLINE] = inline
    if pickled:
        extra[PICKLED] = pickled
    return DictNode(tuple(entries)), objects


def _small_pickle(payload: Any, kind: str | None) -> bytes | None:
    """The bytes of ``payload`` as its object would hold them, when they are few enough to ride
    in the manifest (None: it stays an object)."""
    if type(payload) is codecs.Pickled:  # a background write's snapshot: already the bytes
        return payload.data if len(payload.data) <= PICKLED_MAX_BYTES else None
    if kind not in adapters.PICKLED_KINDS:
        return None
    small = codecs.pickled(payload, limit=PICKLED_MAX_BYTES)  # (stops at the limit: a big one is not pickled twice)
    return None if small is None else small.data


def load(store: Store, manifest: Manifest) -> dict[str, Any]:
    """A checkpoint's entries: its objects, read and verified, and those its manifest carries.
    CheckpointError when an entry it names is in none of them (written by a newer version that
    keeps entries elsewhere: never resumed from with that entry left as it was)."""
    payloads = store.load(manifest.outputs)
    extra = manifest.extra
    payloads.update(extra.get(INLINE, {}))
    for name, doc in manifest.carried.items():
        payloads[name] = carried.read(name, doc)
    lost = [name for name in extra.get("entries", {}) if name not in payloads]
    if lost:
        raise CheckpointError(f"checkpoint {manifest.step} holds entries {lost} it does not say how to read")
    return payloads


def _plain_json(value: Any, budget: list[int]) -> bool:
    """True when ``value`` is small JSON that reads back exactly as it is: dicts with str keys,
    lists, str, int, finite float, bool, None (exact types: no tuples, no subclasses)."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    tp = type(value)
    if value is None or tp is bool or tp is int:
        return True
    if tp is float:
        return math.isfinite(value)
    if tp is str:
        return len(value) <= 256
    if tp is list:
        return all(_plain_json(v, budget) for v in value)
    if tp is dict:
        return all(type(k) is str and len(k) <= 256 and _plain_json(v, budget) for k, v in value.items())
    return False
