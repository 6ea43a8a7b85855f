"""gc racing writers: real writer processes commit stage results while gc sweeps in a loop at
its smallest allowed grace. No committed entry may lose an object, no writer may fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from pipeline import Store
from pipeline.store import retention

WRITER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from pipeline import StageCache, Store

    MIN_COMMITS, MAX_SECONDS = {min_commits}, {max_seconds}

    def make(i, n):
        return np.arange(n) * (i % 7), {"i": i % 5}  # shared parts: dedup of existing objects

    root, seconds, seed, keys_file = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = Store(root)
    stage = StageCache(store).wrap(make)
    committed = []
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    end, bound = start + seconds, start + max(seconds, MAX_SECONDS)
    i = 0
    # At least MIN_COMMITS commits, however slow the machine (bounded): the race must have happened.
    while (now := time.monotonic()) < end or (i < MIN_COMMITS and now < bound):
        i += 1
        n = int(rng.integers(1, 400))
        outcome = stage.call(seed * 10**6 + i % 40, n)  # reuses keys too: hits, and rewrites
        committed.append(outcome.manifest.key)
        store.save(np.full(n, seed * 10**6 + i))  # an orphan: gc has real garbage to delete
    with open(keys_file, "w") as f:  # a file, not stdout: thousands of keys would fill the pipe while gc loops
        json.dump(committed, f)
    """
)
MIN_COMMITS = 30
"""Commits each writer makes at least (its keys cycle over 40: two writers > 40 distinct keys)."""
MAX_SECONDS = 180.0
"""The longest a writer goes on to reach MIN_COMMITS on a loaded machine."""


def drop_bait(store: Store, rng) -> None:
    """Results of another stage, with bytes the writers also write (dedup): a policy drops these
    manifests each sweep while writers commit manifests that reference the same objects."""
    import numpy as np

    from pipeline import Manifest

    for _ in range(10):
        n = int(rng.integers(1, 400))
        outputs = store.save((np.arange(n) * int(rng.integers(0, 7)), {"i": int(rng.integers(0, 5))}))
        key = "xxh3:" + rng.bytes(16).hex()
        store.commit(Manifest("old", key, outputs, created="2020-01-01T00:00:00+00:00"))


def race(tmp_path, seconds: float, policy=None) -> tuple[int, int]:
    root = tmp_path / "store"
    store = Store(root)
    script = tmp_path / "writer.py"
    script.write_text(WRITER.replace("{min_commits}", str(MIN_COMMITS)).replace("{max_seconds}", str(MAX_SECONDS)))
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OPENBLAS_NUM_THREADS": "1"}
    # Output goes to files, not pipes: nobody reads a pipe while gc loops, and a full one blocks the writer.
    logs = {seed: open(tmp_path / f"writer-{seed}.err", "w") for seed in (1, 2)}  # noqa: SIM115
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(seconds), str(seed), str(tmp_path / f"keys-{seed}.json")],
            stdout=subprocess.DEVNULL,
            stderr=logs[seed],
            env=env,
        )  # fmt: skip
        for seed in (1, 2)
    ]
    grace = getattr(retention, "MIN_GRACE_SECONDS", 0.0)
    sweeps = deleted = 0
    import numpy as np

    rng = np.random.default_rng(0)
    dropped = 0
    while any(w.poll() is None for w in writers):
        if policy is not None:
            drop_bait(store, rng)
        report = retention.gc(store, policy, grace_seconds=grace)
        deleted += report.deleted_objects
        dropped += report.dropped_manifests
        sweeps += 1
    assert policy is None or dropped >= 10 * sweeps, (dropped, sweeps)
    keys = set()
    for seed, w in zip((1, 2), writers):
        w.wait()
        logs[seed].close()
        err = (tmp_path / f"writer-{seed}.err").read_text()
        assert w.returncode == 0 and "Traceback" not in err, err[-3000:]
        keys.update(json.loads((tmp_path / f"keys-{seed}.json").read_text()))
    lost = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in keys:
            m = store.manifest("make", key)
            assert m is not None, key
            try:
                store.load(m.outputs)
            except Exception:
                lost += 1
    assert sweeps > 5 and len(keys) > 40 and deleted > 10, (sweeps, len(keys), deleted)
    print(f"{sweeps} gc sweeps, {deleted} orphans deleted, {len(keys)} committed entries, {lost} lost")
    return lost, len(keys)


@pytest.mark.slow
def test_gc_in_a_loop_racing_two_writers_loses_nothing(tmp_path):
    lost, total = race(tmp_path, 20.0)
    assert lost == 0, f"{lost} of {total} committed entries lost an object"


@pytest.mark.slow
def test_gc_racing_two_writers_briefly(tmp_path):
    lost, total = race(tmp_path, 4.0)
    assert lost == 0, f"{lost} of {total} committed entries lost an object"


@pytest.mark.slow
def test_gc_with_a_policy_racing_two_writers_loses_nothing(tmp_path):
    """Each sweep drops every result of stage ``old`` (objects shared with what the writers commit
    at that moment) and keeps the writers' ``make`` results: no committed kept result loses an object."""
    from pipeline.store.keep import KeepAll, OlderThan
    from pipeline.store.lifecycle import Retention

    lost, total = race(tmp_path, 10.0, Retention(OlderThan(0), (("make", KeepAll()),)))
    assert lost == 0, f"{lost} of {total} committed entries lost an object"
