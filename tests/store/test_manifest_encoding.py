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


BIG_INTS = [2**64, 2**64 - 1, 2**63, -(2**63), -(2**63) - 1, 2**127 + 12345, -(2**200), 10**19, 10**40]


def test_integers_beyond_64_bits_are_written_by_the_fast_path(monkeypatch) -> None:
    """A checkpoint manifest carries a NumPy Generator's state inline (PCG64: two 128-bit
    integers): orjson refuses them, yet its spelling is used, byte for byte the standard one."""
    pytest.importorskip("orjson")
    docs = [
        {"state": {"state": 35399562948360463058890781895381311971, "inc": 87136372517582989555478159403783844777},
         "bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0},
        {"a": BIG_INTS, "b": {str(i): n for i, n in enumerate(BIG_INTS)}},
        {"c": [[2**64, 1.5, -3e-7], {"d": [-(2**70)]}]},
        {"mixed": [2**65, 1e-5, 0.1, 2.5e-9, 7, -(2**64), "x", None, True, {"n": 2**64}]},
        {"only": 2**64},
    ]  # fmt: skip
    expected = [standard(doc) for doc in docs]

    def refused(*args, **kwargs):
        raise AssertionError("the standard encoder was asked to write a document of big integers")

    monkeypatch.setattr(manifest_module.json, "dumps", refused)
    assert [dumps(doc) for doc in docs] == expected


def test_integers_beyond_64_bits_are_not_parsed_again_by_the_standard_parser(monkeypatch) -> None:
    """The marked text is read back once (orjson); the text with the integers' digits put back is
    not parsed again by json.loads (pure Python for big integers: most of a checkpoint manifest's
    encoding), and is still the standard encoder's text, sealed and read back exactly."""
    pytest.importorskip("orjson")
    pcg = {"state": 224318896075675753829746052757435494513, "inc": 87136372517582989555478159403783844777}
    state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 2091853879, "state": pcg}
    m = manifest(step=5, kind="checkpoint", extra={"inline": {"rng": state}, "big": BIG_INTS, "f": [1e-5, 0.1]})
    expected = standard(m.to_doc())

    def refused(*args, **kwargs):
        raise AssertionError("the text of a document of big integers was parsed again by json.loads")

    monkeypatch.setattr(manifest_module.json, "loads", refused)
    assert dumps(m.to_doc()) == expected
    raw = m.to_json()
    monkeypatch.undo()
    back = Manifest.from_json(raw)
    assert back.extra == m.extra and back.extra["inline"]["rng"]["state"] == state["state"]
    same(back, reference(raw))


@pytest.mark.parametrize(
    "text",
    ["\x000", "\x001", "\x00", "\x0012", '"\x000', 'a "\x000', "\x000\n", "x\x000"],
)
def test_strings_that_look_like_the_big_integer_markers_are_written_as_they_are(text: str) -> None:
    doc = {"n": [2**64, -(2**65)], "s": text, "l": [text, {"k": text}], text: 2**100}
    assert dumps(doc) == standard(doc)


def test_a_checkpoint_manifest_with_big_integers_reads_back_exactly() -> None:
    state = {"bit_generator": "PCG64", "has_uint32": 1, "uinteger": 2**32 - 1,
             "state": {"state": 2**128 - 1, "inc": 2**127 + 1}}  # fmt: skip
    m = manifest(step=3, kind="checkpoint", extra={"inline": {"rng": state}, "big": BIG_INTS})
    raw = m.to_json()
    back = Manifest.from_json(raw)
    assert back.extra == m.extra
    assert [type(n) for n in back.extra["big"]] == [int] * len(BIG_INTS)
    same(back, reference(raw))


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), JSONISH | st.integers(-(2**130), 2**130), max_size=6))
def test_random_documents_with_big_integers_are_written_as_the_standard_encoder_writes_them(doc) -> None:
    doc["big"] = [2**64, doc.copy()]
    assert dumps(doc) == standard(doc)
