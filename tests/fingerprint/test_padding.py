"""Padding of structured dtypes is never content: an array hashes as its bytes with every
padding byte zeroed, whatever the padding held, through the zero-copy path (padding
already zero) and the cleared-copy path (padding not zero) alike, whatever the block a
dirty element falls in, the memory layout or the alignment."""

from __future__ import annotations

import numpy as np
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.fingerprint import fingerprint
from pipeline.fingerprint._numpy import array_header
from pipeline.fingerprint._padding import BLOCK_BYTES, padding_plan

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = ["u1", "<i2", "<i4", "<f8", "<i8", "S3", "(2,)u1", "<c16"]


def spec(a: np.ndarray) -> str:
    """The stream by definition: header, then the C-order bytes with padding zeroed
    (a zeroed array with each field copied in holds exactly that)."""
    zeroed = np.zeros(a.shape, a.dtype)
    for name in a.dtype.names:
        zeroed[name] = a[name]
    return "xxh3:" + xxhash.xxh3_128(array_header(a) + zeroed.tobytes()).hexdigest()


@st.composite
def padded_dtypes(draw, depth=0):
    """A structured dtype with gaps between fields and after the last (nested once)."""
    names, formats, offsets, at = [], [], [], draw(st.integers(0, 9))
    for i in range(draw(st.integers(1, 5))):
        nested = depth == 0 and draw(st.booleans())
        fmt = draw(padded_dtypes(depth + 1)) if nested else np.dtype(draw(st.sampled_from(FORMATS)))
        names.append(f"f{i}")
        formats.append(fmt)
        offsets.append(at)
        at += fmt.itemsize + draw(st.integers(0, 9))
    itemsize = at + draw(st.integers(0, 9))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


def _filled(dtype: np.dtype, n: int, seed: int, garbage: int | None) -> np.ndarray:
    """``n`` elements of random field bytes; padding bytes all ``garbage`` (None: random)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    if garbage is not None:
        raw[:] = garbage
    a = raw.view(dtype)
    fields = np.frombuffer(rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).tobytes(), dtype)
    for name in dtype.names:
        a[name] = fields[name]
    return a


@FAST
@given(padded_dtypes(), st.integers(0, 300), st.integers(0, 2**32), st.sampled_from([None, 0, 0xFF, 0xA5]))
def test_a_padded_array_hashes_as_its_bytes_with_padding_zeroed(dtype, n, seed, garbage):
    a = _filled(dtype, n, seed, garbage)
    assert fingerprint(a) == spec(a)
    assert fingerprint(a[::2]) == spec(a[::2])  # strided: copied a block at a time
    unaligned = np.frombuffer(b"\x00" + a.tobytes(), dtype, offset=1) if n else a
    assert fingerprint(unaligned) == spec(a)
    if n and padding_plan(dtype) is not None:
        changed = a.copy()
        changed.view(np.uint8)[-1] ^= 0xFF  # the last byte: padding or a field's
        last_is_field = spec(changed) != spec(a)
        assert (fingerprint(changed) != fingerprint(a)) == last_is_field


def test_dirty_padding_in_any_block_of_a_large_array():
    """Blocks are checked one by one: a dirty element in the first, a middle or the last
    block is cleared there, and the clean blocks around it still hash as they lie."""
    dtype = np.dtype({"names": ["a", "b"], "formats": ["<i8", "u1"], "offsets": [0, 56], "itemsize": 64})
    n = 3 * BLOCK_BYTES // dtype.itemsize + 5  # four blocks, the last one short
    clean = _filled(dtype, n, 1, 0)
    where = (0, n // 2, n - 1, BLOCK_BYTES // dtype.itemsize)
    clean["b"][list(where)] = 0  # so that the dirty word below is exactly 0x100
    key = fingerprint(clean)
    assert key == spec(clean)
    for i in where:
        dirty = clean.copy()
        dirty.view(np.uint8).reshape(n, -1)[i, 57] = 0x01  # the least padding word above its field
        assert dirty.tobytes() != clean.tobytes()
        assert fingerprint(dirty) == key, i
    dirty = clean.copy()
    dirty.view(np.uint8).reshape(n, -1)[:, 57:] = 0xEE  # every element
    assert fingerprint(dirty) == key


def test_many_padded_words_and_padding_in_the_middle_of_a_word():
    """More padded words per element than the column-by-column clearing takes (one tiled
    mask pass then), and padding below a field inside one word (not the high bytes)."""
    names = [f"f{i}" for i in range(6)]
    many = np.dtype({"names": names, "formats": ["u1"] * 6, "offsets": list(range(0, 48, 8)), "itemsize": 48})
    assert padding_plan(many).tiled is not None
    middle = np.dtype({"names": ["a", "b"], "formats": ["u1", "<i4"], "offsets": [1, 4], "itemsize": 8})
    assert padding_plan(middle).partial == ((0, 0xFFFFFFFF_0000_FF00),)
    for dtype in (many, middle):
        a, b = _filled(dtype, 1000, 2, 0), _filled(dtype, 1000, 2, 0x5A)
        assert a.tobytes() != b.tobytes()
        assert fingerprint(a) == fingerprint(b) == spec(a)


def test_a_dtype_without_padding_has_no_plan():
    assert padding_plan(np.dtype([("a", "<i8"), ("b", "<f8")])) is None
    assert padding_plan(np.dtype("<f8")) is None
