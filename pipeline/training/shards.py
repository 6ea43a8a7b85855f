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

    def copy(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        into, self._turn = self._sets[self._turn], self._turn ^ 1
        out = {}
        for k, a in arrays.items():
            if isinstance(a, dict):  # a dtype numpy lacks: the adapters' raw-bytes record
                out[k] = copy.deepcopy(a)
                continue
            b = into.get(k)
            if b is None or b.shape != a.shape or b.dtype != a.dtype:
                b = into[k] = np.empty_like(a)
            np.copyto(b, a)
            out[k] = b
        return out
