"""The JSON text of a manifest, byte for byte as the standard library writes and reads it, fast.

A manifest is written as ``json.dumps(doc, indent=1, sort_keys=True)`` (the layout every
manifest on disk has; ``listing`` and ``store`` read ``created`` and ``outputs`` from the text
without decoding the rest). The standard encoder writes indented JSON in pure Python; orjson
writes it in C, and :func:`dumps` turns its text into the standard encoder's where it can (and
checks it), else leaves it to the standard encoder. :func:`loads` reads by orjson where that
gives the same document as ``json.loads``.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:  # a dependency of Prefect's; 3-5x faster than json.loads on a manifest (see ``loads``)
    import orjson
except ImportError:  # pragma: no cover - the standard parser alone
    orjson = None  # type: ignore[assignment]

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
    ``1e-7``) are respelled. What is written is then read back (for integers beyond 64 bits: the text
    they were marked in), and must be the document itself;
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
    replaced that is not the count of integers: then the standard encoder writes it.

    The marked text was read back and is the marked document (``_orjson_text``), so the text is
    not parsed again: each marker stands once, as a whole value, for one integer (a string value
    spelled like one makes the count differ; one as a key or inside a string is left over, and
    refused), and its digits are what the standard encoder writes for that integer (its
    ``repr``). A second parse (``json.loads``, pure Python for big integers) cost more than the
    rest of the encoding."""
    try:
        return _orjson_text(doc)
    except TypeError:  # (orjson.JSONEncodeError is a TypeError)
        pass
    big: list[int] = []
    marked = _marked(doc, big, refused=True)  # (orjson has just refused the document)
    if not big:  # refused for another reason: the standard encoder says what it makes of it
        return None
    try:
        out = _orjson_text(marked)
    except TypeError:
        return None
    if out is None:
        return None
    digits = {b'"\\u0000%d"' % i: b"%d" % n for i, n in enumerate(big)}
    out, replaced = _MARKER.subn(lambda m: digits.get(m.group(), m.group()), out)
    if replaced != len(big) or b'"\\u0000' in out:
        return None
    return out


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


_SCALARS = frozenset([str, float, bool, type(None)])
"""Values ``_marked`` keeps as they are (never an integer: a bool is not one here, by type)."""


def _marked(value: Any, big: list[int], refused: bool = False) -> Any:
    """``value`` with every integer orjson cannot write (beyond int64 / uint64) replaced by the
    string ``"\\x00<n>"`` (``big[n]`` is the integer). A container orjson writes as it is is
    shared, not walked: orjson finds the few that hold one faster than Python visits every leaf.
    ``refused``: orjson is known to refuse ``value`` (it is not asked again). Strings, floats,
    booleans and None are kept as they are, without a call each."""
    tp = type(value)
    if tp is int:
        return value if _INT64_MIN <= value <= _UINT64_MAX else _marker(value, big)
    if tp is not dict and tp is not list and tp is not tuple:
        return value
    if not refused:
        try:
            orjson.dumps(value)
        except TypeError:
            pass
        else:
            return value
    if tp is dict:
        return {k: v if type(v) in _SCALARS else _marked(v, big) for k, v in value.items()}
    return tp([v if type(v) in _SCALARS else _marked(v, big) for v in value])


def _marker(n: int, big: list[int]) -> str:
    big.append(n)
    return f"\x00{len(big) - 1}"


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_MARKER = re.compile(rb'"\\u0000(?<=[ \n]"\\u0000)\d+"(?=,?\n)')
"""A ``_marked`` string as orjson writes it (a NUL escaped as ``\\u0000``), as a whole value: after
the indent or ``": "``, at a line's end (never inside a string, where a quote is escaped). The
pattern starts with its literal text and looks behind from there: a lookbehind first would be
tried at every byte of the manifest (10-25x slower: 80-200 us a checkpoint manifest)."""


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
