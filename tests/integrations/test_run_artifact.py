"""Each flow run that calls stages publishes a table artifact of its run record (stage, key,
hit/miss, seconds, time saved), on a real Prefect server, read back through its API and seen
in the Prefect UI in headless Chromium — for a user's own flow and for `pipeline run`."""

from __future__ import annotations

import json

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from pipeline import Store, stage, use_store
from pipeline.history import find_run
from pipeline.integrations.run_artifact import run_rows

pytestmark = pytest.mark.usefixtures("prefect_api")


@stage
def double(x: int) -> int:
    return 2 * x


@stage
def add(a: int, b: int) -> int:
    return a + b


@flow(name="My Own Flow")
def my_flow(x: int = 3) -> int:
    return add(double(x), double.submit(x + 1).result())


@flow(name="breaks-after-a-stage")
def breaks(x: int = 3) -> int:
    double(x)
    raise ValueError("boom")


def run_artifacts(flow_run_id):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [a for a in found if a.key and a.key.startswith("run-")]


def expected_rows(store: Store, run_id: str) -> list[tuple]:
    """The store's run record, as the rows should show it."""
    summary = store.runs.summary(run_id)
    assert summary is not None, "no run record in the store"
    return [(e["stage"], e["key"][5:17], "hit" if e["hit"] else "miss", round(e["seconds"], 3)) for e in
            summary["stages"]]  # fmt: skip


def as_tuples(rows) -> list[tuple]:
    return [(r["stage"], r["key"], r["result"], r["seconds"]) for r in rows]


def test_a_users_own_flow_publishes_its_run_record(tmp_path):
    store = Store(tmp_path / "store")
    with use_store(store):
        cold = my_flow(return_state=True)
        warm = my_flow(return_state=True)
    for state, result in ((cold, "miss"), (warm, "hit")):
        run_id = str(state.state_details.flow_run_id)
        (artifact,) = run_artifacts(run_id)
        assert artifact.key == "run-my-own-flow" and artifact.type == "table"
        rows = json.loads(artifact.data)
        assert as_tuples(rows) == expected_rows(store, run_id)
        assert sorted(r["stage"] for r in rows) == ["add", "double", "double"]
        assert {r["result"] for r in rows} == {result}
        record = find_run(store, run_id)  # the run record exists for a user's own flow, not "incomplete"
        assert record.status == "completed" and record.hits == (3 if result == "hit" else 0)
        assert record.params == {"x": 3} and record.flow == "tests.integrations.test_run_artifact:my_flow"
        assert f"{record.hits} cached, {record.misses} computed" in artifact.description
        assert [r["saved s"] for r in rows] == [round(s.saved, 3) for s in record.stages]
    assert my_flow.on_completion_hooks == [] and my_flow.on_failure_hooks == []  # hooks do not pile up


def test_a_failed_flow_run_publishes_what_ran(tmp_path):
    store = Store(tmp_path / "store")
    with use_store(store):
        state = breaks(return_state=True)
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)
    (artifact,) = run_artifacts(run_id)
    assert as_tuples(json.loads(artifact.data)) == expected_rows(store, run_id)
    assert find_run(store, run_id).status == "failed" and "(failed)" in artifact.description


def test_a_pipeline_run_publishes_its_run_record_and_the_ui_shows_it(tmp_path, prefect_api):
    from pipeline.integrations.runner import run_flow
    from tests.cli.test_prefect_side import page_text

    store = Store(tmp_path / "store")
    run_flow("tests.integrations.test_run_artifact:my_flow", {"x": 5}, store)
    report = run_flow("tests.integrations.test_run_artifact:my_flow", {"x": 5}, store)
    (artifact,) = run_artifacts(report.run_id)
    rows = json.loads(artifact.data)
    assert rows == run_rows(report.summary) and as_tuples(rows) == expected_rows(store, report.run_id)
    assert report.summary["flow"] == "tests.integrations.test_run_artifact:my_flow"

    ui = prefect_api.removesuffix("/api")
    page = page_text(f"{ui}/artifacts/artifact/{artifact.id}")
    assert "run-my-own-flow" in page, page[:2000]
    for r in rows:
        assert r["key"] in page and r["stage"] in page
    assert page.count("hit") >= len(rows)


def test_rows_of_a_summary():
    summary = {"stages": [
        {"stage": "a", "key": "xxh3:" + "1" * 32, "hit": True, "seconds": 0.01, "compute_seconds": 2.5, "bytes": 2048},
        {"stage": "b", "key": "xxh3:" + "2" * 32, "hit": False, "seconds": 1.23456, "compute_seconds": 1.2, "bytes": 5},
    ]}  # fmt: skip
    assert run_rows(summary) == [
        {"stage": "a", "key": "1" * 12, "result": "hit", "seconds": 0.01, "saved s": 2.49, "size": "2.0 KB"},
        {"stage": "b", "key": "2" * 12, "result": "miss", "seconds": 1.235, "saved s": 0.0, "size": "5 B"},
    ]


def test_mapped_and_submitted_stages_make_one_record_and_one_artifact(tmp_path):
    from tests.cli.flows import fan_out

    store = Store(tmp_path / "store")
    with use_store(store):
        state = fan_out(n=4, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    (artifact,) = run_artifacts(run_id)
    rows = json.loads(artifact.data)
    assert len(rows) == 4 + 4 + 1 + 1 and as_tuples(rows) == expected_rows(store, run_id)
