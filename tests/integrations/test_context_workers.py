"""The run context reaches Prefect's ProcessPoolTaskRunner workers (real processes, a real
Prefect server): the store chosen with use_store, and --force, with no environment variable."""

from __future__ import annotations

import os

import pytest

from pipeline import Store, use_store
from pipeline.integrations.runner import run_flow
from tests.integrations.flow_module import FlowModule

pytestmark = pytest.mark.usefixtures("prefect_api")

FLOW = """
import os

from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner

from pipeline import current_store, stage


def log(line):
    with open(os.environ["STAGE_LOG"], "a") as f:
        f.write(line + "\\n")


@stage
def where(x: int):
    log(f"where{x} pid={os.getpid()} store={current_store().url} env={os.environ.get('PIPELINE_STORE')}")
    return x + 1


@flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
def workers(n: int = 2):
    return [f.result() for f in where.map(list(range(n)))]
"""


@pytest.fixture
def mod(flow_module):
    return flow_module(FLOW)


def lines(mod: FlowModule) -> list[str]:
    return mod.log.read_text().splitlines() if mod.log.exists() else []


def test_forced_stage_recomputes_in_a_process_pool_worker(mod, tmp_path):
    store = Store(tmp_path / "store")
    ref = mod.ref("workers")
    assert run_flow(ref, {"n": 2}, store).result == [1, 2]  # unforced reruns hit: test_map_under_process_pool
    mod.executed()
    forced = run_flow(ref, {"n": 2}, store, force=["where"])
    assert forced.result == [1, 2]
    ran = lines(mod)
    assert sorted(line.split()[0] for line in ran) == ["where0", "where1"]
    assert all(f"pid={os.getpid()}" not in line for line in ran)  # really in worker processes
    assert forced.summary["misses"] == 2 and forced.summary["hits"] == 0


def test_use_store_as_a_plain_call_reaches_process_pool_workers_without_an_env_var(mod, tmp_path):
    chosen = tmp_path / "chosen"
    flows = mod.module()
    setting = use_store(str(chosen))  # a plain call, as the README shows it
    try:
        assert flows.workers(n=2) == [1, 2]
    finally:
        setting.restore()
    ran = lines(mod)
    assert len(ran) == 2
    for line in ran:
        assert f"store={chosen}" in line and "env=None" in line and f"pid={os.getpid()}" not in line
    assert sorted(m.stage for m in Store(chosen).manifests()) == ["where", "where"]
    assert "PIPELINE_STORE" not in os.environ


@pytest.mark.slow  # three process-pool flow runs
def test_forced_trials_run_through_prefect_map_retrain_in_process_pool_workers(tmp_path):
    from prefect import flow
    from prefect.task_runners import ProcessPoolTaskRunner

    from pipeline.cache import forcing
    from pipeline.integrations.prefect import prefect_map
    from pipeline.tuning import tune
    from tests.tuning import search

    log = tmp_path / "trials.log"
    os.environ["TUNE_LOG"] = str(log)
    store = Store(tmp_path / "s")
    space = {"alpha": [1e-4, 1e-3], "eta0": [0.01], "batches": [1]}

    @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
    def parallel_search():
        return tune(search.train, space, n_trials=2, sampler="grid", store=store, name="par", parallel=2,
                    map_fn=prefect_map(), checkpointing=search.CHECKPOINTING)  # fmt: skip

    def starts() -> list[str]:
        found = [line.split()[2] for line in log.read_text().splitlines() if line.startswith("start")]
        log.unlink()
        return found

    assert {t.source for t in parallel_search().trials} == {"done"}
    assert starts() == ["0", "0"]
    assert {t.source for t in parallel_search().trials} == {"cached"} and not log.exists()
    with forcing(["par.trial"]):
        assert {t.source for t in parallel_search().trials} == {"done"}
    assert starts() == ["0", "0"]  # retrained in the workers, from epoch 0 (not resumed)
