"""Distributed training checkpoints: real gloo process groups on 127.0.0.1, real SIGKILLs,
a real store. The fast tests run the store-side protocol (shards, coordinator, restore) in
one process; the slow ones train two ranks, kill one, resume both and compare bit for bit."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from pipeline import Store  # noqa: E402
from pipeline.errors import CheckpointError, ConfigError  # noqa: E402
from pipeline.integrations.server import free_port  # noqa: E402
from pipeline.training import EveryNEpochs, LatestN, TrainState  # noqa: E402
from pipeline.training.distributed import (  # noqa: E402
    Asynchronous,
    Coordinator,
    DistributedCheckpointer,
    MasterSaves,
    Slot,
    Synchronized,
    fill,
    owners,
    shard_key,
    split,
)

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = {"synchronized": Synchronized(), "master": MasterSaves(), "asynchronous": Asynchronous()}


# -- policies and the split --------------------------------------------------------------------
def test_strategies_are_small_frozen_policies():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Asynchronous().timeout = 1  # type: ignore[misc]
    assert Synchronized() == Synchronized() and Asynchronous(timeout=5) != Asynchronous()
    with pytest.raises(ConfigError, match="timeout"):
        Asynchronous(timeout=0)
    with pytest.raises(ConfigError, match="strategy"):
        DistributedCheckpointer(strategy="async", store=Store.__new__(Store), name="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sizes", "world", "expected"),
    [
        ([10, 1, 1, 8], 2, [0, 1, 1, 1]),  # 10 | 8+1+1
        ([4, 4, 4, 4], 2, [0, 1, 0, 1]),
        ([5, 3, 2], 3, [0, 1, 2]),
        ([7, 7], 1, [0, 0]),
        ([], 2, []),
    ],
)
def test_owners_balance_the_bytes_deterministically(sizes, world, expected):
    assert owners(sizes, world) == expected


def test_split_and_fill_round_trip_a_state_dict_with_its_metadata():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    from pipeline.training import adapters

    _, payload = adapters.capture("model", model, copy=True)
    skeleton, arrays = split({"model": payload, "n": 3})
    assert len(arrays) == 7 and skeleton["n"] == 3 and all(isinstance(v, Slot) for v in skeleton["model"].values())
    back = fill(skeleton, dict(enumerate(arrays)))
    assert back["model"]._metadata == payload._metadata  # BatchNorm's version, for load_state_dict
    assert all(np.array_equal(back["model"][k], payload[k]) for k in payload)
    with pytest.raises(CheckpointError, match="lack arrays"):
        fill(skeleton, {i: a for i, a in enumerate(arrays) if i != 2})


# -- the coordinator: a step is committed only with every shard --------------------------------
def test_a_step_with_a_missing_shard_is_never_committed_nor_restored(tmp_path):
    store = Store(tmp_path / "store")
    coord = Coordinator(store, "net", "k", world_size=2)
    extra = {"epoch": 2, "distributed": {"world_size": 2}}
    for rank in (0, 1):
        coord.record_shard(rank, 2, store.save({"w": np.full(3, rank)}), {"step_extra": extra})
    coord.wait_and_commit(2, extra, timeout=1, poll=0.01)
    assert coord.committed.steps() == [2] and coord.missing(2) == [0, 1]  # shard records dropped once committed

    coord.record_shard(0, 4, store.save({"w": np.zeros(3)}), {"step_extra": {**extra, "epoch": 4}})
    assert coord.missing(4) == [1]
    with pytest.raises(CheckpointError, match=r"ranks \[1\] did not arrive"):
        coord.wait_and_commit(4, extra, timeout=0.05, poll=0.01)
    with pytest.raises(CheckpointError, match=r"lacks the shards of ranks \[1\]"):
        coord.commit(4, extra)
    assert coord.sweep() == [] and coord.committed.steps() == [2]  # incomplete: dropped, never committed
    assert store.manifest("net", shard_key("k", 0), 4) is None

    for rank in (0, 1):  # complete, but its coordinator died before committing: restore's sweep commits it
        coord.record_shard(rank, 6, store.save({"w": np.ones(3)}), {"step_extra": {**extra, "epoch": 6}})
    assert coord.sweep() == [6] and coord.committed.steps() == [2, 6]
    committed = coord.committed.read(6)
    assert committed.kind == "checkpoint" and committed.extra["epoch"] == 6
    assert sorted(committed.outputs.names()) == ["rank-0", "rank-1"]
    assert store.load(committed.outputs)["rank-1"]["w"].tolist() == [1, 1, 1]


# -- one process (world size 1): the three strategies' save and restore -------------------------
def build(seed: int) -> TrainState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return TrainState(model=model, optimizer=opt, order=torch.Generator().manual_seed(seed))


def train(state: TrainState, steps: int) -> None:
    x = torch.randn(16, 5)
    for _ in range(steps):
        idx = torch.randperm(16, generator=state.order)[:8]
        state.optimizer.zero_grad()
        torch.nn.functional.dropout(state.model(x[idx]), 0.3).pow(2).mean().backward()
        state.optimizer.step()


def weights(state: TrainState) -> dict:
    out = {k: v.clone() for k, v in state.model.state_dict().items()}
    out |= {f"m{i}": s["momentum_buffer"].clone() for i, s in state.optimizer.state.items()}
    return out | {"order": state.order.get_state().clone(), "rng": torch.get_rng_state().clone()}


@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_restores_exactly_the_committed_step(tmp_path, name):
    store = Store(tmp_path / "store")
    ckpt = DistributedCheckpointer(
        strategy=STRATEGIES[name], store=store, name="net", save=EveryNEpochs(2), keep=LatestN(2), local=("order",)
    )
    state = ckpt.restore(build(0))
    assert state.resumed_from is None
    saved = {}
    for i in range(6):
        train(state, 1)
        if ckpt.step(i, state, {"loss": float(i)}):
            saved[i + 1] = weights(state)
    ckpt.finish(state)
    assert sorted(saved) == [2, 4, 6] and ckpt.steps() == [4, 6]  # LatestN(2)

    fresh = build(1)  # other weights, other streams: all must come from the checkpoint
    again = DistributedCheckpointer(strategy=STRATEGIES[name], store=store, name="net", local=("order",))
    restored = again.restore(fresh)
    assert restored.resumed_from == 6 and restored.epoch == 6 and len(restored.history) == 6
    got = weights(restored)
    assert got.keys() == saved[6].keys() and all(torch.equal(got[k], saved[6][k]) for k in got)
    older = DistributedCheckpointer(strategy=STRATEGIES[name], store=store, name="net", local=("order",))
    assert torch.equal(weights(older.restore(build(2), step=4))["0.weight"], saved[4]["0.weight"])


@pytest.fixture
def gated_staging(monkeypatch):
    """The background copy of an Asynchronous snapshot waits for ``gate`` (the real copy,
    held back, so the test decides what the loop does while it is pending)."""
    import threading

    from pipeline.training import staging

    gate, started = threading.Event(), threading.Event()
    real = staging.copy_into

    def held(into, arrays):
        started.set()
        assert gate.wait(30), "the test never opened the gate"
        return real(into, arrays)

    monkeypatch.setattr(staging, "copy_into", held)
    yield gate, started
    gate.set()


def with_scheduler(state: TrainState) -> TrainState:
    """An LR scheduler too: it wraps ``optimizer.step``, the step pre-hook must still run."""
    state.scheduler = torch.optim.lr_scheduler.StepLR(state.optimizer, step_size=1, gamma=0.5)
    return state


def test_asynchronous_copies_what_the_optimizer_owns_after_step_returns_and_before_its_next_step(
    tmp_path, gated_staging
):
    import threading

    gate, started = gated_staging
    store = Store(tmp_path / "store")
    ckpt = DistributedCheckpointer(
        strategy=Asynchronous(), store=store, name="net", save=EveryNEpochs(2), local=("order",)
    )
    state = ckpt.restore(with_scheduler(build(0)))
    gate.set()  # the first checkpoint fills the buffers unhindered
    train(state, 2)
    assert not ckpt.step(0, state) and ckpt.step(1, state)
    ckpt.wait()
    gate.clear()
    started.clear()
    train(state, 2)
    assert not ckpt.step(2, state)
    want = weights(state)
    want_bn = {k: v.clone() for k, v in state.model.state_dict().items() if "running" in k or "num_batches" in k}
    assert ckpt.step(3, state)  # returned with the copy of the weights and momenta still to do
    assert started.wait(10) and not gate.is_set()

    x = torch.randn(16, 5)  # a forward pass changes BatchNorm's running statistics in place:
    state.optimizer.zero_grad()  # those were copied in step() itself
    state.model(x).pow(2).mean().backward()
    assert not torch.equal(state.model.state_dict()["1.running_mean"], want_bn["1.running_mean"])
    stepped = threading.Thread(target=state.optimizer.step)
    stepped.start()
    stepped.join(0.3)
    assert stepped.is_alive(), "the optimizer step did not wait for the snapshot of its parameters"
    assert torch.equal(state.model.state_dict()["0.weight"], want["0.weight"])
    gate.set()
    stepped.join(10)
    assert not stepped.is_alive() and not torch.equal(state.model.state_dict()["0.weight"], want["0.weight"])
    assert ckpt.stalled >= 0.25  # the wait before the optimizer step is the loop's stall too
    ckpt.finish(state)

    restored = DistributedCheckpointer(strategy=Asynchronous(), store=store, name="net", local=("order",)).restore(
        with_scheduler(build(1))
    )
    assert restored.resumed_from == 4
    got = weights(restored)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    sd = restored.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in want_bn.items())
    assert not state.optimizer._optimizer_step_pre_hooks  # close() took its hook off the optimizer


def test_asynchronous_copies_tensors_no_optimizer_owns_in_step_itself(tmp_path, gated_staging):
    gate, started = gated_staging  # closed: a copy left to the background would never finish
    store = Store(tmp_path / "store")
    model = torch.nn.Linear(3, 2)
    ckpt = DistributedCheckpointer(strategy=Asynchronous(), store=store, name="net", save=EveryNEpochs(1))
    state = ckpt.restore(TrainState(model=model))
    want = {k: v.clone() for k, v in model.state_dict().items()}
    assert ckpt.step(0, state)
    with torch.no_grad():
        model.weight.add_(1.0)  # nothing waits here: no optimizer owns it, so step() copied it
    ckpt.finish(state)
    assert not started.is_set()
    back = DistributedCheckpointer(strategy=Asynchronous(), store=store, name="net").restore(
        TrainState(model=torch.nn.Linear(3, 2))
    )
    assert all(torch.equal(back.model.state_dict()[k], v) for k, v in want.items())


def test_a_failed_asynchronous_write_is_raised_and_the_optimizer_step_does_not_wait_for_it(tmp_path):
    store = Store(tmp_path / "store")
    state = build(0)
    state.bad = lambda: None  # copied, but cannot be written: the background write fails
    ckpt = DistributedCheckpointer(
        strategy=Asynchronous(), store=store, name="net", save=EveryNEpochs(1), local=("order", "bad")
    )
    train(state, 1)
    assert ckpt.step(0, state)
    with pytest.raises(CheckpointError, match="shard 0 of checkpoint 1"):
        ckpt.wait()
    train(state, 2)  # the optimizer steps do not hang on the failed checkpoint's copy
    with pytest.raises(CheckpointError):
        for i in (1, 2):  # every later checkpoint fails the same way, raised at the next step()
            ckpt.step(i, state)
            ckpt.wait()
    ckpt.close()
    assert ckpt.steps() == []


def test_snapshot_buffers_are_written_as_their_raw_bytes_and_read_as_plain_arrays(tmp_path):
    import io

    import joblib

    from pipeline.training.shards import RawArray, copy_into

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = copy_into({}, {"0": a, "1": np.array(["x"], dtype=object)})
    assert isinstance(out["0"], RawArray) and not isinstance(out["1"], RawArray)
    buf = io.BytesIO()
    joblib.dump(out["0"], buf)
    assert len(buf.getvalue()) < a.nbytes + 200  # the bytes and a small header, no ndarray pickle
    back = joblib.load(io.BytesIO(buf.getvalue()))
    assert type(back) is np.ndarray and back.flags.writeable and back.dtype == a.dtype
    assert np.array_equal(back, a)


def test_a_checkpoint_of_another_world_size_is_refused_by_name(tmp_path):
    store = Store(tmp_path / "store")
    Coordinator(store, "net", "default", world_size=2).commit(
        2, {"epoch": 2, "distributed": {"world_size": 2}}, {0: store.save({"x": 1}), 1: store.save({"x": 2})}
    )
    with pytest.raises(CheckpointError, match="written by 2 ranks, this run has 1"):
        DistributedCheckpointer(store=store, name="net").restore(build(0))


# -- two real ranks over gloo, one SIGKILLed -----------------------------------------------------
STEPS, EVERY = 12, 2


def launch(tmp: Path, strategy: str, *, sleep: float = 0.0) -> list[subprocess.Popen]:
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    port, env = free_port(), dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for rank in (0, 1):
        log = open(tmp / f"log{rank}", "a")  # noqa: SIM115 (closed with the process)
        cmd = [sys.executable, "-m", "tests.training.ddp_worker", "--rank", str(rank), "--world", "2",
               "--port", str(port), "--store", str(tmp / "store"), "--out", str(tmp / "out"),
               "--strategy", strategy, "--steps", str(STEPS), "--every", str(EVERY),
               "--step-sleep", str(sleep)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def finish(procs: list[subprocess.Popen], tmp: Path, timeout: float = 180) -> None:
    for rank, p in enumerate(procs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "timeout"
        assert rc == 0, f"rank {rank} ended with {rc}:\n{(tmp / f'log{rank}').read_text()[-3000:]}"


def wait_for_line(path: Path, line: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text().splitlines():
            return
        assert proc.poll() is None, f"the rank ended before {line!r}:\n{path.read_text()[-3000:]}"
        time.sleep(0.02)
    raise AssertionError(f"no {line!r} in {path} within {timeout} s")


def final(tmp: Path, rank: int) -> dict:
    with np.load(tmp / "out" / f"rank{rank}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """Both ranks trained without a stop and without checkpoints."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    finish(launch(tmp, "none"), tmp)
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGIES)
def test_sigkill_of_one_rank_then_both_resume_to_bitwise_the_same_weights(tmp_path, uninterrupted, name):
    procs = launch(tmp_path, name, sleep=0.25)
    wait_for_line(tmp_path / "log1", "step 7", procs[1])
    procs[1].send_signal(signal.SIGKILL)
    assert procs[1].wait(timeout=30) == -signal.SIGKILL
    try:  # gloo fails the survivor's next collective ("connection closed by peer")
        procs[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0].kill()  # what a launcher does with the rest of a failed group
        procs[0].wait()
    assert procs[0].returncode != 0

    store = Store(tmp_path / "store")
    steps = Coordinator(store, "ddp", "default", 2).committed.steps()
    assert steps and max(steps) < STEPS
    for s in steps:  # every committed step names a shard of each rank (or rank 0's full state)
        ranks = sorted(store.manifest("ddp", "default", s).outputs.names())
        assert ranks == (["rank-0"] if name == "master" else ["rank-0", "rank-1"])

    finish(launch(tmp_path, name), tmp_path)
    resumed = [
        [ln for ln in (tmp_path / f"log{r}").read_text().splitlines() if ln.startswith("resumed")][-1] for r in (0, 1)
    ]
    assert resumed[0] == resumed[1] and resumed[0] != "resumed None", resumed
    assert 2 <= int(resumed[0].split()[1]) < STEPS
    for rank in (0, 1):
        want, got = final(uninterrupted, rank), final(tmp_path, rank)
        assert want.keys() == got.keys()
        different = [k for k in want if not np.array_equal(want[k], got[k])]
        assert not different, f"rank {rank}: {different} differ from the uninterrupted run"
