"""Prefect artifacts of a training stage, published on a real Prefect server and read back
through its API: the per-epoch table and the checkpoints note, on the stage's task run."""

from __future__ import annotations

import json

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from pipeline import Store, stage, use_store
from pipeline.integrations.training_artifacts import PrefectArtifactSink, checkpoint_note, epoch_rows
from pipeline.tracking import TrackingSettings, configured_tracking, tracking

from .training import VAL_LOSS, fit

pytestmark = pytest.mark.usefixtures("prefect_api")


@stage(name="Train SGD")
def train_sgd(alpha: float, epochs: int, patience: int) -> list:
    return fit(alpha, epochs, patience)


@flow(name="tracking-artifacts")
def trainer(alpha: float = 0.01) -> list:
    return train_sgd(alpha, 8, 2)


def artifacts_of(flow_run_id):
    """The training artifacts of a flow run (its run table, `run-<flow>`, is the flow run's own)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        assert [a.task_run_id for a in found if a.key.startswith("run-")] == [None]
        found = [a for a in found if not a.key.startswith("run-")]
        task_runs = {a.task_run_id for a in found}
        return {a.key: a for a in found}, task_runs


def test_a_training_stage_publishes_its_epochs_table_and_checkpoint_note(tmp_path):
    store = Store(tmp_path / "store")
    sink = PrefectArtifactSink()
    with use_store(store), tracking(sink) as tracker:
        state = trainer(return_state=True)
    assert state.is_completed() and tracker.failed == {}
    found, task_runs = artifacts_of(state.state_details.flow_run_id)
    assert set(found) == {"train-sgd-epochs", "train-sgd-checkpoints"}
    assert len(task_runs) == 1 and None not in task_runs  # attached to the stage's task run
    table = found["train-sgd-epochs"]
    assert table.type == "table"
    rows = json.loads(table.data)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]  # early stop after 5
    assert [r["val_loss"] for r in rows] == pytest.approx(VAL_LOSS[:5])
    assert [r["checkpoint"] for r in rows] == ["", "", "kept", "kept", "kept"]
    assert [r["best"] for r in rows] == ["", "", "best", "", ""]
    (manifest,) = store.manifests("Train SGD")
    note = found["train-sgd-checkpoints"]
    assert note.type == "markdown"
    assert f"stage key: `{manifest.key}`" in note.data and "best epoch: 3" in note.data
    assert "epochs: 5 (stopped early)" in note.data
    for step in (3, 4, 5):
        assert f"| {step}{' (best)' if step == 3 else ''} | train_loss=" in note.data
        assert f"/checkpoints/Train_SGD-{store_dir_suffix(store)}/{manifest.key[5:]}/{step}.json`" in note.data
    assert "| 1 |" not in note.data  # pruned checkpoints are not listed


def store_dir_suffix(store: Store) -> str:
    from pipeline.store.layout import component as safe_name

    return safe_name("Train SGD").removeprefix("Train_SGD-")


def test_outside_a_prefect_run_the_sink_publishes_nothing(tmp_path):
    from .training import train

    sink = PrefectArtifactSink()
    with tracking(sink) as tracker:
        train(Store(tmp_path / "store"), epochs=3)
    assert sink.published == [] and tracker.failed == {}


def test_configured_prefect_sink(tmp_path):
    settings = TrackingSettings(sinks=("prefect",), root=str(tmp_path))
    with use_store(Store(tmp_path / "store")), configured_tracking(settings) as tracker:
        state = trainer(alpha=0.05, return_state=True)
    assert [type(s).__name__ for s in tracker.sinks] == ["PrefectArtifactSink"]
    found, _ = artifacts_of(state.state_details.flow_run_id)
    assert set(found) == {"train-sgd-epochs", "train-sgd-checkpoints"}


def test_table_and_note_of_a_run_without_surviving_checkpoints():
    from pipeline.tracking import TrainingResult, TrainingRun

    result = TrainingResult(TrainingRun("t", "xxh3:ab"), 2, False, ({"epoch": 1, "loss": 1.0}, {"epoch": 2}), {}, ())
    assert epoch_rows(result) == [{"epoch": 1, "loss": 1.0, "checkpoint": "", "best": ""},
                                  {"epoch": 2, "loss": None, "checkpoint": "", "best": ""}]  # fmt: skip
    assert "no checkpoint survives" in checkpoint_note(result)


def test_run_flow_feeds_the_sinks_the_environment_names(tmp_path, monkeypatch):
    from pipeline.integrations.runner import run_flow

    pytest.importorskip("tensorboardX")
    monkeypatch.setenv("PIPELINE_TRACKING_SINKS", "prefect,tensorboard")
    monkeypatch.setenv("PIPELINE_TRACKING_TENSORBOARD_DIR", str(tmp_path / "tb"))
    report = run_flow("tests.tracking.test_prefect_artifacts:trainer", {"alpha": 0.2}, Store(tmp_path / "store"))
    found, _ = artifacts_of(report.run_id)
    assert set(found) == {"train-sgd-epochs", "train-sgd-checkpoints"}
    assert len(list((tmp_path / "tb").glob("Train_SGD-*/*/events.out.tfevents.*"))) == 1
