"""remembering_code(): a loop that keys many calls of the same code computes each code
fingerprint once, and what it remembers equals what a fresh computation gives."""

from __future__ import annotations

from pipeline.fingerprint import code_components, code_fingerprint, fingerprint
from pipeline.fingerprint.code import remembering_code
from tests.helpers import cycle, mutual

LIMIT = 3


def uses_limit(x):
    return x < LIMIT


def test_remembered_fingerprints_equal_fresh_ones_also_for_cycles():
    fresh = {f: code_components(f) for f in (mutual.stage, mutual.is_odd, mutual.is_even, cycle.handle, cycle.plus)}
    fresh_handlers = fingerprint(cycle.HANDLERS)
    for order in (list(fresh), list(fresh)[::-1]):  # a helper first, then what calls it, and the other way
        with remembering_code():
            for f in order:
                assert code_components(f) == fresh[f], f
            assert fingerprint(cycle.HANDLERS) == fresh_handlers
            for f in order:  # now served from the memo
                assert code_components(f) == fresh[f], f


def test_inside_the_block_code_is_fingerprinted_once_outside_every_time():
    global LIMIT
    before = code_fingerprint(uses_limit)
    try:
        with remembering_code():
            assert code_fingerprint(uses_limit) == before
            LIMIT = 4  # an edit inside the block is not seen: the block promises none happen
            assert code_fingerprint(uses_limit) == before
            assert fingerprint(uses_limit) == fingerprint(uses_limit)
        assert code_fingerprint(uses_limit) != before  # outside: computed again, the edit counts
    finally:
        LIMIT = 3
    assert code_fingerprint(uses_limit) == before
