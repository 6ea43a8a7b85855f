"""``python -m pipeline serve --runner dask`` against a real ``prefect server start`` on
127.0.0.1: the served runs' search trials run on one LocalCluster that the serving process
starts and keeps for every run, and SIGTERM stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest

from pipeline import Store

pytest.importorskip("prefect_dask")

import psutil  # noqa: E402  (distributed's dependency)

from tests.integrations.test_dask_runs import GRID, _log  # noqa: E402
from tests.integrations.test_deploy import ROOT, finished_runs  # noqa: E402


@pytest.mark.slow
def test_serve_runner_dask_runs_trials_on_one_local_cluster_for_every_run_and_sigterm_closes_it(tmp_path, prefect_api):
    from prefect.client.orchestration import get_client

    trial_log = tmp_path / "trials.log"
    trial_log.write_text("")
    name = f"dask-every-3s-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_RUNNER_POLL_FREQUENCY="1", DASK_TRIAL_LOG=str(trial_log))
    cmd = [sys.executable, "-m", "pipeline", "serve", "--interval", "3", "--flow", GRID,
           "--store", str(tmp_path / "store"), "--name", name, "--runner", "dask"]  # fmt: skip
    out = tmp_path / "serve.log"
    log = open(out, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            _, done = finished_runs(client, f"dask-grid/{name}", proc, out)
        assert all(r.state.is_completed() for r in done), [r.state for r in done]
        rows = _log(trial_log)
        starts = Counter(alpha for _, alpha, what, _ in rows if what == "start")
        assert sorted(starts) == [1e-4, 1e-3, 1e-2, 1e-1] and set(starts.values()) == {1}  # the 2nd run: all cached
        trial_pids = {pid for pid, *_ in rows}
        alive = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(trial_pids) == 2 and trial_pids <= alive, (trial_pids, alive)  # 2 at once, on workers outliving runs
        assert not [row for row in rows if row[2] == "task-run"]  # plain Dask tasks

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, out.read_text()
        gone = time.monotonic() + 30
        while any(psutil.pid_exists(pid) for pid in trial_pids) and time.monotonic() < gone:
            time.sleep(0.2)
        assert not any(psutil.pid_exists(pid) for pid in trial_pids)  # the cluster closed with the serving process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert len(list(Store(tmp_path / "store").manifests("grid.trial"))) == 4
