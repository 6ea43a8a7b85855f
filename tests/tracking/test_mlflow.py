"""The MLflow sink against a real MLflow tracking store (SQLite), read back through MlflowClient;
one test against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline import Store
from pipeline.integrations.server import free_port
from pipeline.tracking import MlflowSink, checkpoint_uri, tracking
from pipeline.training import entries

from .training import Crash, train

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402


def runs_of(uri: str, experiment: str = "pipeline"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


@pytest.mark.slow
def test_params_metrics_per_epoch_checkpoint_tags_key_and_model(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = Store(tmp_path / "store")
    with tracking(MlflowSink(uri)) as tracker:
        outcome = train(store, alpha=0.01, epochs=8, patience=2)
    assert tracker.failed == {}
    client, runs = runs_of(uri)
    assert len(runs) == 1
    run = runs[0]
    key = outcome.manifest.key
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.stage"] == "train" and run.data.tags["pipeline.key"] == key
    assert run.data.params == {"alpha": "0.01", "epochs": "8", "optimizer.name": "sgd", "optimizer.momentum": "0.9"}
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.3), (4, 0.35), (5, 0.4)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4, 5]
    # the tags name exactly the checkpoints the store kept (LatestN(2) | BestK(1)): 3 (best), 4, 5
    steps = sorted(int(t.split(".")[1]) for t in run.data.tags if t.split(".")[-1].isdigit())
    assert steps == [3, 4, 5]
    for step in steps:
        uri_tag = run.data.tags[f"checkpoint.{step}"]
        assert uri_tag == checkpoint_uri(store, "train", key, step)
        assert store.manifest("train", key, step) is not None
    assert run.data.tags["checkpoint.best"] == "3" and run.data.tags["pipeline.stopped_early"] == "true"
    # the final model: an MLflow sklearn model equal to the newest checkpoint's; the best one beside it
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())  # beside the database
    model = mlflow.sklearn.load_model(f"{run.info.artifact_uri}/model")
    saved = entries.load(store, store.manifest("train", key, 5))["model"]  # (a small model: carried)
    assert (model.coef_ == saved.coef_).all()
    best = mlflow.sklearn.load_model(f"{run.info.artifact_uri}/best_model")
    assert (best.coef_ == entries.load(store, store.manifest("train", key, 3))["model"].coef_).all()


def test_a_resumed_training_continues_its_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = Store(tmp_path / "store")
    with tracking(MlflowSink(uri)), pytest.raises(Crash):
        train(store, epochs=6, crash_after=3)
    client, runs = runs_of(uri)
    assert [r.info.status for r in runs] == ["FAILED"]
    with tracking(MlflowSink(uri)):
        train(store, epochs=6)
    client, runs = runs_of(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["pipeline.resumed_from"] == "3"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_server_that_is_down_warns_once_and_training_finishes(tmp_path):
    sink = MlflowSink(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    store = Store(tmp_path / "store")
    with pytest.warns(UserWarning, match="tracking sink 'mlflow' failed in start") as caught:
        with tracking(sink) as tracker:
            first = train(store, epochs=4)
            second = train(store, alpha=0.02, epochs=4)
    assert not first.hit and not second.hit and len(first.value) == 4 and len(second.value) == 4
    assert sum("tracking sink" in str(w.message) for w in caught) == 1
    assert "does not answer" in tracker.failed["mlflow"]


@pytest.mark.slow
def test_against_a_real_mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"), start_new_session=True,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
    )  # fmt: skip
    # No server-side job runner (a second process importing MLflow alongside the server's own
    # start-up, for jobs no tracking sink asks for): the server answers in ~12 s, not ~25 s.
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        with tracking(MlflowSink(url, "served")) as tracker:
            outcome = train(Store(tmp_path / "store"), epochs=4)
        assert tracker.failed == {}
        client, runs = runs_of(url, "served")
        assert len(runs) == 1 and runs[0].data.tags["pipeline.key"] == outcome.manifest.key
        assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "val_loss")] == [1.0, 0.5, 0.3, 0.35]
        assert "model/MLmodel" in [a.path for a in client.list_artifacts(runs[0].info.run_id, "model")]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
