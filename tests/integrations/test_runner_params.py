"""A CLI run hands JSON parameters to the Prefect API as they are (no FastAPI import on a
warm run); any other parameter still goes through Prefect's own serialisation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from pipeline.integrations.runner import _plain_parameters

ROOT = Path(__file__).resolve().parents[2]


@flow
def takes(params: dict, label: str = "x", extra: object = None) -> None:
    return None


JSON_PARAMS = [
    {"params": {"data": {"source": "csv", "test_size": 0.2}, "train": {"epochs": 30, "lr": 1e-3, "nan": float("nan")}}},
    {"params": {"a": [1, 2.5, None, True, {"b": "c"}]}, "label": "y"},
    {"params": {}, "label": ""},
]
OTHER_PARAMS = [
    {"params": {"t": (1, 2)}},  # a tuple: Prefect's encoder makes it a list
    {"params": {"n": np.float64(0.5)}, "extra": np.arange(3)},
    {"params": {1: "int key"}},
    {"params": {"p": Path("data/raw")}},
]


@pytest.mark.parametrize("params", JSON_PARAMS + OTHER_PARAMS)
def test_the_api_gets_what_prefect_would_send(params):
    prefect_way = takes.serialize_parameters(params)
    with _plain_parameters(takes):
        ours = takes.serialize_parameters(params)
    assert json.dumps(ours, sort_keys=True, default=repr) == json.dumps(prefect_way, sort_keys=True, default=repr)
    assert "serialize_parameters" not in vars(takes)  # the flow object is as it was after the run


@pytest.mark.usefixtures("prefect_api")
def test_a_run_records_its_parameters_without_importing_fastapi(tmp_path):
    """The flow run's parameters in the API are the flow's; FastAPI is not imported for them."""
    code = (
        "import sys, json\n"
        "from pipeline.integrations.runner import run_flow\n"
        "from pipeline.store import Store\n"
        f"report = run_flow('tests.cli.flows:chain', {{'n': 6, 'clip': 2.5, 'epochs': 3}}, Store({str(tmp_path)!r}))\n"
        "print(json.dumps({'run': report.run_id, 'fastapi': 'fastapi' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["fastapi"] is False
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(out["run"])
    assert run.parameters == {"n": 6, "clip": 2.5, "epochs": 3}


def test_runs_have_no_heartbeat_and_otherwise_the_same_settings():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    from pipeline.integrations.runner import _quiet_engine

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 180}):  # Prefect's default
        before = get_current_settings()
        with _quiet_engine():
            during = get_current_settings()
            assert during.flows.heartbeat_frequency is None
            assert during.model_dump(exclude={"flows"}) == before.model_dump(exclude={"flows"})
            assert during.flows.model_dump(exclude={"heartbeat_frequency"}) == before.flows.model_dump(
                exclude={"heartbeat_frequency"}
            )
        assert get_current_settings() is before
