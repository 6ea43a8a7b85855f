"""The manifest: the commit record of one stage result (or training checkpoint).

It names every object of the result with its checksum and codec, records every
component of the key (so ``explain`` can say what changed), and carries timings,
sizes, the run id, the creation time and library versions. JSON on disk, sealed: a
checksum over its bytes is its first member (``pipeline.store.seal``), so a damaged or
substituted manifest is detected before anything it says is believed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import platform
from dataclasses import MISSING, dataclass, field
from importlib import metadata
from typing import Any

from ..fingerprint.component import Component, read_components
from . import carried as _carried
from . import seal as _seal
from .manifest_json import dumps, loads
from .tree import Tree, from_doc, to_doc, total_bytes

FORMAT = 2
"""2: sealed (a checksum over the manifest's bytes). 1: unsealed, read as unverified."""


class Unverified(ValueError):
    """A manifest of format 1: it has no seal, so nothing proves it is the one asked for.
    ``manifest`` is what it says (for gc, which keeps what it references)."""

    def __init__(self, message: str, manifest: Manifest | None = None) -> None:
        super().__init__(message)
        self.manifest = manifest


class Unsigned(Unverified):
    """A manifest whose seal this store can't judge: not signed while the store has a signing
    key, signed with another key, or signed while the store has none. Kept, never served."""


@dataclass(frozen=True)
class Manifest:
    stage: str
    key: str
    outputs: Tree
    """The result's objects: a typed tree (see ``pipeline.store.tree``)."""
    code: str = ""
    code_components: tuple[Component, ...] = ()
    """Typed ``(kind, name, digest)`` records of the code key; JSON: ``[kind, name, digest]``."""
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    """name -> {"fingerprint", "repr"}: arguments recorded by value (small, plain)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """name -> fingerprint: arguments recorded by content only (data, models)."""
    created: str = ""
    run_id: str = ""
    compute_seconds: float = 0.0
    save_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    kind: str = "stage"
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def bytes(self) -> int:
        """What the result holds: its objects' bytes and those of the entries it carries
        (``pipeline.store.carried``). Retention budgets and every size shown count this."""
        return self.object_bytes + self.carried_bytes

    @property
    def object_bytes(self) -> int:
        """Its object files' bytes only (what freeing its objects can free)."""
        return total_bytes(self.outputs)

    @property
    def carried(self) -> dict[str, Any]:
        """name -> encoded record of the pickled entries it carries (``pipeline.store.carried``)."""
        return _carried.records(self.extra)

    @property
    def carried_bytes(self) -> int:
        """The bytes of the pickled entries it carries (as their objects' would be): they go with
        the manifest, never freed as object files."""
        return sum(_carried.sizes(self.extra).values())

    @property
    def output_fingerprint(self) -> str | None:
        return self.outputs.fingerprint

    def argument(self, name: str) -> str | None:
        """The fingerprint argument ``name`` contributed to the key (a param or an input)."""
        if name in self.params:
            return self.params[name].get("fingerprint")
        return self.inputs.get(name)

    def to_doc(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in _NAME_ORDER}
        doc["outputs"] = to_doc(self.outputs)
        doc["code_components"] = [list(c) for c in self.code_components]  # (JSON writes a tuple as a list)
        doc["format"] = FORMAT
        return doc

    def to_json(self, sealer: _seal.Sealer = _seal.CHECKSUM) -> bytes:
        """The manifest as sealed JSON bytes."""
        return _seal.seal(dumps(self.to_doc()), sealer)

    @classmethod
    def from_json(cls, data: bytes | str, sealer: _seal.Sealer = _seal.CHECKSUM) -> Manifest:
        """Parse and check a manifest: ValueError when it is damaged or not a manifest,
        Unverified (a ValueError) for an unsealed manifest of format 1."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if _seal.is_sealed(raw):
            try:
                doc = loads(_seal.unseal(raw, sealer))
            except _seal.ForeignSeal as e:
                raise Unsigned(str(e), _unchecked(raw)) from None
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"unknown manifest format {doc.get('format') if isinstance(doc, dict) else doc!r}")
        else:
            doc = json.loads(raw)
            if not (isinstance(doc, dict) and doc.get("format") == 1 and "seal" not in doc):
                raise _seal.BadSeal("the manifest has no seal")
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> Manifest:
        if not isinstance(doc, dict):
            raise ValueError(f"a manifest is a JSON object, not {type(doc).__name__}")
        fields = dict(doc) if doc.keys() <= _NAMES else {k: v for k, v in doc.items() if k in _NAMES}
        fields["outputs"] = from_doc(doc.get("outputs"))
        fields["code_components"] = _components(doc.get("code_components", ()))
        manifest = _new(cls, fields)
        if not (isinstance(manifest.stage, str) and isinstance(manifest.key, str)):
            raise ValueError("stage and key must be strings")
        if manifest.step is not None and (type(manifest.step) is not int or manifest.step < 0):
            raise ValueError(f"bad step {manifest.step!r}")
        if manifest.format == 1:
            raise Unverified("a manifest of format 1 carries no checksum", manifest)
        return manifest


_FIELDS = dataclasses.fields(Manifest)
_NAME_ORDER = tuple(f.name for f in _FIELDS)
_NAMES = frozenset(_NAME_ORDER)
_REQUIRED = frozenset(f.name for f in _FIELDS if f.default is MISSING and f.default_factory is MISSING)
_DEFAULTS = {f.name: f.default for f in _FIELDS if f.default is not MISSING}
_FACTORIES = tuple((f.name, f.default_factory) for f in _FIELDS if f.default_factory is not MISSING)


def _new(cls: type[Manifest], fields: dict[str, Any]) -> Manifest:
    """``cls(**fields)``, without the frozen dataclass's ``__init__`` (a quarter of a parse's
    time: one ``object.__setattr__`` per field): the same instance, field for field."""
    if cls is not Manifest or not _REQUIRED <= fields.keys():
        return cls(**fields)  # a subclass, or a field missing: the constructor says what is wrong
    if len(fields) < len(_NAMES):  # (the fields are of _NAMES: every one given is the common case)
        fields = {**_DEFAULTS, **{name: make() for name, make in _FACTORIES if name not in fields}, **fields}
    manifest = object.__new__(cls)
    manifest.__dict__.update(fields)
    return manifest


def _components(raw: Any) -> tuple[Component, ...]:
    """``read_components`` for the shape manifests are written in (``plain_components``);
    any other shape is read by ``read_components``."""
    if plain_components(raw):
        return tuple([_tuple(Component, c) for c in raw])  # Component._make, less its length check
    return read_components(raw)


def plain_components(raw: Any) -> bool:
    """True when ``raw`` is code components in the shape manifests are written in (a list of
    lists of three strings), checked by C-level passes."""
    return (
        type(raw) is list
        and set(map(type, raw)) <= _LIST
        and set(map(len, raw)) <= _THREE
        and set(map(type, itertools.chain.from_iterable(raw))) <= _STR
    )


_LIST, _THREE, _STR = frozenset([list]), frozenset([3]), frozenset([str])
_tuple = tuple.__new__


def _unchecked(raw: bytes) -> Manifest | None:
    """What a manifest with a foreign seal says (unchecked: for gc and verify, never served)."""
    try:
        return Manifest._from_doc(json.loads(_seal.body_of(raw)))
    except (Unverified, ValueError, TypeError, KeyError, AttributeError):
        return None


_VERSIONED = ("pipeline", "prefect", "pandas", "pyarrow", "numpy", "scikit-learn", "joblib")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
