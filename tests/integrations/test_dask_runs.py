"""Runs on a real dask.distributed LocalCluster of two worker processes (``runner="dask"``,
``python -m pipeline run --runner dask``): results equal the sequential run's, no key is
computed twice, the store may be S3, a forced run forces on the workers, and a worker
SIGKILLed mid-trial has its trial resumed from its epoch checkpoint on another worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline import Store
from pipeline.errors import ConfigError

pytest.importorskip("prefect_dask")

from pipeline.integrations.runner import run_flow  # noqa: E402
from tests.bundled_runs import ROOT, SMALL, cli  # noqa: E402

GRID = "tests.integrations.dask_search:grid"


def _log(path: Path) -> list[tuple[int, float, str, int]]:
    """(pid, alpha, "start" | "epoch", n) per line the trials wrote."""
    rows = []
    for line in path.read_text().splitlines():
        pid, alpha, what, n = line.split()
        rows.append((int(pid), float(alpha), what, int(n)))
    return rows


@pytest.fixture
def trial_log(tmp_path, monkeypatch) -> Path:
    log = tmp_path / "trials.log"
    log.write_text("")
    monkeypatch.setenv("DASK_TRIAL_LOG", str(log))  # the cluster's workers inherit the environment
    return log


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> tuple[str, Path]:
    """A LocalCluster of 2 one-thread worker processes, as ``runner="dask"`` starts, shared by
    the tests below that leave its workers alive (each on its own store), and the trial log
    its workers write to (they inherit the environment once, when they start). Every new
    cluster's workers import the pipeline, sklearn and Prefect again: ~13 s per run on a
    2-core machine. ``runner="dask"`` without an address (its own LocalCluster) is run by
    the SIGKILL test and the bundled-pipeline test of this module."""
    from pipeline.integrations.dask_runner import local_cluster

    log = tmp_path_factory.mktemp("dask-cluster") / "trials.log"
    log.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DASK_TRIAL_LOG", str(log))
        local = local_cluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with local:
        yield local.scheduler_address, log


@pytest.fixture
def cluster_log(cluster, monkeypatch) -> Path:
    """The shared cluster's trial log, emptied, and named to this process's trials too."""
    log = cluster[1]
    log.write_text("")
    monkeypatch.setenv("DASK_TRIAL_LOG", str(log))
    return log


def test_runner_and_address_are_checked_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="runner 'spark': use threads or dask"):
        run_flow(GRID, None, Store(tmp_path / "s"), runner="spark")
    with pytest.raises(ConfigError, match="only a flow's submitted stages can run on Dask"):
        run_flow("tests.integrations.dask_search:table", None, Store(tmp_path / "s"), runner="dask")
    from pipeline.integrations.dask_runner import cluster_threads
    from pipeline.integrations.server import free_port

    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:\d+"):
        cluster_threads(f"tcp://127.0.0.1:{free_port()}", timeout=2)


def test_the_runner_setting_takes_threads_or_dask(tmp_path):
    from pipeline.config import Settings

    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nrunner = "dask"\ndask_address = "tcp://h:8786"\n')
    s = Settings.load(start=tmp_path, env={})
    assert (s.runner, s.dask_address) == ("dask", "tcp://h:8786")
    assert Settings.load(start=tmp_path, env={"PIPELINE_RUNNER": "threads"}).runner == "threads"
    with pytest.raises(ConfigError, match="setting 'runner' in .* is 'processes'; use one of threads, dask"):
        Settings.load(start=tmp_path, env={"PIPELINE_RUNNER": "processes"})


@pytest.mark.slow
def test_a_grid_search_on_two_workers_equals_the_sequential_one_and_trains_each_trial_once(
    tmp_path, cluster, cluster_log, prefect_api
):
    address, trial_log = cluster[0], cluster_log
    sequential = run_flow(GRID, None, Store(tmp_path / "sequential"))
    assert {pid for pid, *_ in _log(trial_log)} == {os.getpid()}
    trial_log.write_text("")

    store = Store(tmp_path / "dask")
    on_dask = run_flow(GRID, None, store, runner="dask", dask_address=address)
    assert on_dask.result == sequential.result
    rows = _log(trial_log)
    starts = Counter(alpha for _, alpha, what, _ in rows if what == "start")
    assert sorted(starts) == [1e-4, 1e-3, 1e-2, 1e-1] and set(starts.values()) == {1}  # no trial trained twice
    assert len({pid for pid, *_ in rows}) == 2 and os.getpid() not in {pid for pid, *_ in rows}  # both workers
    assert not [row for row in rows if row[2] == "task-run"]  # plain Dask tasks: no Prefect task engine per trial
    assert len(list(store.manifests("grid.trial"))) == 4

    trial_log.write_text("")
    rerun = run_flow(GRID, None, store, runner="dask", dask_address=address)
    assert rerun.result == sequential.result and trial_log.read_text() == ""  # served on the workers

    forced = run_flow(
        GRID, None, store, runner="dask", dask_address=address, force=["grid.trial"]
    )  # --force reaches the workers
    assert forced.result == sequential.result
    starts = [(alpha, n) for _, alpha, what, n in _log(trial_log) if what == "start"]
    assert sorted(starts) == [(a, 0) for a in (1e-4, 1e-3, 1e-2, 1e-1)]  # retrained, from scratch


@pytest.mark.slow
def test_the_workers_share_an_s3_store_and_a_rerun_in_this_process_is_served_from_it(
    tmp_path, cluster, cluster_log, s3_server, prefect_api
):
    address, trial_log = cluster[0], cluster_log
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    reference = run_flow(GRID, None, Store(tmp_path / "local"))
    trial_log.write_text("")
    on_dask = run_flow(GRID, None, store, runner="dask", dask_address=address)
    assert on_dask.result == reference.result
    assert len({pid for pid, *_ in _log(trial_log)}) == 2
    assert not list(tmp_path.glob("**/objects"))[1:]  # nothing but the local reference store on disk
    trial_log.write_text("")
    again = run_flow(GRID, None, store)  # this process, sequentially: every trial served from S3
    assert again.result == reference.result and trial_log.read_text() == ""


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trial_resumed_from_its_checkpoint_on_another_worker(
    tmp_path, trial_log, monkeypatch, prefect_api
):
    monkeypatch.setenv("DASK_TRIAL_PAUSE", "0.4")
    reference = run_flow(GRID, None, Store(tmp_path / "sequential"))
    trial_log.write_text("")
    killed: list[tuple[int, float]] = []

    def kill_mid_trial() -> None:  # SIGKILL the first worker that has committed epoch 2 of a trial
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for pid, alpha, what, n in _log(trial_log):
                if what == "epoch" and n == 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, alpha))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mid_trial)
    killer.start()
    on_dask = run_flow(GRID, None, Store(tmp_path / "dask"), runner="dask")
    killer.join()
    assert killed, "no trial reached epoch 2"
    (victim, alpha), rows = killed[0], _log(trial_log)
    assert on_dask.result == reference.result  # the resumed trial ends with the same model and value
    starts = [(pid, n) for pid, a, what, n in rows if what == "start" and a == alpha]
    assert starts[0] == (victim, 0) and len(starts) == 2
    pid, resumed_at = starts[1]
    assert pid != victim and resumed_at >= 2  # another worker, from its epoch checkpoint, not from scratch
    others = Counter(a for _, a, what, _ in rows if what == "start" and a != alpha)
    assert set(others.values()) == {1}  # the other trials trained once


@pytest.mark.slow
def test_the_bundled_pipeline_with_runner_dask_equals_the_sequential_run(tmp_path_factory, prefect_api):
    project = tmp_path_factory.mktemp("dask-project")
    shutil.copytree(ROOT / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "raw", project / "data" / "raw")
    for name in ("params.toml", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    sets = [a for s in SMALL for a in ("--set", s)]
    runs = {}
    for runner in ("threads", "dask"):
        done = cli(project, "run", "--store", str(project / runner), "--runner", runner, *sets)
        assert done.returncode == 0, done.stdout + done.stderr
        (record,) = (project / runner / "runs").glob("*.json")
        runs[runner] = json.loads(record.read_text())
    stores = {r: Store(project / r) for r in runs}

    def results(store: Store) -> dict[tuple[str, str], object]:
        out = {}
        for m in store.manifests():
            tree = m.outputs.to_json() if hasattr(m.outputs, "to_json") else m.outputs
            out[(m.stage, m.key)] = json.dumps(tree, sort_keys=True, default=str)
        return out

    seq, par = results(stores["threads"]), results(stores["dask"])
    assert seq.keys() == par.keys()  # the same stages with the same keys: the same inputs by content
    different = [k for k in seq if seq[k] != par[k]]
    assert different == [k for k in different if k[0] == "package_model"], different
    for runner, run in runs.items():
        misses = Counter(e["key"] for e in run["stages"] if not e["hit"])
        assert set(misses.values()) == {1}, (runner, misses)  # no key computed twice
    trials = {r: [(t["trial"], t["params"], t["value"], t["source"]) for t in run["trials"]] for r, run in runs.items()}
    assert trials["dask"] == trials["threads"] and len(trials["dask"]) == 4  # each trial once, the same trials


def _quadratic(params, checkpointer):
    return (params["x"] - 0.3) ** 2 + (params["y"] + 0.1) ** 2


def test_a_tpe_search_asked_in_batches_proposes_what_the_sequential_search_proposes(tmp_path):
    """TPE's proposals depend on the trials told before them once its 10 random start-up
    trials are done: from then on it is asked one trial at a time."""
    from optuna.distributions import FloatDistribution

    from pipeline.tuning import Search

    space = {"x": FloatDistribution(-1, 1), "y": FloatDistribution(-1, 1)}
    calls: list[int] = []

    def map_fn(fn, batch):
        calls.append(len(batch))
        return [fn(*args) for args in batch]

    def trials(parallel, store):
        found = Search("q", space, _quadratic, n_trials=14, sampler="tpe", seed=3).run(
            store, parallel=parallel, map_fn=map_fn
        )
        return [(t.params, t.value) for t in found.trials]

    assert trials(4, Store(tmp_path / "batched")) == trials(1, Store(tmp_path / "sequential"))
    assert calls == [4, 4, 2]  # 10 start-up trials in batches, then one at a time (not through map_fn)
