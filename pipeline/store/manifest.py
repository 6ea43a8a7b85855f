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
import re
from dataclasses import MISSING, dataclass, field
from importlib import metadata
from typing import Any

from ..fingerprint.component import Component, read_components
from . import seal as _seal
from .tree import Tree, from_doc, to_doc, total_bytes

try:  # a dependency of Prefect's; 3-5x faster than json.loads on a manifest (see ``loads``)
    import orjson
except ImportError:  # pragma: no cover - the standard parser alone
    orjson = None  # type: ignore[assignment]

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
        return total_bytes(self.outputs)

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


_DIGITS = bytes(b"0"[0] if chr(i).isdigit() and i < 128 else b"."[0] for i in range(256))
_TWENTY = b"0" * 20
"""20 digits in a row (after ``translate(_DIGITS)``): maybe an integer beyond 64 bits, which
orjson would read as a float (a translate and a substring search: 5x cheaper than a regex)."""


def loads(body: bytes) -> Any:
    """``json.loads(body)``, by orjson where it gives the same document. It refuses NaN and
    Infinity, lone surrogates, text that is not UTF-8 and nesting deeper than 1024 (then
    json.loads reads it), but reads an integer beyond 64 bits as a float: a body with a run
    of 20 digits anywhere (a number that may be one) goes to json.loads."""
    if orjson is not None and _TWENTY not in body.translate(_DIGITS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def dumps(doc: dict[str, Any]) -> bytes:
    """``json.dumps(doc, indent=1, sort_keys=True).encode()``, byte for byte, 4-5x faster: the
    layout manifests have always been written in (``listing`` and ``store`` read ``created`` and
    ``outputs`` from it without decoding the rest).

    The standard encoder writes an indented document in pure Python (120 us for a trial's
    manifest). orjson writes it in C, with two-space indents: they are halved (every two spaces
    become one), and the floats it spells unlike ``repr`` (1e-9 <= |x| < 1e-4: ``0.00001``,
    ``1e-7``) are respelled. What is written is then read back, and must be the document itself;
    else the standard encoder writes it: NaN and infinities (orjson writes null), text that is
    not ASCII (the standard encoder escapes it) or holds two spaces in a row, tuples, keys that
    are not strings, and types only one of the encoders knows. (Integers beyond 64 bits, which
    orjson refuses, are written by it all the same: see ``_fast_dumps``.)"""
    if orjson is not None:
        out = _fast_dumps(doc)
        if out is not None:
            return out
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _fast_dumps(doc: dict[str, Any]) -> bytes | None:
    """``dumps`` by orjson, or None when what it writes is not the standard encoder's bytes.

    Integers beyond 64 bits (a NumPy Generator's state in every checkpoint manifest: PCG64 holds
    128-bit ones) stop orjson: they are swapped for marker strings (``_marked``), the marked
    document is written and read back, and each marker, as a whole value, is replaced by its
    integer's digits. A string of the document that is a marker too makes a count of markers
    replaced that is not the count of integers: then the standard encoder writes it."""
    try:
        return _orjson_text(doc)
    except TypeError:  # (orjson.JSONEncodeError is a TypeError)
        pass
    big: list[int] = []
    marked = _marked(doc, big)
    if not big:  # refused for another reason: the standard encoder says what it makes of it
        return None
    try:
        out = _orjson_text(marked)
    except TypeError:
        return None
    if out is None:
        return None
    digits = {b'"\\u0000%d"' % i: b"%d" % n for i, n in enumerate(big)}
    out, replaced = _MARKER.subn(lambda m: _digits(m, digits), out)
    return out if replaced == len(big) and b'"\\u0000' not in out else None


def _orjson_text(doc: dict[str, Any]) -> bytes | None:
    """orjson's text of ``doc`` in the standard encoder's spelling, if it reads back as ``doc``
    (None: it does not); TypeError when orjson refuses it."""
    out = orjson.dumps(doc, option=_INDENTED)
    if not out.isascii() or b"\x7f" in out:  # (the standard encoder escapes DEL too)
        return None
    out = out.replace(b"  ", b" ")
    if b"e-" in out:  # (a search is cheaper than a regex scan, and most find nothing)
        out = _SMALL_EXPONENT.sub(rb"e-0\1", out)
    if b"0.0000" in out:
        out = _TINY_DECIMAL.sub(_respelled, out)
    return out if orjson.loads(out) == doc else None


def _marked(value: Any, big: list[int]) -> Any:
    """``value`` with every integer orjson cannot write (beyond int64 / uint64) replaced by the
    string ``"\\x00<n>"`` (``big[n]`` is the integer). A container orjson writes as it is is
    shared, not walked: orjson finds the few that hold one faster than Python visits every leaf."""
    tp = type(value)
    if tp is int:
        return value if _INT64_MIN <= value <= _UINT64_MAX else _marker(value, big)
    if tp is not dict and tp is not list and tp is not tuple:
        return value
    try:
        orjson.dumps(value)
    except TypeError:
        pass
    else:
        return value
    if tp is dict:
        return {k: _marked(v, big) for k, v in value.items()}
    return tp([_marked(v, big) for v in value])


def _digits(m: re.Match[bytes], digits: dict[bytes, bytes]) -> bytes:
    """The digits of the integer a marker stands for; a match that is no marker stays as it is."""
    at = m.start()
    if m.string[at - 1] not in _SPACE_NEWLINE:  # (the indent or ": " before a whole value)
        return m.group()
    return digits.get(m.group(), m.group())


_SPACE_NEWLINE = frozenset(b" \n")


def _marker(n: int, big: list[int]) -> str:
    big.append(n)
    return f"\x00{len(big) - 1}"


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_MARKER = re.compile(rb'"\\u0000\d+"(?=,?\n)')
"""A ``_marked`` string as orjson writes it (a NUL escaped as ``\\u0000``), as a whole value: after
the indent or ``": "``, at a line's end (never inside a string, where a quote is escaped)."""


_INDENTED = 0 if orjson is None else orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
_SMALL_EXPONENT = re.compile(rb"e-(\d)(?=,?\n)")
"""orjson's one-digit negative exponent (``1e-7``; repr: ``1e-07``), as a value: at a line's end,
so never inside a string (which holds no raw newline)."""
_TINY_DECIMAL = re.compile(rb"0\.0000\d*(?=,?\n)")
"""orjson's decimal spelling of a float below 1e-4 (``0.00001``; repr: ``1e-05``), at a line's end."""


def _respelled(m: re.Match[bytes]) -> bytes:
    at = m.start()
    if at and m.string[at - 1] in _DIGIT_BYTES:  # the tail of a larger number (10.00001): as it is
        return m.group()
    return repr(float(m.group())).encode()


_DIGIT_BYTES = frozenset(b"0123456789")


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
