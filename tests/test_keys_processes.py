"""One key in every process: the same stage's key, compared as strings, computed in this
process, after a cloudpickle round trip, in a Prefect process-pool worker, in a Dask worker
(LocalCluster, 2 worker processes), under ``status`` planning, and with the flow started as
``python my_flow.py`` (module ``__main__``) or ``python -m pipeline run --flow``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import cloudpickle
import pytest

from pipeline import StageCache, Store

ROOT = Path(__file__).resolve().parents[1]

FLOW = '''
import sys
from dataclasses import dataclass

from prefect import flow, task
from prefect.task_runners import ProcessPoolTaskRunner

from pipeline import StageCache, stage

THRESHOLD = 0.5
calls = []


@dataclass(frozen=True)
class Config:
    scale: float = 2.0


def helper(xs):
    return [v * 2 for v in xs if v > THRESHOLD]


@stage
def clean(xs, config=Config()):
    """Keep the values above THRESHOLD, doubled and scaled."""
    calls.append(len(xs))
    return [v * config.scale for v in helper(xs)]


def key_of(fn, store, xs):
    return StageCache(store).wrap(fn, name="clean").key(xs).key


@task
def key_in_worker(fn, store, xs):
    return key_of(fn, store, xs)


@flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
def keys_in_processes(store: str):
    fn = clean.__pipeline_stage__.fn
    return [f.result() for f in [key_in_worker.submit(fn, store, [1.0, 2.0]) for _ in range(2)]]


@flow
def pipeline_flow():
    return clean([1.0, 2.0])


def keys_in_dask(store):
    from distributed import Client, LocalCluster

    fn = clean.__pipeline_stage__.fn
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            workers = list(client.scheduler_info()["workers"])
            futures = [client.submit(key_of, fn, store, [1.0, 2.0], workers=[w], pure=False) for w in workers]
            return client.gather(futures)


if __name__ == "__main__":
    mode, store = sys.argv[1], sys.argv[2]
    if mode == "key":
        print(key_of(clean.__pipeline_stage__.fn, store, [1.0, 2.0]))
    elif mode == "pool":
        print(" ".join(keys_in_processes(store)))
    elif mode == "dask":
        print(" ".join(keys_in_dask(store)))
    elif mode == "run":
        pipeline_flow()
'''


@pytest.fixture
def project(tmp_path):
    """A flow module ``keyflow_<id>.py`` on disk, importable from this process."""
    name = f"keyflow_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(FLOW))
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(tmp_path))


def here(module, store) -> str:
    return module.key_of(module.clean.__pipeline_stage__.fn, store, [1.0, 2.0])


def script(module, *args: str, seed: str = "0", timeout: float = 240) -> str:
    """Run the flow file as ``python keyflow.py ...`` (its module is ``__main__``)."""
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, module.__file__, *args],
        cwd=Path(module.__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_key_survives_a_cloudpickle_round_trip(project, tmp_path):
    fn = project.clean.__pipeline_stage__.fn
    cloudpickle.register_pickle_by_value(project)  # shipped by value, as __main__ functions are
    try:
        shipped = cloudpickle.loads(cloudpickle.dumps(fn))
    finally:
        cloudpickle.unregister_pickle_by_value(project)
    assert shipped is not fn and shipped.__code__.co_filename != fn.__code__.co_filename
    store = Store(tmp_path / "store")
    assert project.key_of(shipped, store, [1.0, 2.0]) == here(project, store)

    def local(xs, k=3):  # a local function: always shipped by value
        return [x * k for x in xs]

    again = cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(cloudpickle.dumps(local))))
    assert StageCache(store).wrap(again, name="local").key([1]).key == StageCache(store).wrap(local).key([1]).key


@pytest.mark.parametrize("seed", ["0", "4242"])
def test_python_my_flow_py_gives_the_key_of_the_imported_module(project, tmp_path, seed):
    store = str(tmp_path / "store")
    assert script(project, "key", store, seed=seed) == here(project, store)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_process_pool_worker_computes_the_same_key(project, tmp_path):
    store = str(tmp_path / "store")
    keys = script(project, "pool", store).split()
    assert keys == [here(project, store)] * 2


@pytest.mark.slow
def test_a_dask_worker_computes_the_same_key(project, tmp_path):
    pytest.importorskip("distributed")
    store = str(tmp_path / "store")
    keys = script(project, "dask", store).split()
    assert keys == [here(project, store)] * 2


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_status_planning_and_the_cli_hit_what_python_my_flow_py_committed(project, tmp_path):
    from pipeline.integrations.runner import plan_flow

    store_dir = tmp_path / "store"
    env = dict(os.environ, PIPELINE_STORE=str(store_dir), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, project.__file__, "run", str(store_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    committed = [m.key for m in Store(store_dir).manifests("clean")]
    assert committed == [here(project, Store(store_dir))]

    ref = f"{project.__name__}:pipeline_flow"
    statuses = plan_flow(ref, None, Store(store_dir))
    assert [(s.stage, s.state, s.key) for s in statuses] == [("clean", "cached", committed[0])]

    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    cli = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--flow", ref, "--store", str(store_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "1 cached, 0 computed" in cli.stdout
