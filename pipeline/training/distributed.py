"""Checkpoints of data-parallel training: N ranks write, one manifest commits.

::

    dist.init_process_group("gloo", ...)                  # torchrun or torch.multiprocessing
    ckpt = DistributedCheckpointer(store=..., name="net", strategy=Asynchronous(), save=EveryNEpochs(50))
    state = ckpt.restore(TrainState(model=net, optimizer=opt, order=gen), local=("order",))
    for i in range(state.epoch, steps):                   # state.epoch counts completed steps
        ...one data-parallel step (gradients all-reduced)...
        ckpt.step(i, state, {"loss": loss})
    ckpt.finish(state)

The training state is *replicated* (model, optimizer, scheduler: equal on every rank after
each all-reduced step) except the entries named ``local`` (a data-order Generator, a sampler
position) and the global RNG streams, which are per rank and saved per rank. The arrays of
the replicated state are split across ranks by size, so each rank writes about 1/N of them
(its *shard*). A checkpoint of step ``n`` is committed by one manifest
``checkpoints/<stage>/<key>/<n>.json`` (``kind="checkpoint"``) that references every
shard's objects; only committed steps are ever restored, by all ranks the same one.

Strategies (small frozen policies):

- :class:`Synchronized` — barrier; every rank writes its shard inline; rank 0 commits once
  every shard is durable; ``step()`` returns on every rank after the commit.
- :class:`MasterSaves` — rank 0 gathers the per-rank state (RNG, local entries) and writes
  the whole checkpoint alone; the other ranks go on at once.
- :class:`Asynchronous` — each rank snapshots its shard in memory and writes it in a
  background thread, then records it (a shard manifest under ``<key>.shard-<rank>``); rank
  0's writer is the coordinator that commits the step once every shard of it is recorded.
  A step with a missing shard is never committed, so never restored; ``restore`` commits a
  complete step whose coordinator died before committing and drops the shards of the rest.
  The snapshot of the tensors the optimizers own is copied by a background thread during
  the next forward and backward; the optimizers' next ``step()`` waits for it (a step
  pre-hook), see :mod:`pipeline.training.staging`.

Resuming needs the same world size (per-rank RNG streams belong to a rank).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from ..cache import current_stage
from ..context import open_store
from ..errors import CheckpointError, ConfigError
from ..store import Manifest, Store
from ..store.tree import DictNode, Tree
from . import adapters
from .collectives import Group
from .coordinator import Coordinator, shard_key
from .policies import AnySave, EveryNEpochs, History, KeepPolicy, LatestN, Record, SavePolicy
from .shards import ShardMeta, Slot, SnapshotBuffers, _nbytes, copy_into, detached, fill, owners, split  # noqa: F401
from .staging import Stager, StepHooks, deferrable, optimizers, owned_memory
from .state import ClosesOnExit, TrainState

# The one place that leans on the single-process Checkpointer's internals (with Catalog in
# .coordinator): Writer (one background write at a time, its error raised at the next call)
# becomes the writer of the ``writer=Background()`` policy.
from .writer import Background, Sync, Writer


# -- strategies --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """How the ranks of one data-parallel run write a checkpoint."""

    name: ClassVar[str] = ""
    background: ClassVar[bool] = False
    sharded: ClassVar[bool] = True


@dataclass(frozen=True)
class Synchronized(Strategy):
    """Barrier; each rank writes its shard; rank 0 commits one manifest when all are durable."""

    name: ClassVar[str] = "synchronized"


@dataclass(frozen=True)
class MasterSaves(Strategy):
    """Rank 0 writes the full state (with every rank's RNG streams and local entries)."""

    name: ClassVar[str] = "master"
    sharded: ClassVar[bool] = False


@dataclass(frozen=True)
class Asynchronous(Strategy):
    """Ranks write their shards in the background; rank 0 commits a step once all are there.

    ``timeout``: seconds the coordinator waits for the other shards of a step before it
    reports the step as failed (at the next ``step()`` or ``close()``)."""

    name: ClassVar[str] = "asynchronous"
    background: ClassVar[bool] = True
    timeout: float = 600.0
    poll: float = 0.05

    def __post_init__(self) -> None:
        for field, value in (("timeout", self.timeout), ("poll", self.poll)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"Asynchronous({field}=...) must be a number of seconds > 0, not {value!r}")


STRATEGIES = (Synchronized, MasterSaves, Asynchronous)


# -- the checkpointer --------------------------------------------------------------------------
class DistributedCheckpointer(ClosesOnExit):
    """Checkpoints of one data-parallel run, written by every rank of its process group.

    Collective: every rank constructs it, calls ``restore`` and ``step`` at the same steps.
    ``save`` decides on rank 0 (the decision is broadcast each step, unless it depends on the
    step number alone, like ``EveryNEpochs``); ``keep`` prunes committed steps
    (the newest and the one resumed from always stay)."""

    def __init__(
        self,
        *,
        strategy: Strategy | None = None,
        save: SavePolicy | None = None,
        keep: KeepPolicy | None = LatestN(2),
        local: Sequence[str] = (),
        store: Store | str | None = None,
        name: str | None = None,
        key: str | None = None,
        group: Any = None,
    ) -> None:
        self.strategy = Synchronized() if strategy is None else strategy
        if not isinstance(self.strategy, STRATEGIES):
            raise ConfigError(f"strategy= takes Synchronized(), MasterSaves() or Asynchronous(), not {self.strategy!r}")
        self.save_policy = EveryNEpochs(1) if save is None else save
        if not isinstance(self.save_policy, SavePolicy):
            raise ConfigError(f"save= takes a save policy (EveryNEpochs, EveryNSeconds…), not {self.save_policy!r}")
        if keep is not None and not isinstance(keep, KeepPolicy):
            raise ConfigError(f"keep= takes a keep policy (LatestN, BestK…) or None, not {keep!r}")
        self.keep = keep
        self.local = tuple(local)
        running = current_stage()
        if store is None and running is None:
            raise ConfigError("outside a @stage a DistributedCheckpointer needs store= and name=")
        if store is None:
            self.store, self.stage, self.key, run_id = running.store, running.stage, running.key, running.run_id
        else:
            self.store = open_store(store)
            if not name:
                raise ConfigError(
                    "DistributedCheckpointer(store=...) needs name= (the training run's name in the store)"
                )
            self.stage, self.key, run_id = name, key or "default", running.run_id if running else ""
        self.group = Group(group)
        self.rank, self.world_size = self.group.rank, self.group.world_size
        self.coordinator = Coordinator(self.store, self.stage, self.key, self.world_size, run_id)
        # Two writes in flight at most, one per snapshot buffer set: a checkpoint due while
        # the previous one is still being written does not wait for it.
        self._writer = Writer(Background() if self.strategy.background else Sync(), depth=2)
        self._local_decision = _step_count_only(self.save_policy)
        self._buffers = SnapshotBuffers()
        self._stager = Stager()
        self._hooks = StepHooks(self.before_step)
        self._stalled = 0.0
        self._seen: list[Record] = []
        self._saved: list[Record] = []
        self._start = time.time()
        self._resumed_from: int | None = None
        self._closed = False

    def __repr__(self) -> str:
        s = self.strategy
        return f"<DistributedCheckpointer {self.stage!r} {self.key} rank {self.rank}/{self.world_size} {s.name}>"

    # -- restore -------------------------------------------------------------------------------
    def restore(self, default: TrainState | Mapping[str, Any], *, step: int | None = None) -> TrainState:
        """Every rank: fill ``default`` from the newest committed checkpoint all ranks can read
        (or ``step``); the same step on every rank. None: ``default`` as it is (fresh start)."""
        self._check_open()
        state = TrainState.of(default)
        candidates = None
        if self.rank == 0:
            if self.strategy.background:
                self.coordinator.sweep()
            candidates = [step] if step is not None else self.coordinator.committed.steps()[::-1]
        candidates = self.group.broadcast(candidates)
        for s in candidates:
            loaded, error, fatal = None, None, None
            try:
                manifest = self.coordinator.committed.read(s)
                fatal = self._world_mismatch(manifest)
                if fatal is None:
                    loaded = (manifest, self.store.load(manifest.outputs))
            except Exception as e:  # missing, corrupt, undecodable: every rank moves on together
                error = f"rank {self.rank}: {type(e).__name__}: {e}"
            outcomes = self.group.all_gather((error, fatal))
            if fatal is not None:
                raise CheckpointError(fatal)
            failed = [e for e, _ in outcomes if e is not None]
            if not failed:
                self._apply(state, *loaded)
                return state
            if self.rank == 0:
                warnings.warn(f"checkpoint {s} of {self.stage!r} ({self.key}) is unusable: {failed}", stacklevel=2)
        if step is not None:
            raise CheckpointError(f"no usable checkpoint {step} of stage {self.stage!r} ({self.key})")
        return state

    def _world_mismatch(self, manifest: Manifest) -> str | None:
        meta = manifest.extra.get("distributed", {})
        if meta.get("world_size") == self.world_size:
            return None
        return (
            f"checkpoint {manifest.step} of {self.stage!r} was written by {meta.get('world_size')} ranks, "
            f"this run has {self.world_size}: resume with the same world size (per-rank RNG streams)"
        )

    def _apply(self, state: TrainState, manifest: Manifest, shards: dict[str, Any]) -> None:
        metas = [shard["meta"] for shard in shards.values()]
        arrays = {int(i): a for shard in shards.values() for i, a in shard.get("arrays", {}).items()}
        base = next(m for m in metas if m.skeleton is not None)
        for name, payload in fill(base.skeleton, arrays).items():
            state[name] = adapters.restore(name, base.kinds[name], _entry(state, name), payload)
        for m in metas:
            for name, payload in m.local.get(self.rank, {}).items():
                state[name] = adapters.restore(name, m.kinds[name], _entry(state, name), payload)
            if self.rank in m.rng:
                adapters.restore_rng(m.rng[self.rank])
        extra = manifest.extra
        state.epoch = int(extra["epoch"])
        state.history = [dict(h) for h in extra.get("history", [])]
        state.resumed_from = self._resumed_from = int(manifest.step)
        self._seen = [Record(h["epoch"], {k: v for k, v in h.items() if k != "epoch"}) for h in state.history]
        self._saved = [Record(int(manifest.step), dict(extra.get("metrics", {})), float(extra.get("time", 0.0)))]

    # -- the loop ------------------------------------------------------------------------------
    def step(self, step: int, state: TrainState, metrics: Mapping[str, Any] | None = None) -> bool:
        """Record step ``step`` (0-based, just finished) on every rank; checkpoint it when the
        save policy says so on rank 0. True when this step was checkpointed (for
        Asynchronous: handed to the writer)."""
        self._check_open()
        self._writer.check()
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError(f"step() takes the index of the step just finished (an int >= 0), not {step!r}")
        values = _metrics(metrics or {})
        record = Record(step + 1, values, time.time())
        due = self.save_policy.should_save(record, History(tuple(self._seen), tuple(self._saved), self._start))
        if not self._local_decision:  # time or metrics decide: rank 0's decision for all
            due = self.group.flag(self.rank == 0 and due)
        state.epoch = record.step
        state.history.append({"epoch": record.step, **values})
        self._seen.append(record)
        if due:
            self._saved.append(record)
            t0 = time.perf_counter()
            try:
                self._save(record, state)
            finally:
                self._stalled += time.perf_counter() - t0
        return due

    def before_step(self) -> None:
        """Until the snapshot of the last checkpoint no longer reads the live tensors.

        Under Asynchronous the tensors the optimizers own (parameters, momentum…) are
        copied in the background after ``step()`` returns; every torch optimizer of the
        training state calls this before its ``step()`` (a step pre-hook), so the loop waits
        there, if at all. Call it yourself before changing those tensors any other way
        (in-place edits, ``load_state_dict``, an optimizer that is not in the state)."""
        if self._stager.pending():
            t0 = time.perf_counter()
            self._stager.wait()
            self._stalled += time.perf_counter() - t0

    @property
    def stalled(self) -> float:
        """Seconds the training loop has waited for this checkpointer so far (in ``step()``
        and in ``before_step()``)."""
        return self._stalled

    def _save(self, record: Record, state: TrainState) -> None:
        missing = [k for k in self.local if k not in state]
        if missing:
            raise ConfigError(f"local={missing} name no entry of the training state (entries: {state.keys()})")
        extra = {
            "epoch": record.step,
            "metrics": record.metrics,
            "time": record.time,
            "history": list(state.history),  # step() appends a new dict per step, never changes one
            "granularity": "distributed",
            "resumed_from": self._resumed_from,
            "distributed": {"strategy": self.strategy.name, "world_size": self.world_size, "local": list(self.local)},
        }
        if isinstance(self.strategy, MasterSaves):
            self._save_master(record, state, extra)
        elif isinstance(self.strategy, Synchronized):
            self._save_synchronized(record, state, extra)
        else:
            self._save_asynchronous(record, state, extra)

    def _capture(
        self, state: TrainState, *, copy_: bool, owned_by: int | None
    ) -> tuple[dict[str, Any], ShardMeta, dict[str, Any]]:
        """This rank's shard: the arrays of the replicated state it owns (all with ``owned_by``
        None), the skeleton (rank 0), its RNG streams and local entries. With ``copy_``, the
        arrays are copied into a snapshot buffer set, except those the optimizers own: they
        come back apart (the third item), live, with the set to stage them into."""
        kinds, replicated, local = {}, {}, {}
        for name in state.keys():
            kind, payload = adapters.capture(name, state[name], copy=copy_ if name in self.local else False)
            kinds[name] = kind
            (local if name in self.local else replicated)[name] = payload
        skeleton, arrays = split(replicated)
        mine = owners([_nbytes(a) for a in arrays], self.world_size) if owned_by is not None else None
        chosen = {str(i): a for i, a in enumerate(arrays) if mine is None or mine[i] == owned_by}
        later: dict[str, Any] = {}
        if copy_:
            into = self._buffers.take()
            now, later = deferrable(chosen, owned_memory(optimizers(v for _, v in state.items())))
            chosen = copy_into(into, now)
            later = {"into": into, "arrays": later} if later else {}
        meta = ShardMeta(
            rank=self.rank,
            kinds=kinds,
            skeleton=(detached(skeleton) if copy_ else skeleton) if self.rank == 0 else None,
            rng={self.rank: adapters.capture_rng()},
            local={self.rank: local},
        )
        return chosen, meta, later

    def _write_shard(self, step: int, arrays: dict[str, Any], meta: ShardMeta) -> DictNode:
        """One object per array and one for the rest; no fingerprints (a checkpoint is found
        by its step, never by its content; hashing 25 MB twice more would only cost CPU)."""
        what = f"shard {meta.rank} of checkpoint {step} of {self.stage!r}"
        entries: dict[str, Tree] = {"meta": self.store.put(meta, what=f"{what}: meta")}
        if arrays:
            entries["arrays"] = self.store.save_parts(arrays, what=what)
        return DictNode.of(entries)

    def _save_synchronized(self, record: Record, state: TrainState, extra: dict[str, Any]) -> None:
        self.group.barrier()
        tree, error = None, None
        try:
            arrays, meta, _ = self._capture(state, copy_=False, owned_by=self.rank)
            tree = self._write_shard(record.step, arrays, meta)
        except Exception as e:  # every rank must hear of it: no rank may wait for a shard forever
            error = f"rank {self.rank}: {type(e).__name__}: {e}"
        gathered = self.group.all_gather((tree, error))
        failed = [e for _, e in gathered if e is not None]
        outcome = None
        if not failed and self.rank == 0:
            try:
                self.coordinator.commit(record.step, extra, {r: t for r, (t, _) in enumerate(gathered)})
                self._prune(record.step)
            except Exception as e:
                outcome = f"committing: {type(e).__name__}: {e}"
        outcome = self.group.broadcast(outcome)
        if failed or outcome:
            raise CheckpointError(f"checkpoint {record.step} of {self.stage!r} failed: {'; '.join(failed) or outcome}")

    def _save_master(self, record: Record, state: TrainState, extra: dict[str, Any]) -> None:
        mine = {name: adapters.capture(name, state[name], copy=False)[1] for name in self.local}
        gathered = self.group.all_gather((adapters.capture_rng(), mine))
        if self.rank != 0:
            return
        arrays, meta, _ = self._capture(state, copy_=False, owned_by=None)
        meta = dataclasses.replace(
            meta, rng={r: g[0] for r, g in enumerate(gathered)}, local={r: g[1] for r, g in enumerate(gathered)}
        )
        tree = self._write_shard(record.step, arrays, meta)
        self.coordinator.commit(record.step, extra, {0: tree})
        self._prune(record.step)

    def _save_asynchronous(self, record: Record, state: TrainState, extra: dict[str, Any]) -> None:
        self._writer.ready()  # the buffer set this snapshot fills is no longer being written
        arrays, meta, later = self._capture(state, copy_=True, owned_by=self.rank)
        strategy: Asynchronous = self.strategy  # type: ignore[assignment]
        staging = None
        if later:  # copied in the background; the optimizers' next step waits for it
            self._hooks.attach(optimizers(v for _, v in state.items()))
            staging = self._stager.prepare()

        def job() -> None:
            shard = arrays if staging is None else {**arrays, **staging.result()}
            tree = self._write_shard(record.step, dict(sorted(shard.items(), key=lambda kv: int(kv[0]))), meta)
            self.coordinator.record_shard(self.rank, record.step, tree, {"step_extra": extra})
            if self.rank == 0:
                self.coordinator.wait_and_commit(record.step, extra, strategy.timeout, strategy.poll)
                self._prune(record.step)

        try:
            self._writer.submit(f"shard {self.rank} of checkpoint {record.step} of {self.stage!r}", job)
        finally:  # started last: its thread then takes the GIL from the loop, not from step(); and
            if staging is not None:  # started even when submit raised, or the next optimizer step would wait forever
                self._stager.start(staging, later["into"], later["arrays"])

    def _prune(self, newest: int) -> None:
        protected = {newest} | ({self._resumed_from} if self._resumed_from is not None else set())
        self.coordinator.committed.prune(self.keep, protected)

    # -- the end -------------------------------------------------------------------------------
    def wait(self) -> None:
        """Until this rank's write in flight has landed (on rank 0: and been committed)."""
        self._writer.wait()
        self._writer.check()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hooks.remove()
        self._stager.wait()
        try:
            self._writer.close()
        finally:
            self._stager.close()

    def finish(self, state: TrainState) -> TrainState:
        self.close()
        return state

    def steps(self) -> list[int]:
        """Committed checkpoint steps, ascending."""
        return self.coordinator.committed.steps()

    @property
    def resumed_from(self) -> int | None:
        return self._resumed_from

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"the DistributedCheckpointer of stage {self.stage!r} is closed")


def _step_count_only(policy: SavePolicy) -> bool:
    """True when the policy decides by the step number alone, so every rank decides the
    same without a broadcast per step."""
    if isinstance(policy, AnySave):
        return all(_step_count_only(p) for p in policy.policies)
    return type(policy) is EveryNEpochs


def _entry(state: TrainState, name: str) -> Any:
    return state[name] if name in state else None


def _metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"step() takes metrics as a dict of name -> number, not {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if k == "epoch":
            continue
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"metric {k!r} = {v!r}: metrics must be numbers keyed by name") from None
    return out


__all__ = [
    "DistributedCheckpointer",
    "Strategy",
    "Synchronized",
    "MasterSaves",
    "Asynchronous",
    "Coordinator",
    "ShardMeta",
    "SnapshotBuffers",
    "Slot",
    "split",
    "fill",
    "owners",
    "shard_key",
]
