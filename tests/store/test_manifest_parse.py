"""The fast manifest parser (orjson where it can, a constructor without the dataclass
``__init__``) reads every manifest exactly as the standard one (json.loads + ``Manifest(**)``)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.fingerprint import Component
from pipeline.fingerprint.component import read_components
from pipeline.store import seal
from pipeline.store.manifest import Manifest, Unverified, loads
from pipeline.store.tree import DictNode, Leaf, TupleNode, from_doc

OID = "0123456789abcdef0123456789abcdef"


def reference(raw: bytes) -> Manifest:
    """How manifests were parsed before the fast path: json.loads, then the constructor."""
    doc = json.loads(seal.unseal(raw))
    names = {f.name for f in dataclasses.fields(Manifest)}
    fields = {k: v for k, v in doc.items() if k in names}
    fields["outputs"] = from_doc(doc.get("outputs"))
    fields["code_components"] = read_components(doc.get("code_components", ()))
    return Manifest(**fields)


def same(a: Manifest, b: Manifest) -> None:
    """Equal field by field (NaN == NaN here), with the same types (1 vs 1.0 vs True)."""
    for f in dataclasses.fields(Manifest):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert json.dumps(x, default=repr, sort_keys=True) == json.dumps(y, default=repr, sort_keys=True), f.name
        assert type(x) is type(y), f.name


def manifest(**over) -> Manifest:
    base = dict(
        stage="train",
        key="xxh3:" + "ab" * 16,
        outputs=TupleNode((Leaf(OID, "json", 12, "xxh3:" + "cd" * 16), DictNode((("m", Leaf(OID, "joblib", 3)),)))),
        code="xxh3:" + "ef" * 16,
        code_components=(Component("code", "flows.train", "xxh3:" + "01" * 16),),
        params={"lr": {"fingerprint": "xxh3:" + "02" * 16, "repr": "0.1"}},
        inputs={"frame": "xxh3:" + "03" * 16},
        created="2026-12-01T12:00:00.000001+00:00",
        run_id="r",
        compute_seconds=1.25,
        versions={"python": "3.11.7"},
    )
    return Manifest(**{**base, **over})


EDGES = {
    "big ints": dict(extra={"n": 2**64, "neg": -(2**80), "max": 2**63 - 1, "min": -(2**63)}, step=2**70),
    "floats": dict(extra={"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "tiny": 5e-324, "-0": -0.0}),
    "unicode": dict(stage="étape-ü-日本", run_id="😀", extra={"t": "a\u0000b\u2028c", "k\u00e9": "\U0010ffff"}),
    "lone surrogate": dict(extra={"s": "\ud800x", "t": "\udfff"}),
    "nested params": dict(
        params={"cfg": {"fingerprint": "xxh3:" + "04" * 16, "repr": "{'a': [1, (2, 3)], 'b': {'c': None}}"}},
        extra={"deep": [[[[{"a": [1, 2.5, None, True, False, "x"]}]]]], "metrics": {"loss": 0.1}},
    ),
    "empty": dict(code_components=(), params={}, inputs={}, versions={}, extra={}),
    "checkpoint": dict(kind="checkpoint", step=3),
    "exact floats": dict(compute_seconds=0.1 + 0.2, save_seconds=1e308, extra={"x": 123456789.123456789}),
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_fast_parser_reads_edge_cases_as_the_reference_does(name: str) -> None:
    raw = manifest(**EDGES[name]).to_json()
    fast, ref = Manifest.from_json(raw), reference(raw)
    same(fast, ref)
    assert name == "floats" or fast == ref  # (NaN != NaN)


def test_fallback_covers_what_orjson_refuses() -> None:
    """Where orjson would refuse a body (big ints, NaN, lone surrogates), json.loads reads it."""
    for body in (b'{"a": 18446744073709551616}', b'{"a": NaN, "b": -Infinity}', b'{"a": "\\ud800"}'):
        assert json.dumps(loads(body)) == json.dumps(json.loads(body))
    assert loads(b'{"a": 1, "a": 2}') == json.loads(b'{"a": 1, "a": 2}')  # duplicate keys: the last


def test_legacy_and_odd_component_shapes_take_the_general_reader() -> None:
    for components in ({"pkg:numpy": "2.0", "f": "xxh3:1"}, [["code", "f", "d"], ["x", "y"]], [["a", "b", 3]]):
        doc = json.loads(seal.unseal(manifest().to_json()))
        doc["code_components"] = components
        raw = seal.seal(json.dumps(doc, indent=1, sort_keys=True).encode())
        try:
            expected = reference(raw)
        except ValueError as e:
            with pytest.raises(ValueError, match=re.escape(str(e))):
                Manifest.from_json(raw)
        else:
            same(Manifest.from_json(raw), expected)


def test_missing_and_unknown_fields() -> None:
    doc = json.loads(seal.unseal(manifest().to_json()))
    doc["surplus"] = 1  # a member of a newer version: ignored
    for name in ("code", "params", "extra", "step", "created"):  # defaults filled in, fresh per manifest
        doc.pop(name)
    raw = seal.seal(json.dumps(doc, indent=1, sort_keys=True).encode())
    a, b = Manifest.from_json(raw), Manifest.from_json(raw)
    same(a, reference(raw))
    assert a.extra == {} and a.extra is not b.extra and a.params is not b.params
    for required in ("stage", "outputs"):
        bad = dict(doc)
        bad.pop(required)
        with pytest.raises((ValueError, TypeError)):
            Manifest.from_json(seal.seal(json.dumps(bad).encode()))


def test_checks_still_hold() -> None:
    raw = manifest().to_json()
    with pytest.raises(seal.BadSeal):
        Manifest.from_json(raw.replace(b'"run_id": "r"', b'"run_id": "s"'))
    for bad in (dict(step=-1), dict(step=True), dict(stage=3)):
        doc = json.loads(seal.unseal(raw))
        doc.update(bad)
        with pytest.raises(ValueError):
            Manifest.from_json(seal.seal(json.dumps(doc).encode()))
    doc = json.loads(seal.unseal(raw))
    doc["format"] = 1
    with pytest.raises(Unverified):
        Manifest._from_doc(doc)
    with pytest.raises(ValueError):
        Manifest.from_json(seal.seal(b'{"format": 2, "outputs": []}'))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=8), JSONISH, max_size=5), run_id=st.text(), seconds=st.floats())
def test_fast_parser_equals_reference_on_random_documents(extra, run_id, seconds) -> None:
    raw = manifest(extra=extra, run_id=run_id, compute_seconds=seconds).to_json()
    same(Manifest.from_json(raw), reference(raw))
