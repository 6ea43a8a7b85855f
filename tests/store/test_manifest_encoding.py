"""The fast manifest encoder (orjson, indents halved, floats respelled, read back to check) writes
every manifest byte for byte as the standard one did (``json.dumps(doc, indent=1,
sort_keys=True)``): the format on disk is unchanged, old and new stores read alike."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.store import manifest as manifest_module
from pipeline.store.manifest import Manifest, dumps

from .test_manifest_parse import EDGES, manifest, reference, same


def standard(doc) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def test_every_float_magnitude_is_spelled_as_repr_spells_it() -> None:
    rng = random.Random(12)
    values = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e-4, 1e-5, 9.99e-5, 1e-9, 1e-10, 1e15, 1e16, 10.00001,
              -0.00001, 123456789.123456789]  # fmt: skip
    for _ in range(20000):
        x = rng.uniform(1, 10) * 10.0 ** rng.uniform(-330, 308)
        values.append(-x if rng.random() < 0.5 else x)
        values.append(float(f"{x:.3g}"))
    values = [v for v in values if math.isfinite(v)]
    doc = {"values": values, "one": {str(i): v for i, v in enumerate(values[:500])}}
    assert dumps(doc) == standard(doc)


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_cases_are_written_as_the_standard_encoder_writes_them(name: str) -> None:
    doc = manifest(**EDGES[name]).to_doc()
    assert dumps(doc) == standard(doc)
    raw = manifest(**EDGES[name]).to_json()
    same(Manifest.from_json(raw), reference(raw))


@pytest.mark.parametrize(
    "value",
    [
        "two  spaces",
        "  lead",
        "end e-7",
        "0.00001",
        "x\n 0.00001,\n",
        "\x7f",
        "tab\tnl\ncr\r\x01",
        'q"b\\',
        "/",
        ("tu", "ple"),
        {"k": ("nested", 1)},
        2**64,
        -(2**63) - 1,
        math.nan,
        -math.inf,
        "é",
    ],  # fmt: skip
)
def test_what_orjson_would_spell_otherwise_is_written_by_the_standard_encoder(value) -> None:
    doc = {"a": [value, {"b": value}], "value": value}
    assert dumps(doc) == standard(doc)


def test_a_trial_manifest_is_written_by_the_fast_path(monkeypatch) -> None:
    pytest.importorskip("orjson")
    m = manifest(extra={"trial": {"params": {"alpha": 2.1988464387221386e-05}, "value": 0.29829978375112093,
                                  "intermediate": {str(e): 1 / (e + 1) for e in range(20)}}})  # fmt: skip
    expected = standard(m.to_doc())

    def refused(*args, **kwargs):
        raise AssertionError("the standard encoder was asked to write a plain manifest")

    monkeypatch.setattr(manifest_module.json, "dumps", refused)
    assert dumps(m.to_doc()) == expected


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.sampled_from([1e-5, -3e-7, 2.5e-9]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), JSONISH, max_size=6))
def test_random_documents_are_written_as_the_standard_encoder_writes_them(doc) -> None:
    assert dumps(doc) == standard(doc)
