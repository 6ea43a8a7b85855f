"""Crash safety: a writer SIGKILLed at any moment never leaves a broken store.

A real `python` process saves stage results in a loop — through StageCache (new keys:
objects + manifest) and through Store.save + commit (training checkpoints whose
manifests are overwritten in place) — and is SIGKILLed at 60 random moments. After each
kill, verify() must find nothing corrupt, missing or unreadable, and every new or
changed manifest must load to exactly the value it recorded (same fingerprint).

Starting an interpreter that imports pandas and pyarrow takes ~1.5 s, too slow for 60
kills, so the test starts one "zygote" python process that imports everything once and
forks a fresh writer for each kill: every writer is a real process, killed by a real
SIGKILL at a random delay, most often in the middle of writing something.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline import Manifest, Store, fingerprint

KILLS = 60
MAX_KILLS = 3 * KILLS
"""On a slow machine the kills go on (up to this many) until they have hit both windows the
test is about: writers that committed, and kills that landed mid-write."""

WRITER = textwrap.dedent(
    '''
    import os, sys
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np
    import pandas as pd
    from pipeline import Manifest, StageCache, Store

    def features(seed, rows):
        """A stage with three outputs, one per codec."""
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({"x": rng.standard_normal(rows), "k": pd.Categorical(rng.choice(["a", "b"], rows))})
        return frame, rng.random(rows // 4), {"seed": seed, "mean": float(frame["x"].mean())}

    def write_forever(root, generation):
        store = Store(root)
        stage = StageCache(store).wrap(features)
        rng = np.random.default_rng(generation)
        for i in range(10**9):
            rows = int(rng.integers(10, 40_000))
            stage(generation * 1_000_000 + i, rows)  # a new key every time: a miss, written
            outputs = store.save({"weights": rng.standard_normal(rows // 8), "epoch": i})
            key = "xxh3:" + f"{generation % 4:032x}"
            store.commit(Manifest(stage="train", key=key, outputs=outputs, step=i % 3, kind="checkpoint"))

    root = sys.argv[1]
    # Warm up before forking (imports, lazy fingerprint handlers, the stage's code key), so
    # a writer starts writing at once. Only pure-Python work: no threads exist at fork.
    import joblib, pyarrow.parquet  # noqa: E401,F401
    from pipeline import fingerprint
    fingerprint((pd.DataFrame({"a": [1.0]}), np.zeros(1), {"a": 1}))
    StageCache(Store(root)).wrap(features).key(0, 1)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    write_forever(root, int(arg))
                finally:
                    os._exit(3)
            print(pid, flush=True)
        elif cmd == "wait":
            _, status = os.waitpid(int(arg), 0)
            print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status), flush=True)
        else:
            break
    '''
)


@pytest.fixture
def zygote(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "store"
    Store(root)
    errors = open(tmp_path / "writer.err", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        bufsize=1,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", _stderr(errors)
        yield proc, root, errors
    finally:
        proc.kill()
        proc.wait()
        errors.close()


def _stderr(f) -> str:
    f.flush()
    f.seek(0)
    return f.read()[-3000:]


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_consistent_store(zygote):
    proc, root, errors = zygote
    store = Store(root)
    rng = random.Random(20240611)
    seen: dict[str, bytes] = {}
    temp_files = loaded = 0
    t0 = time.monotonic()
    pid = None
    try:
        longest = max(0.3, 2 * commit_seconds(proc, store))  # kill moments span ~2 commits, however slow
        store.remove_dead_temps()  # the measuring writer's: not counted as a kill mid-write
        calibration = {rel: None for rel in store._backend.list("stages")}  # nor are its results counted
        generation = 0
        while generation < KILLS or (
            generation < MAX_KILLS and not (stage_results(seen, calibration) >= KILLS // 2 and temp_files)
        ):
            generation += 1
            proc.stdin.write(f"fork {generation}\n")
            pid = int(proc.stdout.readline())
            time.sleep(rng.uniform(0.0, longest))
            os.kill(pid, signal.SIGKILL)
            proc.stdin.write(f"wait {pid}\n")
            status = int(proc.stdout.readline())
            assert status == signal.SIGKILL, f"writer ended on its own ({status}): {_stderr(errors)}"

            report = store.verify()
            assert (report.corrupt, report.missing, report.bad_manifests) == (0, 0, 0), (generation, report)
            temp_files += report.temp_files  # (each new writer removes the temps of the dead one before it)
            for prefix in ("stages", "checkpoints"):
                for rel in store._backend.list(prefix):
                    raw = bytes(store._backend.read(rel))
                    if seen.get(rel) == raw:
                        continue
                    seen[rel] = raw
                    m = Manifest.from_json(raw)  # parses: never torn
                    value = store.load(m.outputs)  # loads, verified, and is exactly what was saved
                    assert fingerprint(value) == m.outputs.fingerprint, rel
                    loaded += 1
    finally:  # never leave a writer running if the test fails half-way
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    elapsed = time.monotonic() - t0
    results = stage_results(seen, calibration)
    print(
        f"{generation} kills at up to {longest:.2f} s in {elapsed:.1f}s: {results} stage results, "
        f"{loaded} manifest versions loaded, {temp_files} temp files left by kills mid-write"
    )
    assert results >= KILLS // 2, "the writers hardly committed anything: the test tests nothing"
    assert temp_files > 0, "no kill landed mid-write: the test tests nothing"


def stage_results(seen: dict[str, bytes], calibration: dict[str, None]) -> int:
    return sum(1 for r in seen if r.startswith("stages/") and r not in calibration)


def commit_seconds(proc, store: Store, commits: int = 3, bound: float = 120.0) -> float:
    """How long a forked writer takes per stage commit on this machine now (from its fork): one
    writer, forked and left to commit ``commits`` results (at most ``bound`` s), then killed."""
    before = sum(1 for _ in store._backend.list("stages"))
    proc.stdin.write(f"fork {MAX_KILLS + 1}\n")
    pid = int(proc.stdout.readline())
    t0 = time.monotonic()
    try:
        while sum(1 for _ in store._backend.list("stages")) - before < commits and time.monotonic() - t0 < bound:
            time.sleep(0.02)
        return (time.monotonic() - t0) / commits
    finally:
        os.kill(pid, signal.SIGKILL)
        proc.stdin.write(f"wait {pid}\n")
        proc.stdout.readline()
