"""Leases: of several real processes asking for one missing stage key, one computes and the
others wait and load its result; a holder that dies (SIGKILL) or hangs (SIGSTOP: no heartbeat)
is taken over; with leases off every process computes. Body executions are counted by the
files the stage body leaves (tests/helpers/lease_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import StageCache, Store
from pipeline.context import run_context
from pipeline.store import layout, locks
from pipeline.store.locks import Holder, Leasing

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def spawn(tmp_path: Path, url: str, processes: int, *, seconds: float = 2.0, leasing=None, options=None, name="w"):
    runs, start = tmp_path / "runs", tmp_path / f"start-{name}"
    runs.mkdir(exist_ok=True)
    start.mkdir()
    spec = {"url": url, "options": options or {}, "runs": str(runs), "start": str(start), "processes": processes,
            "seconds": seconds, "leasing": leasing}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.helpers.lease_worker", json.dumps(spec)]
    return [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]


def results(procs, timeout: float = 180) -> list[str]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        assert p.returncode == 0, stderr[-2000:]
        out.append(stdout.split()[-1])
    return out


def executions(tmp_path: Path) -> int:
    return len(os.listdir(tmp_path / "runs"))


def wait_started(tmp_path: Path, n: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while executions(tmp_path) < n:
        assert time.monotonic() < deadline, "the holder never started its body"
        time.sleep(0.05)


def test_eight_processes_one_computation(tmp_path):
    outcomes = results(spawn(tmp_path, str(tmp_path / "store"), 8))
    assert executions(tmp_path) == 1
    assert sorted(outcomes) == ["computed"] + ["hit"] * 7


def test_lease_off_every_process_computes(tmp_path):
    outcomes = results(spawn(tmp_path, str(tmp_path / "store"), 4, leasing={"enabled": False}))
    assert executions(tmp_path) == 4
    assert outcomes == ["computed"] * 4


def test_killed_holder_is_taken_over(tmp_path):
    url = str(tmp_path / "store")
    (holder,) = spawn(tmp_path, url, 1, seconds=600, name="holder")
    wait_started(tmp_path)
    store = Store(url)
    leases = list(Path(url, layout.LEASES).rglob("*.json"))
    assert len(leases) == 1 and json.loads(leases[0].read_text())["pid"] == holder.pid
    holder.kill()
    holder.communicate()
    t0 = time.monotonic()
    assert results(spawn(tmp_path, url, 2, seconds=1.0, leasing={"wait": 600}, name="after")) in (
        ["computed", "hit"],
        ["hit", "computed"],
    )
    assert time.monotonic() - t0 < 60  # the dead holder's lease blocked nobody
    assert executions(tmp_path) == 2  # the killed one, and exactly one more
    assert not list(Path(url, layout.LEASES).rglob("*.json"))  # released after the commit
    assert len(list(store.manifests())) == 1


def test_hung_holder_expires_and_is_taken_over(tmp_path):
    url = str(tmp_path / "store")
    (holder,) = spawn(tmp_path, url, 1, seconds=600, leasing={"ttl": 1.5}, name="holder")
    wait_started(tmp_path)
    os.kill(holder.pid, signal.SIGSTOP)  # alive, but its heartbeat stops: only the expiry frees the lease
    try:
        (late,) = spawn(tmp_path, url, 1, seconds=0.1, leasing={"ttl": 1.5, "wait": 600}, name="late")
        assert results([late], timeout=120) == ["computed"]
        assert executions(tmp_path) == 2
    finally:
        holder.kill()
        holder.communicate()


def square(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write("ran\n")
    return x * x


def test_waiter_that_times_out_computes_itself(tmp_path):
    store = Store(tmp_path / "store")
    stage = StageCache(store).wrap(square)
    key = stage.key(3, str(tmp_path / "log")).key
    other = store.leases.try_acquire("square", key, Leasing())  # a live holder that never commits
    assert other is not None
    try:
        with run_context(store=store, lease=Leasing(wait=0.5, poll=0.05)):
            t0 = time.monotonic()
            outcome = stage.call(3, str(tmp_path / "log"))
        assert not outcome.hit and outcome.value == 9 and time.monotonic() - t0 >= 0.5
        assert (tmp_path / "log").read_text() == "ran\n"
    finally:
        other.release()


def test_lost_lease_never_blocks_the_commit(tmp_path):
    store = Store(tmp_path / "store")
    mine = store.leases.try_acquire("s", "xxh3:" + "a" * 32, Leasing(ttl=0.3))
    assert mine is not None
    # Another process takes it over (as after an expiry): the next generation, the old one deleted.
    taker = Holder(layout.host_id(), os.getpid(), time.time() + 60, "taker", 1)
    store._backend.create(layout.lease_path("s", "xxh3:" + "a" * 32, 1), taker.to_json())
    store._backend.delete(mine.rel)
    deadline = time.monotonic() + 10  # renewals every ttl/3; a loaded machine may delay the heartbeat
    while not mine.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mine.lost
    mine.release()  # leaves the taker's lease alone
    assert store.leases.holder("s", "xxh3:" + "a" * 32).token == "taker"


@pytest.mark.parametrize("where", ["local", "memory"])
def test_exclusive_create_has_one_winner(tmp_path, where):
    store = Store(tmp_path / "store" if where == "local" else f"memory://leases-{tmp_path.name}")
    assert store._backend.create("leases/x/k.1.json", b"one")
    assert not store._backend.create("leases/x/k.1.json", b"two")
    assert bytes(store._backend.read("leases/x/k.1.json")) == b"one"


def test_eight_processes_one_computation_on_s3(tmp_path, s3_server):
    outcomes = results(spawn(tmp_path, s3_server.new_url(), 8, options=s3_server.storage_options))
    assert executions(tmp_path) == 1
    assert sorted(outcomes) == ["computed"] + ["hit"] * 7


def test_exclusive_create_on_s3(s3_server):
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    assert store._backend.create("leases/x/k.1.json", b"one")
    assert not store._backend.create("leases/x/k.1.json", b"two")
    assert bytes(store._backend.read("leases/x/k.1.json")) == b"one"


def test_threads_of_one_process_compute_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = Store(tmp_path / "store")
    log = str(tmp_path / "log")

    def slow(x: int, log: str) -> int:
        time.sleep(0.5)
        return square(x, log)

    stage = StageCache(store).wrap(slow)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: stage.call(4, log), range(4)))
    assert [o.value for o in outcomes] == [16] * 4
    assert sorted(o.hit for o in outcomes) == [False, True, True, True]
    assert (tmp_path / "log").read_text() == "ran\n"


seen: list[bool] = []


def _flow_recording_leases() -> None:
    from pipeline import context

    seen.append(context.current().leasing().enabled)


@pytest.mark.parametrize("lease", [False, True, None])
def test_run_flow_puts_the_lease_setting_into_the_run_context(tmp_path, lease):
    from pipeline.integrations.runner import run_flow

    seen.clear()
    run_flow(f"{__name__}:_flow_recording_leases", None, Store(tmp_path / "store"), lease=lease)
    assert seen == [lease is not False]


def test_the_lease_setting(tmp_path):
    from pipeline.config import Settings

    assert Settings.load(start=tmp_path, env={}).lease is True
    assert Settings.load(start=tmp_path, env={"PIPELINE_LEASE": "0"}).lease is False
    (tmp_path / "pyproject.toml").write_text("[tool.pipeline]\nlease = false\n")
    assert Settings.load(start=tmp_path, env={}).lease is False
    assert Settings.load(start=tmp_path, env={}, lease=True).lease is True


def test_one_heartbeat_thread_renews_every_lease_of_a_store(tmp_path):
    """No thread start and join per lease (per trial of a search: milliseconds each on a
    loaded machine): one thread per store renews all leases held, each until released."""
    import threading

    before = set(threading.enumerate())
    store = Store(tmp_path / "store")
    leasing = Leasing(ttl=0.3)
    keys = ["xxh3:" + c * 32 for c in "abc"]
    first = store.leases.try_acquire("s", keys[0], leasing)
    first.release()
    held = [store.leases.try_acquire("s", k, leasing) for k in keys[1:]]
    beating = [t for t in set(threading.enumerate()) - before if t.name == "pipeline-lease-heartbeat"]
    assert len(beating) == 1, [t.name for t in set(threading.enumerate()) - before]
    time.sleep(0.6)  # two ttls: alive only if renewed
    for k, lease in zip(keys[1:], held):
        assert store.leases.holder("s", k).state() == "live" and not lease.lost
        lease.release()
        assert store.leases.holder("s", k) is None
    assert store.leases.holder("s", keys[0]) is None
    locks.IDLE_SECONDS = 0.2  # (the thread reads it each time it falls idle)
    try:
        again = store.leases.try_acquire("s", keys[0], leasing)
        again.release()
        beating[0].join(timeout=10)
        assert not beating[0].is_alive(), "an idle heartbeat thread never ended"
    finally:
        locks.IDLE_SECONDS = 5.0


def test_a_lease_due_before_the_heartbeat_wakes_is_renewed_in_time(tmp_path):
    """The heartbeat thread is woken for a new lease only when that one is due before the
    thread would wake anyway (one lease a trial of a search otherwise woke it each trial): a
    short-lived lease added while the thread sleeps towards a long one's renewal still lives."""
    store = Store(tmp_path / "store")
    long = store.leases.try_acquire("s", "xxh3:" + "a" * 32, Leasing(ttl=60.0))  # thread sleeps ~20 s
    heartbeat = store.leases._heartbeat
    deadline = time.monotonic() + 10
    while heartbeat._wakes == 0.0 and time.monotonic() < deadline:  # (until the thread waits)
        time.sleep(0.01)
    assert heartbeat._wakes > time.monotonic() + 5
    later = store.leases.try_acquire("s", "xxh3:" + "c" * 32, Leasing(ttl=90.0))  # due after: no wake-up
    short = store.leases.try_acquire("s", "xxh3:" + "b" * 32, Leasing(ttl=0.3))
    time.sleep(0.9)  # three ttls: alive only if the thread woke for it
    assert store.leases.holder("s", "xxh3:" + "b" * 32).state() == "live" and not short.lost
    for lease in (short, long, later):
        lease.release()
