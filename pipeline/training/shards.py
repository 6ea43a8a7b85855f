"""Splitting a replicated training state into per-rank shards, and the snapshot buffers.

The arrays of a replicated state (model, optimizer, scheduler) are assigned to ranks by size
(:func:`owners`), written as each rank's shard, and put back into the skeleton (:func:`fill`)
on restore. Used by :mod:`pipeline.training.distributed`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import CheckpointError


@dataclass(frozen=True)
class Slot:
    """Where array ``index`` of the replicated state sits in its skeleton."""

    index: int


def _is_array(v: Any) -> bool:
    return (
        type(v).__module__ == "numpy"
        and type(v).__name__ == "ndarray"
        or (
            isinstance(v, dict) and "__torch_dtype__" in v  # the adapters' record of a numpy-less dtype
        )
    )


def _nbytes(v: Any) -> int:
    return int(v["bytes"].nbytes if isinstance(v, dict) else v.nbytes)


def _map(obj: Any, leaf: Callable[[Any], Any], is_leaf: Callable[[Any], bool]) -> Any:
    if is_leaf(obj):
        return leaf(obj)
    if isinstance(obj, dict):
        out = type(obj)((k, _map(v, leaf, is_leaf)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # torch state_dict versions, read by load_state_dict
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        items = [_map(v, leaf, is_leaf) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def split(payloads: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """``payloads`` with every array replaced by a :class:`Slot`, and the arrays in order."""
    arrays: list[Any] = []

    def take(a: Any) -> Slot:
        arrays.append(a)
        return Slot(len(arrays) - 1)

    return {name: _map(p, take, _is_array) for name, p in payloads.items()}, arrays


_ATOMS = (int, float, complex, str, bytes, bool, type(None), Slot)


def detached(skeleton: Mapping[str, Any]) -> dict[str, Any]:
    """A skeleton from :func:`split` that later changes of the live state cannot reach: its
    containers are already its own, so only leaves that are not immutable atoms are deep
    copied (what ``copy.deepcopy`` of the whole would cost in the training loop: ~1 ms)."""
    return {
        name: _map(p, lambda v: v if type(v) in _ATOMS else copy.deepcopy(v), lambda v: not _container(v))
        for name, p in skeleton.items()
    }


def _container(v: Any) -> bool:
    return isinstance(v, (dict, list, tuple))


def fill(skeleton: Mapping[str, Any], arrays: Mapping[int, Any]) -> dict[str, Any]:
    """The inverse of :func:`split`."""
    missing = [s.index for s in _slots(skeleton) if s.index not in arrays]
    if missing:
        raise CheckpointError(f"the checkpoint's shards lack arrays {missing[:5]} of the replicated state")
    return {name: _map(p, lambda s: arrays[s.index], lambda v: isinstance(v, Slot)) for name, p in skeleton.items()}


def _slots(skeleton: Any) -> list[Slot]:
    found: list[Slot] = []
    _map(skeleton, found.append, lambda v: isinstance(v, Slot))
    return found


def owners(sizes: Sequence[int], world_size: int) -> list[int]:
    """The rank that writes each array: largest first to the least loaded rank (ties: the
    lower rank). Deterministic, so every rank computes the same split without talking."""
    load = [0] * world_size
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner


@dataclass(frozen=True)
class ShardMeta:
    """The small part of a shard: one object beside the shard's arrays."""

    rank: int
    kinds: dict[str, str]
    skeleton: dict[str, Any] | None  # the replicated entries around their arrays (rank 0's shard)
    rng: dict[int, Any]  # rank -> global RNG streams
    local: dict[int, dict[str, Any]]  # rank -> local entry -> payload


class SnapshotBuffers:
    """Two sets of arrays that background snapshots alternate between. Copying into memory
    already touched costs no page faults (a fresh 25 MB copy can take 5-20x longer on a VM),
    and the set the writer may still be reading is never the one written: the Writer runs
    its writes in order, at most two in flight, and the snapshot waits (``Writer.ready``)
    until at most one is, so when snapshot ``k + 2`` is taken, write ``k`` (the other user
    of its set) has finished. Costs twice the shard."""

    def __init__(self) -> None:
        self._sets: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self._turn = 0

    def take(self) -> dict[str, Any]:
        """The next set to fill (sets alternate)."""
        into, self._turn = self._sets[self._turn], self._turn ^ 1
        return into

    def copy(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return copy_into(self.take(), arrays)


def copy_into(into: dict[str, Any], arrays: Mapping[str, Any]) -> dict[str, Any]:
    """``arrays`` copied into the buffer set ``into`` (an array of another shape or dtype, or
    a new one, gets a buffer of its own, kept for the next time). Plain arrays come back as
    :class:`RawArray` (written without a copy), the others as arrays."""
    import numpy as np

    out = {}
    for k, a in arrays.items():
        if isinstance(a, dict):  # a dtype numpy lacks: the adapters' raw-bytes record
            out[k] = copy.deepcopy(a)
            continue
        b = into.get(k)
        if b is None or b.shape != a.shape or b.dtype != a.dtype:
            b = into[k] = RawArray.like(a) if RawArray.takes(a) else np.empty_like(a)
        np.copyto(b.array if isinstance(b, RawArray) else b, a)
        out[k] = b
    return out


class RawArray:
    """A snapshot buffer: an array over a ``bytearray`` of its own. Pickled (joblib, the
    store's codec for it) as that bytearray, which the pickler hands to the file in one write
    (``BYTEARRAY8``), not as an ndarray, whose bytes joblib first copies into ``bytes`` chunks
    with the GIL held, stalling the training thread; loads as a plain ndarray."""

    __slots__ = ("data", "array")

    def __init__(self, data: bytearray, dtype: Any, shape: tuple[int, ...]) -> None:
        import numpy as np

        self.data = data
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape)

    @staticmethod
    def takes(a: Any) -> bool:
        """Plain numeric arrays (no objects, no fields, native to numpy's buffer protocol)."""
        return a.dtype.kind in "biufc" and not a.dtype.fields and a.dtype.subdtype is None

    @classmethod
    def like(cls, a: Any) -> RawArray:
        return cls(bytearray(a.nbytes), a.dtype, a.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> Any:
        return self.array.dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_raw, (self.array.dtype.str, self.array.shape, self.data)


def _from_raw(dtype: str, shape: tuple[int, ...], data: bytearray) -> Any:
    """A :class:`RawArray` read back: a plain, writable ndarray over the unpickled bytes."""
    import numpy as np

    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
