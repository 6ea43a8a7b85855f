"""The Prefect side of CLI runs, against a real local server: killed runs end Crashed, the UI
serves the run page with its Cached task runs, searches publish their trial table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.test_cli import ROOT, invoke
from tests.prefect_reads import final_task_runs

pytestmark = pytest.mark.usefixtures("prefect_api")


def flow_runs(flow: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))


def task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )


@pytest.mark.slow
def test_a_killed_run_is_crashed_after_the_next_run(tmp_path):
    store = str(tmp_path / "store")
    command = [sys.executable, "-m", "pipeline", "run", "--flow", "tests.cli.flows:sleepy", "--store", store]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not [r for r in flow_runs(flow="sleepy") if r.state and r.state.is_running()]:
            assert proc.poll() is None and time.monotonic() < deadline, "the flow run never started"
            time.sleep(0.3)
        (killed,) = [r for r in flow_runs(flow="sleepy") if r.state.is_running()]
        while not [t for t in task_runs(killed.id) if t.state and t.state.is_running()]:
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)
    (still,) = [r for r in flow_runs(flow="sleepy") if r.id == killed.id]
    assert still.state.is_running()  # nobody told the API: this is what stayed Running for ever

    nxt = invoke("run", "--flow", "tests.cli.flows:chain", "--store", store)
    assert nxt.exit_code == 0, nxt.output
    assert f"marked 1 killed flow run(s) Crashed: {killed.id}" in nxt.output
    (after,) = [r for r in flow_runs(flow="sleepy") if r.id == killed.id]
    assert after.state.is_crashed() and f"pid {proc.pid}" in after.state.message
    assert [t.state.type.value for t in task_runs(killed.id)] == ["CRASHED"]
    assert "marked" not in invoke("run", "--flow", "tests.cli.flows:chain", "--store", store).output  # once


def page_text(url: str) -> str:
    """The text a real headless Chromium shows at ``url`` once its scripts ran."""
    import html
    import re
    import shutil
    import tempfile

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium (apt-get install -y chromium) for the UI test")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=20000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    body = done.stdout[done.stdout.find("<body") :]
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


@pytest.mark.slow
def test_the_printed_link_opens_the_run_in_the_ui_with_cached_task_runs(tmp_path, prefect_api):
    from prefect.utilities.urls import url_for

    from pipeline.integrations.server import serves_ui

    assert serves_ui(prefect_api)  # the server tests and CLI runs start (spawn_server) serves the UI

    store = ["--store", str(tmp_path / "store"), "--flow", "tests.cli.flows:chain", "--set", "n=7"]
    assert invoke("run", *store).exit_code == 0
    warm = invoke("run", *store)
    assert warm.exit_code == 0 and "4 cached, 0 computed" in warm.output, warm.output
    run_id = warm.output.split("run ", 1)[1].split()[0]
    (run,) = [r for r in flow_runs(flow="chain") if str(r.id) == run_id]
    link = url_for(run)  # what Prefect prints as "View at ..."
    assert link.endswith(f"/runs/flow-run/{run_id}")
    page = page_text(link)
    assert run.name in page and "Completed" in page and "4 Task runs" in page, page[:1000]
    assert "Can't connect to Server API" not in page
    tasks = final_task_runs(run.id, expected=4)
    assert sorted(t.state.name for t in tasks) == ["Cached"] * 4
    for t in tasks:
        shown = page_text(url_for(t))
        assert f"{t.name} Cached" in shown, shown[:1000]


@pytest.mark.slow
def test_liveness_tags_are_on_the_flow_run_only(tmp_path):
    """The flow run carries the tags the sweep of killed runs reads; its stage task runs
    don't (each tag would cost a task run two concurrency-slot round trips to the API)."""
    from pipeline.integrations.liveness import TAG, Process

    store = ["--store", str(tmp_path / "store"), "--flow", "tests.cli.flows:chain", "--set", "n=9"]
    for _ in range(2):  # computed, then cached
        done = invoke("run", *store)
        assert done.exit_code == 0, done.output
        run_id = done.output.split("run ", 1)[1].split()[0]
        (run,) = [r for r in flow_runs(flow="chain") if str(r.id) == run_id]
        assert TAG in run.tags and Process.from_tags(list(run.tags)) is not None
        tasks = final_task_runs(run.id, expected=4)
        assert len(tasks) == 4 and all(not t.tags for t in tasks), [t.tags for t in tasks]
    assert sorted(t.state.name for t in tasks) == ["Cached"] * 4


@pytest.mark.slow
def test_a_cli_process_leaves_its_flow_run_task_runs_and_artifact_in_the_api(tmp_path):
    """``python -m pipeline run`` as its own process (it exits without the interpreter's
    teardown): what it sent the API at exit — the task runs' Cached states, the run's table
    artifact, its logs — is all there."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from tests.cli.test_cli import ROOT

    cmd = [sys.executable, "-m", "pipeline", "run", "--flow", "tests.cli.flows:chain", "--set", "n=11",
           "--store", str(tmp_path / "store")]  # fmt: skip
    for expected in ("0 cached, 4 computed", "4 cached, 0 computed"):
        env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO")  # the tests' default is WARNING
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and expected in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    (run,) = [r for r in flow_runs(flow="chain") if str(r.id) == run_id]
    assert run.state.is_completed()
    assert sorted(t.state.name for t in final_task_runs(run.id, expected=4)) == ["Cached"] * 4
    deadline = time.monotonic() + 30  # the server writes what it was sent asynchronously
    with get_client(sync_client=True) as client:
        of_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        assert [a.key for a in client.read_artifacts(artifact_filter=of_run)] == ["run-chain"]
        while True:  # the last lines were sent as the process exited
            logs = [
                g.message for g in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            ]
            if any("Finished in state Completed" in m for m in logs):
                break
            assert time.monotonic() < deadline, logs
            time.sleep(0.5)
