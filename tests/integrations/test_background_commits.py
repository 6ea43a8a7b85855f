"""Stages of a flow run commit in the background; the flow run joins every commit before its
final state (pipeline.integrations.commit_join): failures surface there, kills lose only what
was not yet committed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from pipeline import PipelineError, Store
from pipeline.integrations.runner import run_flow
from pipeline.store import layout

FLOW = """
import os
import time

import numpy as np
import pandas as pd
from prefect import flow

from pipeline import stage


def log(name):
    with open(os.environ["STAGE_LOG"], "a") as f:
        f.write(name + "\\n")


@stage
def small(n: int = 10):
    log("small")
    return {"n": n}


@stage
def big(meta, rows: int = 1000, cols: int = 4):
    log("big")
    rng = np.random.default_rng(meta["n"])
    return pd.DataFrame(rng.standard_normal((rows, cols)), columns=[f"c{i}" for i in range(cols)])


@stage
def after(df):
    log("after")
    time.sleep(float(os.environ.get("AFTER_SLEEP", "0")))
    return df.describe()


@stage
def summary(stats):
    log("summary")
    return {"mean": float(stats.loc["mean"].sum())}


@flow
def chain(rows: int = 1000, cols: int = 4):
    return summary(after(big(small(), rows=rows, cols=cols)))
"""

STAGES = ("small", "big", "after", "summary")


@pytest.fixture
def chain(flow_module):
    return flow_module(FLOW)


def _keys(store: Store) -> dict[str, str]:
    return {m.stage: m.key for m in store.manifests()}


def _object_dirs(store: Store) -> dict[str, str]:
    """The fan-out directory of each stage's objects."""
    from pipeline.store.tree import leaves

    return {m.stage: layout.object_path(leaf.object, leaf.suffix).rsplit("/", 1)[0]
            for m in store.manifests() for leaf in leaves(m.outputs)}  # fmt: skip


def _last_flow_run_state(flow_name: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
        return runs[0].state.type.value


def test_a_failed_commit_fails_the_flow_run_at_its_join_and_a_rerun_computes_only_that_stage(chain, tmp_path):
    reference = Store(tmp_path / "reference")
    run_flow(chain.ref("chain"), None, reference)
    chain.executed()
    dirs = _object_dirs(reference)
    blocked = dirs["big"]
    assert [s for s, d in dirs.items() if d == blocked] == ["big"], "another output shares the directory"

    store = Store(tmp_path / "store")
    in_the_way = store.url + "/" + blocked
    with open(in_the_way, "w") as f:  # a file where big's object directory must go: its commit fails
        f.write("not a directory")
    with pytest.raises(PipelineError) as failed:
        run_flow(chain.ref("chain"), None, store)
    message = str(failed.value)
    assert "1 stage result was not committed, so not cached" in message
    assert "stage 'big'" in message and "in the way" in message
    assert _last_flow_run_state("chain") == "FAILED"
    # big's task run completed before its commit ran: the stages after it ran and committed,
    # under the keys a run whose commits all succeed gives them
    assert chain.executed() == list(STAGES)
    assert _keys(store) == {s: k for s, k in _keys(reference).items() if s != "big"}
    assert store.verify().clean

    os.unlink(in_the_way)
    again = run_flow(chain.ref("chain"), None, store)
    assert chain.executed() == ["big"]
    assert again.summary["hits"] == 3 and _keys(store) == _keys(reference)


def test_a_flow_run_reports_completed_with_every_result_committed(chain, tmp_path):
    store = Store(tmp_path / "store")
    report = run_flow(chain.ref("chain"), {"rows": 200_000}, store)
    assert report.status == "completed"
    assert set(_keys(store)) == set(STAGES)  # all committed when the run returned
    assert [e["stage"] for e in report.summary["stages"]] == list(STAGES)  # events in call order
    assert all(e["bytes"] > 0 for e in report.summary["stages"])


@pytest.mark.parametrize("attempts", [3])
def test_sigkill_while_a_commit_is_in_flight_loses_only_that_result(chain, tmp_path, attempts):
    chain.ref("chain")
    env = chain.cli_env(AFTER_SLEEP="60")
    for attempt in range(attempts):
        store_dir = tmp_path / f"killstore{attempt}"
        # a 320 MB frame: its commit takes a while
        cmd = chain.cli("chain", store_dir, "--set", "rows=1000000", "--set", "cols=40")
        proc = chain.start(cmd, env)
        deadline = time.monotonic() + 180
        chain.wait_logged("after", proc, deadline, "the run never reached the stage after big", poll=0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # big returned, its commit is (most likely) in flight
        proc.wait()
        proc.stdout.close()
        assert chain.executed() == ["small", "big", "after"]
        store = Store(store_dir)
        report = store.verify()
        assert (report.corrupt, report.missing, report.bad_manifests) == (0, 0, 0), report
        if "big" not in _keys(store):
            break
    else:
        pytest.fail(f"big's commit ended before the kill in all {attempts} attempts: the test tests nothing")
    assert set(_keys(store)) == {"small"}  # committed before: kept
    env["AFTER_SLEEP"] = "0"
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert chain.executed() == ["big", "after", "summary"]
    assert "1 cached, 3 computed" in done.stdout
    assert Store(store_dir).verify().clean
