"""Rank, world size and the few collectives the distributed checkpointer needs.

``torch.distributed`` is imported only when a process group is up; for one process every
collective is a no-op.
"""

from __future__ import annotations

from typing import Any


class Group:
    """Rank, world size and the few collectives the checkpointer needs (no-ops for one process)."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.dist = None
        try:
            import torch.distributed as dist
        except ImportError:
            dist = None
        if dist is not None and dist.is_available() and dist.is_initialized():
            self.dist = dist
        self.rank = self.dist.get_rank(group) if self.dist else 0
        self.world_size = self.dist.get_world_size(group) if self.dist else 1

    def barrier(self) -> None:
        if self.dist:
            self.dist.barrier(group=self.group)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.dist:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=self._global(0), group=self.group)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.dist:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def flag(self, value: bool) -> bool:
        """Rank 0's decision, cheaply (one int broadcast)."""
        if not self.dist:
            return value
        import torch

        t = torch.tensor([int(value)], dtype=torch.int32)
        self.dist.broadcast(t, src=self._global(0), group=self.group)
        return bool(t.item())

    def _global(self, rank: int) -> int:
        return self.dist.get_global_rank(self.group, rank) if self.group is not None else rank
