"""A search stage submitted to the Dask cluster its trials go to: the stage is a task on a
worker, its trials are tasks on the same cluster. Waiting for them must free the stage's
worker thread (``distributed.secede``) or no trial is ever scheduled with one worker, or with
every worker running such a stage. Each flow runs in a subprocess with a timeout, so a
deadlock fails the test instead of hanging it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline import Store

pytest.importorskip("prefect_dask")

from tests.bundled_runs import ROOT  # noqa: E402
from tests.integrations.dask_search_stage import SPACES, in_process  # noqa: E402

DEADLINE = 150.0  # seconds; a run takes ~15-30 s on a loaded 2-core machine


def _run_on_cluster(which: str, store: Path, workers: int, tmp_path: Path, warns: bool = False) -> list:
    out = tmp_path / f"{which}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.integrations.dask_search_stage", which, str(store), str(workers), str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow and the cluster it started
        output, _ = proc.communicate()
        pytest.fail(f"flow {which!r} on {workers} worker(s) made no progress in {DEADLINE:.0f} s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-5000:]
    assert ("cannot free its worker" in output) == warns, output[-5000:]
    return json.loads(out.read_text())


def _trials(log: Path, what: str) -> Counter:
    """How many times each alpha logged ``what`` ("start": trained; "dask-call": as a Dask task of its own)."""
    return Counter(line.split()[1] for line in log.read_text().splitlines() if line.split()[2] == what)


@pytest.fixture
def trial_log(tmp_path, monkeypatch) -> Path:
    log = tmp_path / "trials.log"
    log.write_text("")
    monkeypatch.setenv("DASK_TRIAL_LOG", str(log))
    return log


@pytest.mark.slow
def test_a_search_stage_on_a_one_worker_cluster_runs_its_trials_there(tmp_path, trial_log, prefect_api):
    with_store = Store(tmp_path / "sequential")
    from pipeline.context import run_context

    with run_context(store=with_store):
        (expected,) = json.loads(json.dumps(in_process(["left"])))
    trial_log.write_text("")

    store = tmp_path / "dask"
    got = _run_on_cluster("one", store, 1, tmp_path)
    assert got == expected  # the same trials, values and best model as the in-process search
    starts = _trials(trial_log, "start")
    assert set(starts.values()) == {1} and len(starts) == len(SPACES["left"])  # each trial trained once
    assert _trials(trial_log, "dask-call") == starts  # each a Dask task: the stage freed the only thread
    assert len(list(Store(store).manifests("left.trial"))) == len(SPACES["left"])  # every trial committed


@pytest.mark.slow
def test_two_search_stages_on_two_workers_run_at_once_without_deadlock(tmp_path, trial_log, prefect_api):
    from pipeline.context import run_context

    with run_context(store=Store(tmp_path / "sequential")):
        expected = json.loads(json.dumps(in_process(["left", "right"])))
    trial_log.write_text("")

    store = tmp_path / "dask"
    got = _run_on_cluster("two", store, 2, tmp_path)
    assert got == expected
    starts = _trials(trial_log, "start")
    assert set(starts.values()) == {1} and len(starts) == 8  # no trial trained twice
    assert _trials(trial_log, "dask-call") == starts  # each a Dask task of its own
    for name, space in SPACES.items():
        assert len(list(Store(store).manifests(f"{name}.trial"))) == len(space)


@pytest.mark.slow
def test_a_stage_submitting_stages_on_a_one_worker_cluster_finishes(tmp_path, prefect_api):
    store = tmp_path / "dask"
    assert _run_on_cluster("nested", store, 1, tmp_path) == [0 + 2 + 4]
    assert len(list(Store(store).manifests("double"))) == 3


@pytest.mark.slow
def test_a_search_from_a_thread_that_cannot_free_its_worker_runs_its_trials_in_place_and_says_so(
    tmp_path, trial_log, prefect_api
):
    from pipeline.context import run_context

    with run_context(store=Store(tmp_path / "sequential")):
        (expected,) = json.loads(json.dumps(in_process(["left"])))
    trial_log.write_text("")
    got = _run_on_cluster("threaded", tmp_path / "dask", 1, tmp_path, warns=True)  # a warning, not a hang
    assert got == expected
    assert set(_trials(trial_log, "start").values()) == {1} and not _trials(trial_log, "dask-call")
