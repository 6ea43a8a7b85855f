"""Submitted stages on a real dask.distributed LocalCluster of two worker processes."""

from __future__ import annotations

import os

import pytest

from pipeline import Store
from pipeline.errors import ConfigError

pytest.importorskip("prefect_dask")

from pipeline.integrations.dask_runner import dask_task_runner, on_dask  # noqa: E402


def _faults_and_blas_threads_of_a_numpy_loop() -> tuple[int, list[int]]:
    import resource

    import numpy as np
    from threadpoolctl import threadpool_info

    a, w = np.full((200, 200), 0.005), np.eye(200)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(300):
        w = np.tanh(w @ a)  # two new 320 kB arrays each time
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults, [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.slow
def test_local_cluster_workers_reuse_freed_arrays_and_use_one_blas_thread_each():
    """Dask's nanny default MALLOC_TRIM_THRESHOLD_=65536 made every array above 128 kB an
    mmap + page faults on each allocation (~47k faults here; nearly 2x the CPU of the loop)."""
    runner = dask_task_runner(workers=1)
    with runner:
        faults, blas = runner.client.submit(_faults_and_blas_threads_of_a_numpy_loop, pure=False).result()
    assert faults < 3000, f"{faults} minor page faults for 600 arrays of 320 kB"
    assert blas and set(blas) == {1}


def test_a_bad_address_or_worker_count_is_refused_by_name():
    with pytest.raises(ConfigError, match="'localhost:8786' is not a scheduler address"):
        dask_task_runner("localhost:8786")
    with pytest.raises(ConfigError, match="workers >= 1, not 0"):
        dask_task_runner(workers=0)
    with pytest.raises(ConfigError, match="not a Prefect flow"):
        on_dask(len)


@pytest.mark.slow
def test_stages_fan_out_over_two_worker_processes_with_the_sequential_results(tmp_path, monkeypatch, prefect_api):
    from pipeline.integrations.prefect import use_store
    from tests.integrations.dask_flow import fan

    log = tmp_path / "stages.log"
    monkeypatch.setenv("DASK_STAGE_LOG", str(log))  # the workers inherit the environment
    with use_store(Store(tmp_path / "sequential")):
        expected = fan(6)
    log.write_text("")
    with use_store(Store(tmp_path / "dask")):
        got = on_dask(fan)(6)
        computed = [line.split() for line in log.read_text().splitlines()]
        rerun = on_dask(fan)(6)
    assert got == expected == rerun == sum(i * i for i in range(6))
    names = sorted(name for name, _ in computed)
    assert names == sorted([f"square{i}" for i in range(6)] + ["total"])  # each key computed once
    workers = {pid for name, pid in computed if name.startswith("square")}
    assert len(workers) == 2 and str(os.getpid()) not in workers  # both worker processes, not the driver
    assert len(log.read_text().splitlines()) == len(computed)  # the rerun on the cluster computed nothing
