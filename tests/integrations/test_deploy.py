"""Scheduled deployments: ``python -m pipeline serve`` against a real ``prefect server start``
on 127.0.0.1, scheduled runs observed through the API, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline import Store
from pipeline.errors import ConfigError
from pipeline.integrations.deploy import Cron, Interval, Schedule, require_server, schedule_of
from tests.prefect_reads import task_states

ROOT = Path(__file__).resolve().parents[2]
FLOW = "tests.integrations.served_flow:tiny"


def test_schedules_are_validated_policies():
    assert schedule_of(None, 30) == Interval(30) and schedule_of("0 3 * * *", None) == Cron("0 3 * * *")
    assert schedule_of(None, None) == Schedule() and Schedule().serve_args() == {}
    assert Interval(2.5).serve_args() == {"interval": 2.5}
    with pytest.raises(ConfigError, match="not both"):
        schedule_of("* * * * *", 5)
    with pytest.raises(ConfigError, match="seconds > 0"):
        Interval(0)
    with pytest.raises(ConfigError, match="'every day' is not a valid cron"):
        Cron("every day")


def test_serving_refuses_the_ephemeral_server_by_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), PIPELINE_SERVER="ephemeral")
    cmd = [sys.executable, "-m", "pipeline", "serve", "--interval", "5", "--flow", FLOW, "--store", str(tmp_path / "s")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "the ephemeral one runs none" in done.stderr and "Traceback" not in done.stderr
    assert require_server("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200/api"


def _runs(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
    )


def finished_runs(client, deployment_name, proc, log, *, count=2, timeout=300.0):
    """The served deployment and its first ``count`` finished runs, once there are (the
    serving process ``proc`` must keep running meanwhile; ``log`` is its output)."""
    deadline, deployment, done = time.monotonic() + timeout, None, []
    while len(done) < count:
        assert time.monotonic() < deadline, f"fewer than {count} finished runs:\n{log.read_text()}"
        assert proc.poll() is None, log.read_text()
        if deployment is None:
            try:
                deployment = client.read_deployment_by_name(deployment_name)
            except Exception:  # not created yet (ObjectNotFound)
                time.sleep(0.5)
                continue
        done = [r for r in _runs(client, deployment.id) if r.state and r.state.is_final()]
        time.sleep(0.5)
    return deployment, done[:count]


@pytest.mark.slow
def test_served_flow_runs_on_its_interval_the_second_run_fully_cached_and_sigterm_stops_it(tmp_path, prefect_api):
    from prefect.client.orchestration import get_client

    name = f"every-3s-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_RUNNER_POLL_FREQUENCY="1")
    cmd = [sys.executable, "-m", "pipeline", "serve", "--interval", "3", "--flow", FLOW, "--set", "x=3",
           "--set", "k=2", "--store", str(tmp_path / "store"), "--name", name]  # fmt: skip
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deployment, done = finished_runs(client, f"served-tiny/{name}", proc, tmp_path / "serve.log", timeout=240)
            first, second = done[:2]
            assert first.state.is_completed() and second.state.is_completed(), (first.state, second.state)
            assert first.parameters == second.parameters == {"params": {"x": 3, "k": 2}}
            assert deployment.schedules and deployment.schedules[0].schedule.interval.total_seconds() == 3
            assert task_states(first.id, expected=2) == {"square": ["Completed"], "plus": ["Completed"]}
            assert task_states(second.id, expected=2) == {"square": ["Cached"], "plus": ["Cached"]}  # fully cached

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
            assert client.read_deployment(deployment.id).paused  # its schedule paused on shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    store = Store(tmp_path / "store")
    results = {m.stage: m for m in store.manifests()}
    assert set(results) == {"square", "plus"} and results["square"].params["x"]["repr"] == "3"


@pytest.mark.slow
def test_prefect_yaml_deploys_the_pipeline_to_a_process_work_pool(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    pool = subprocess.run([*prefect, "work-pool", "create", "pipeline-process", "--type", "process", "--overwrite"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run([*prefect, "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("ml-pipeline/nightly")
        on_demand = client.read_deployment_by_name("ml-pipeline/on-demand")
    assert nightly.entrypoint == on_demand.entrypoint == "flows.ml_pipeline.ml_pipeline"
    assert nightly.work_pool_name == on_demand.work_pool_name == "pipeline-process"
    assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"] and not on_demand.schedules
    assert nightly.job_variables == {"env": {"PIPELINE_STORE": "data/checkpoints"}}
    assert nightly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
