"""The coordinator of a data-parallel run's checkpoints: shard records and step commits.

Under :class:`~pipeline.training.distributed.Asynchronous` each rank records its shard of a
step (a shard manifest under ``<key>.shard-<rank>``, written once the shard is durable); the
coordinator commits the step (one manifest ``kind="checkpoint"`` referencing every shard)
once every shard of it is recorded. A step with a missing shard is never committed. Through
the store alone, no collectives: it runs in writer threads and at restore.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Mapping

from ..errors import CheckpointError
from ..store import Manifest, Store
from ..store.manifest import library_versions
from ..store.tree import DictNode, Tree

# The one place that leans on the single-process Checkpointer's internals (with Writer in
# .distributed): Catalog (the committed checkpoints of one key: steps, read, prune) becomes
# ``store.checkpoints(stage, key)``.
from .catalog import Catalog

SHARD_KIND = "checkpoint-shard"


def shard_key(key: str, rank: int) -> str:
    """The key under which rank ``rank`` records its shards of ``key`` (Asynchronous)."""
    return f"{key}.shard-{int(rank)}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class Coordinator:
    """Shard records and step commits of one checkpointed run, through the store alone
    (no collectives: it runs in writer threads and at restore)."""

    def __init__(self, store: Store, stage: str, key: str, world_size: int, run_id: str = "") -> None:
        self.store, self.stage, self.key, self.world_size, self.run_id = store, stage, key, world_size, run_id
        self.committed = Catalog(store, stage, key)
        self.shards = [Catalog(store, stage, shard_key(key, r)) for r in range(world_size)]

    def record_shard(self, rank: int, step: int, tree: dict[str, Any], extra: Mapping[str, Any]) -> None:
        """Rank ``rank``'s shard of ``step`` is durable: say so (a shard manifest, written last)."""
        self.store.commit(self._manifest(shard_key(self.key, rank), step, tree, SHARD_KIND, {**extra, "rank": rank}))

    def missing(self, step: int) -> list[int]:
        """Ranks whose shard of ``step`` is not recorded."""
        return [r for r in range(self.world_size) if self._shard(r, step) is None]

    def _shard(self, rank: int, step: int) -> Manifest | None:
        return self.store.manifest(self.stage, shard_key(self.key, rank), step)

    def commit(
        self, step: int, extra: Mapping[str, Any], trees: Mapping[int, dict[str, Any]] | None = None
    ) -> Manifest:
        """Commit ``step`` from the given shard trees, or from the recorded shards (all of them
        must be there: a step with a missing shard is never committed)."""
        if trees is None:
            found = {r: self._shard(r, step) for r in range(self.world_size)}
            absent = [r for r, m in found.items() if m is None]
            if absent:
                raise CheckpointError(
                    f"step {step} of {self.stage!r} lacks the shards of ranks {absent}: not committed"
                )
            trees = {r: m.outputs for r, m in found.items()}
        outputs = DictNode.of({f"rank-{r}": trees[r] for r in sorted(trees)})
        manifest = self._manifest(self.key, step, outputs, "checkpoint", extra)
        return self.committed.commit(manifest)

    def wait_and_commit(self, step: int, extra: Mapping[str, Any], timeout: float, poll: float) -> Manifest:
        deadline = time.monotonic() + timeout
        while missing := self.missing(step):
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"step {step} of {self.stage!r}: the shards of ranks {missing} did not arrive within "
                    f"{timeout:g} s; the step is not committed (the previous checkpoint stays the newest)"
                )
            time.sleep(poll)
        manifest = self.commit(step, extra)
        self.drop_shards(up_to=step)
        return manifest

    def drop_shards(self, up_to: int | None = None) -> None:
        """Delete shard records (of steps <= ``up_to``): committed steps keep their objects
        through the step manifest; an older step that never completed never will."""
        for r, catalog in enumerate(self.shards):
            for s in catalog.steps():
                if up_to is None or s <= up_to:
                    m = self._shard(r, s)
                    if m is not None:
                        self.store.delete_manifest(m)

    def sweep(self) -> list[int]:
        """After a crash (no rank writing): commit every recorded-complete step newer than the
        newest commit, drop all shard records. Returns the steps it committed."""
        newest = max(self.committed.steps(), default=0)
        complete = set.intersection(*(set(c.steps()) for c in self.shards)) if self.shards else set()
        done = []
        for s in sorted(x for x in complete if x > newest):
            shard0 = self._shard(0, s)
            if shard0 is not None:
                self.commit(s, dict(shard0.extra.get("step_extra", {})))
                done.append(s)
        self.drop_shards()
        return done

    def _manifest(self, key: str, step: int, outputs: Tree, kind: str, extra: Mapping[str, Any]) -> Manifest:
        return Manifest(
            stage=self.stage, key=key, outputs=outputs, created=_now(), run_id=self.run_id,
            versions=library_versions(), kind=kind, step=int(step), extra=dict(extra),
        )  # fmt: skip


__all__ = ["Coordinator", "shard_key", "SHARD_KIND"]
