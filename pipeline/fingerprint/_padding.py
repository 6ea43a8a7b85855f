"""Padding of structured dtypes: bytes no field covers, never content.

A structured array such as a fitted sklearn tree's ``nodes`` (7 bytes after each node's
last field) has padding that holds whatever the memory held: zero in a freshly fitted
tree, anything in one loaded by joblib. It is hashed as zero. A block whose padding is
already zero (checked with one strided reduction per padded word of an element) is fed
as it lies, zero-copy; only a block with non-zero padding is copied and its padding
cleared. Either way the stream is the block's bytes with padding zeroed.

The unit of work is a word: the widest of 8, 4, 2, 1 bytes that divides the itemsize. A
plan, cached per dtype, lists the words of an element that are partly or wholly padding
with the mask of their field bits.
"""

from __future__ import annotations

import threading

import numpy as np

from .encoder import Encoder

BLOCK_BYTES = 1 << 20  # a block stays in the cache between its check, copy and hash
_MANY = 4  # more padded words per element than this: one tiled-mask pass instead


class PaddingPlan:
    """How to zero the padding of one structured dtype, word by word."""

    __slots__ = ("word", "words", "partial", "tiled")

    def __init__(self, dtype: np.dtype, field_bytes: np.ndarray) -> None:
        size = dtype.itemsize
        width = next(w for w in (8, 4, 2, 1) if size % w == 0)
        self.word = np.dtype(f"<u{width}")
        self.words = size // width
        keep = field_bytes.view(self.word)  # the mask, one word per word of an element
        full = np.iinfo(self.word).max
        self.partial = tuple((j, int(k)) for j, k in enumerate(keep.tolist()) if k != full)
        self.tiled = np.tile(keep, max(1, BLOCK_BYTES // size)) if len(self.partial) > _MANY else None

    def is_clean(self, data: np.ndarray, n: int) -> bool:
        """Whether the ``n`` elements in ``data`` (their bytes, a contiguous uint8 array)
        have all padding zero."""
        size = self.words * self.word.itemsize
        for j, keep in self.partial:
            col = np.ndarray((n,), self.word, data, j * self.word.itemsize, (size,))
            if keep & (keep + 1) == 0:  # field bits low, padding high: one max
                if col.max() > keep:
                    return False
            elif np.bitwise_and(col, ~keep & np.iinfo(self.word).max).any():
                return False
        return True

    def cleared(self, data: np.ndarray, n: int) -> np.ndarray:
        """A copy of the ``n`` elements in ``data`` (as for ``is_clean``) with padding
        zeroed, as bytes, in this thread's scratch buffer (valid until the next call)."""
        nwords = n * self.words
        src = np.ndarray((nwords,), self.word, data)
        out = _scratch(nwords * self.word.itemsize).view(self.word)
        if self.tiled is not None:
            np.bitwise_and(src, self.tiled[:nwords], out=out)
        else:
            np.copyto(out, src)
            stride = self.words * self.word.itemsize
            for j, keep in self.partial:
                col = np.ndarray((n,), self.word, out, j * self.word.itemsize, (stride,))
                np.bitwise_and(col, self.word.type(keep), out=col)
        return out.view(np.uint8)


_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A buffer of at least ``n`` bytes, this thread's own, reused (a fresh one per block
    is an mmap and its page faults: more than the clearing costs)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = _local.buf = np.empty(n, np.uint8)
    return buf[:n]


def _field_bytes(dtype: np.dtype) -> np.ndarray:
    """0xFF for each byte of an element of ``dtype`` that belongs to a field, 0 for padding."""
    if dtype.fields:
        mask = np.zeros(dtype.itemsize, np.uint8)
        for field in dtype.fields.values():
            sub, offset = field[0], field[1]
            mask[offset : offset + sub.itemsize] |= _field_bytes(sub)
        return mask
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return np.tile(_field_bytes(base), int(np.prod(shape)))
    return np.full(dtype.itemsize, 0xFF, np.uint8)


# structured dtype (by value: two equal dtypes share a plan) -> its plan, or None when
# every byte of an element is a field's
_PLANS: dict[np.dtype, PaddingPlan | None] = {}


def padding_plan(dtype: np.dtype) -> PaddingPlan | None:
    """The plan for a structured dtype with padding; None for one without (or no fields)."""
    try:
        return _PLANS[dtype]
    except KeyError:
        pass
    plan = None
    if dtype.fields:
        field_bytes = _field_bytes(dtype)
        plan = None if field_bytes.all() else PaddingPlan(dtype, field_bytes)
    if len(_PLANS) >= 64:  # a plan with a tiled mask holds a block (1 MiB)
        _PLANS.clear()
    _PLANS[dtype] = plan
    return plan


def feed_padded(a: np.ndarray, plan: PaddingPlan, enc: Encoder) -> None:
    """Feed a structured array's elements in C order with their padding zeroed, a block
    at a time: as it lies, then checked (the check is cheap once hashing has brought the
    block into the cache); a block whose padding was not zero is taken back and fed as a
    cleared copy instead."""
    flat = a.reshape(-1)
    rows = max(1, BLOCK_BYTES // a.dtype.itemsize)
    for i in range(0, flat.shape[0], rows):
        block = flat[i : i + rows] if i or flat.shape[0] > rows else flat
        data = (block if block.flags.c_contiguous else np.ascontiguousarray(block)).view(np.uint8)
        n = block.shape[0]
        mark = enc.checkpoint()
        enc.update(data)
        if not plan.is_clean(data, n):
            enc.rewind(mark)
            enc.update(plan.cleared(data, n))
