"""Result trees: what a manifest's ``outputs`` holds, typed.

A tree is a :class:`Leaf` (one object: id, codec, bytes, fingerprint) or a node of trees,
:class:`TupleNode` (a tuple's parts) or :class:`DictNode` (a str-keyed dict's entries).
Stage results, training checkpoints and search trials all use it. One walker
(:func:`leaves` / :func:`nodes`) and one JSON codec (:func:`to_doc` / :func:`from_doc`),
which reads and writes the JSON shape stores have always held::

    {"object": "<32 hex>", "codec": "joblib", "bytes": 123, "fingerprint": "xxh3:…", "signature": "…"}
    {"tuple": [tree, …], "fingerprint": …}
    {"dict": {"name": tree, …}, "fingerprint": …}

``fingerprint`` is the content fingerprint of the value the tree holds, or ``None`` when it
is unknown: not computed (checkpoints) or the value can't be fingerprinted. ``None`` never
equals a fingerprint, so an unknown content can never be taken for a known one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Union

from .codecs import CODECS

_OID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Leaf:
    object: str
    codec: str
    bytes: int
    fingerprint: str | None = None
    signature: str | None = None
    """For a codec that executes code on load: the store key's signature of the object
    (``pipeline.store.seal.Hmac.sign_object``); None when written without a signing key."""

    @property
    def suffix(self) -> str:
        return CODECS[self.codec].suffix


@dataclass(frozen=True)
class TupleNode:
    items: tuple[Tree, ...]
    fingerprint: str | None = None

    def __getitem__(self, i: int) -> Tree:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class DictNode:
    entries: tuple[tuple[str, Tree], ...]
    fingerprint: str | None = None

    @classmethod
    def of(cls, entries: dict[str, Tree], fingerprint: str | None = None) -> DictNode:
        return cls(tuple(entries.items()), fingerprint)

    def names(self) -> list[str]:
        return [k for k, _ in self.entries]

    def get(self, name: str) -> Tree | None:
        for k, t in self.entries:
            if k == name:
                return t
        return None

    def __getitem__(self, name: str) -> Tree:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


Tree = Union[Leaf, TupleNode, DictNode]


def children(tree: Tree) -> tuple[Tree, ...]:
    if isinstance(tree, TupleNode):
        return tree.items
    if isinstance(tree, DictNode):
        return tuple(t for _, t in tree.entries)
    return ()


def nodes(tree: Tree) -> Iterator[Tree]:
    """Every node of the tree, leaves included, depth first."""
    yield tree
    for child in children(tree):
        yield from nodes(child)


def leaves(tree: Tree) -> Iterator[Leaf]:
    """Every object the tree references."""
    for node in nodes(tree):
        if isinstance(node, Leaf):
            yield node


def total_bytes(tree: Tree) -> int:
    return sum(leaf.bytes for leaf in leaves(tree))


def part(tree: Tree, name: str) -> Tree:
    """The entry ``name`` of a dict node; the tree itself when it is one object (a dict that
    was saved whole as JSON holds its entries inside)."""
    if isinstance(tree, DictNode) and name in tree:
        return tree[name]
    return tree


# -- the JSON codec ----------------------------------------------------------------------------
def to_doc(tree: Tree) -> dict[str, Any]:
    if isinstance(tree, Leaf):
        doc: dict[str, Any] = {"object": tree.object, "codec": tree.codec, "bytes": tree.bytes}
        if tree.signature is not None:
            doc["signature"] = tree.signature
    elif isinstance(tree, TupleNode):
        doc = {"tuple": [to_doc(t) for t in tree.items]}
    else:
        doc = {"dict": {k: to_doc(t) for k, t in tree.entries}}
    if tree.fingerprint is not None:
        doc["fingerprint"] = tree.fingerprint
    return doc


def from_doc(doc: Any, depth: int = 0) -> Tree:
    """Parse (and check) a tree; ValueError when it is not a well-formed tree of known codecs."""
    if depth > 64 or not isinstance(doc, dict):
        raise ValueError(f"output tree node is {type(doc).__name__}, not an object"[:200])
    fp = doc.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise ValueError(f"bad fingerprint {fp!r}"[:200])
    fp = fp or None  # "" was how stores of format 1 said "unknown"
    if "tuple" in doc and isinstance(doc["tuple"], list):
        return TupleNode(tuple(from_doc(t, depth + 1) for t in doc["tuple"]), fp)
    if "dict" in doc and isinstance(doc["dict"], dict):
        return DictNode(tuple((str(k), from_doc(t, depth + 1)) for k, t in doc["dict"].items()), fp)
    oid, codec, size = doc.get("object"), doc.get("codec"), doc.get("bytes")
    if not (isinstance(oid, str) and _OID.fullmatch(oid) and codec in CODECS and type(size) is int and size >= 0):
        raise ValueError(f"bad object reference {doc!r}"[:200])
    signature = doc.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise ValueError(f"bad object signature {signature!r}"[:200])
    return Leaf(oid, codec, size, fp, signature)


def named_objects(doc: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """``(object id, codec)`` of every object a tree's JSON names, read leniently: what
    :func:`from_doc` would reject as a whole (a bad size, one bad node among good ones) still
    names the objects it can. For gc, which keeps whatever any manifest names."""
    if depth > 64 or not isinstance(doc, dict):
        return
    items = doc.get("tuple")
    if isinstance(items, list):
        for t in items:
            yield from named_objects(t, depth + 1)
        return
    entries = doc.get("dict")
    if isinstance(entries, dict):
        for t in entries.values():
            yield from named_objects(t, depth + 1)
        return
    oid, codec = doc.get("object"), doc.get("codec")
    if isinstance(oid, str) and isinstance(codec, str) and codec in CODECS and _OID.fullmatch(oid):
        yield oid, codec


__all__ = ["Leaf", "TupleNode", "DictNode", "Tree", "nodes", "leaves", "children", "total_bytes", "part",
           "to_doc", "from_doc", "named_objects"]  # fmt: skip
