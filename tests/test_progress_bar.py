"""Progress bars for long work, seen the way a user sees them: real subprocesses on a
pseudo-terminal (a bar appears) and on a pipe (nothing extra is printed)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import StageCache, Store
from pipeline.progress_bar import enabled, progress, track

ROOT = Path(__file__).resolve().parents[1]
BAR = "━━━━━"  # a bar's run of heavy lines (tables have them too: check the bar's text as well)


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm", **extra}
    out.pop("PIPELINE_PROGRESS", None)
    return out


def in_terminal(args: list[str], **extra: str) -> str:
    """What a user at a terminal sees (stdout and stderr on one pseudo-terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env(**extra))
    os.close(slave)
    out = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def through_pipe(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=ROOT, env=env(**extra), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def numbers(n: int) -> list[int]:
    return list(range(n))


@pytest.fixture
def filled(tmp_path) -> str:
    """A store with three results of one object each."""
    store = Store(tmp_path / "store")
    cached = StageCache(store).wrap(numbers)
    for n in (1, 2, 3):
        cached(n)
    return str(tmp_path / "store")


def test_verify_and_gc_in_a_terminal_draw_a_bar_once_they_are_long(filled):
    verify = [sys.executable, "-m", "pipeline", "verify", "--store", filled]
    shown = in_terminal(verify, PIPELINE_PROGRESS_DELAY="0")  # every verify counts as long
    assert "verify" in shown and BAR in shown and "3/3 objects" in shown, shown
    short = in_terminal(verify)  # a 3-object verify takes milliseconds: no bar
    assert "objects" not in short and "manifests" in short, short  # the report table only
    gc = [sys.executable, "-m", "pipeline", "gc", "--dry-run", "--store", filled]
    assert "gc scan" in in_terminal(gc, PIPELINE_PROGRESS_DELAY="0") and "gc scan" not in in_terminal(gc)


def test_through_a_pipe_nothing_extra_is_printed(filled):
    verify = [sys.executable, "-m", "pipeline", "verify", "--store", filled]
    piped = through_pipe(verify, PIPELINE_PROGRESS_DELAY="0")
    quiet = through_pipe(verify, PIPELINE_PROGRESS="0")
    assert "objects" not in piped.stdout + piped.stderr and "\x1b[" not in piped.stdout + piped.stderr
    assert piped.stdout == quiet.stdout and piped.stderr == quiet.stderr == ""


def test_hashing_a_large_file_in_a_terminal_draws_a_bar(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 40)  # 40 MiB: 5 reads of 8 MiB
    code = f"""
        import pathlib
        from pipeline import fingerprint
        print(fingerprint(pathlib.Path({str(big)!r})))
    """
    shown = in_terminal(python(code), PIPELINE_PROGRESS_DELAY="0")
    assert "hash big.bin" in shown and BAR in shown and "41.9/41.9 MB" in shown, shown
    piped = through_pipe(python(code), PIPELINE_PROGRESS_DELAY="0")
    assert piped.stdout.strip().startswith("xxh3:") and piped.stdout.count("\n") == 1 and piped.stderr == ""


def test_writing_and_reading_a_big_object_in_a_terminal_draws_bars(tmp_path):
    code = f"""
        import numpy as np
        from pipeline import StageCache, Store
        store = Store({str(tmp_path / "store")!r})
        leaf = store.put(np.ones(10_000_000), what="big array")  # 80 MB
        assert store.load(leaf).sum() == 10_000_000
        print("done")
    """
    shown = in_terminal(python(code), PIPELINE_PROGRESS_DELAY="0")
    assert "write big array" in shown and "read " in shown and BAR in shown, shown
    assert "done" in shown
    assert through_pipe(python(code), PIPELINE_PROGRESS_DELAY="0").stdout == "done\n"


def test_work_that_proves_long_gets_a_bar_after_a_second_and_short_work_none():
    code = """
        import time
        from pipeline.progress_bar import track
        for _ in track(range(20), "quick work"):
            pass
        for _ in track(range(6), "slow work", unit="steps"):
            time.sleep(0.3)
        print("end")
    """
    shown = in_terminal(python(code))
    assert "slow work" in shown and "6/6 steps" in shown and BAR in shown, shown
    assert "quick work" not in shown
    worker = in_terminal(python(code), PREFECT__FLOW_RUN_ID="8c0e4a6e-0000-4000-8000-000000000000")
    assert "slow work" not in worker and "end" in worker  # a flow run a Prefect worker started


def test_outside_a_terminal_progress_is_a_no_op():
    assert not enabled()  # pytest captures the output: not a terminal
    with progress("x", 10, unit="items") as bar:
        bar.advance(5)
        assert not bar.shown
    assert list(track([1, 2, 3], "y")) == [1, 2, 3]


def test_mirror_push_and_pull_in_a_terminal_draw_bars_once_they_are_long(filled, tmp_path):
    backup = str(tmp_path / "backup")
    push = [sys.executable, "-m", "pipeline", "mirror", "push", "--store", filled, "--mirror", backup]
    shown = in_terminal(push, PIPELINE_PROGRESS_DELAY="0")  # every copy counts as long
    assert "mirror push objects" in shown and "mirror push manifests" in shown and BAR in shown, shown
    assert "3/3 items" in shown or "3/3" in shown, shown
    import shutil

    for lost in ("objects", "stages"):  # the primary lost its results: pull brings them back
        shutil.rmtree(Path(filled, lost))
    pull = [sys.executable, "-m", "pipeline", "mirror", "pull", "--store", filled, "--mirror", backup]
    assert "mirror pull objects" in in_terminal(pull, PIPELINE_PROGRESS_DELAY="0")
    quiet = through_pipe(push)  # nothing left to copy, and a pipe: no bar either way
    assert "mirror push objects" not in quiet.stdout + quiet.stderr
    again = [sys.executable, "-m", "pipeline", "mirror", "push", "--store", filled, "--mirror", str(tmp_path / "b2")]
    assert "mirror push objects" not in in_terminal(again)  # short work: no bar
