"""MLflow sink (the ``[mlflow]`` extra): one MLflow run per training stage key.

- tags ``pipeline.stage``, ``pipeline.key`` (the stage key), ``pipeline.run_id``, ``pipeline.store``;
- metrics every epoch with ``step = epoch``;
- ``checkpoint.<step>`` tags with the checkpoint's URI while it exists (pruned ones are
  removed at the end), ``checkpoint.best`` / ``checkpoint.newest``;
- the hyperparameters as params; the final model (the newest checkpoint's model entries) as
  artifacts under ``model/`` (an MLflow sklearn model when it is a scikit-learn estimator,
  else ``<entry>.joblib``), and the early-stopping best one under ``best_model/``.

A training run resumed after a crash continues its unfinished MLflow run.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.request
from typing import Any

from ..errors import ConfigError
from ..training.progress import ProgressEvent
from .base import Sink, TrainingResult, TrainingRun, checkpoint_uri, flat
from .settings import TrackingSettings

_PARAM_MAX = 6000  # MLflow's limit on a param value


class MlflowSink(Sink):
    """``MlflowSink("sqlite:///mlflow.db")``, ``MlflowSink("http://127.0.0.1:5000")``; no URI:
    MLflow's own default (``MLFLOW_TRACKING_URI`` or ``./mlflow.db``)."""

    name = "mlflow"
    background = True

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "pipeline",
        *,
        artifacts: str | None = None,
        log_model: bool = True,
        timeout: float = 5.0,
    ) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError("the MLflow sink needs the [mlflow] extra: pip install 'pipeline[mlflow]'") from None
        self.uri = uri or None
        self.experiment = experiment
        self.artifacts = artifacts or _beside_database(self.uri)
        """Artifact location of a new experiment (default: the server's, or next to a SQLite file)."""
        self.log_model = log_model
        self.timeout = timeout
        self.client = MlflowClient(tracking_uri=self.uri)
        self._experiment_id: str | None = None
        self._runs: dict[tuple[str, str], str] = {}
        self._probed = False

    @classmethod
    def from_settings(cls, settings: TrackingSettings) -> MlflowSink:
        return cls(settings.mlflow_tracking_uri or None, settings.mlflow_experiment)

    def run_id(self, run: TrainingRun) -> str | None:
        """The MLflow run id a training run logs to (None before it started)."""
        return self._runs.get(run.ident)

    # -- hooks ---------------------------------------------------------------------------------
    def start(self, run: TrainingRun) -> None:
        self._probe()
        experiment = self._experiment()
        existing = self._unfinished(experiment, run) if run.resumed_from else None
        if existing is not None:
            self.client.update_run(existing, status="RUNNING")
            self.client.set_tag(existing, "pipeline.resumed_from", str(run.resumed_from))
            self._runs[run.ident] = existing
            return
        tags = {
            "pipeline.stage": run.stage,
            "pipeline.key": run.key,
            "pipeline.run_id": run.run_id,
            "pipeline.store": run.store.url if run.store is not None else "",
        }
        created = self.client.create_run(experiment, tags=tags, run_name=f"{run.stage} {run.short_key}")
        self._runs[run.ident] = created.info.run_id

    def epoch(self, run: TrainingRun, event: ProgressEvent) -> None:
        from mlflow.entities import Metric, RunTag

        ml_run = self._runs[run.ident]
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, event.epoch) for k, v in event.metrics.items()]
        metrics.append(Metric("epoch_seconds", float(event.seconds), now, event.epoch))
        tags = []
        if event.saved and run.store is not None:
            tags.append(RunTag(f"checkpoint.{event.epoch}", checkpoint_uri(run.store, run.stage, run.key, event.epoch)))
        self.client.log_batch(ml_run, metrics=metrics, tags=tags)

    def finish(self, result: TrainingResult) -> None:
        from mlflow.entities import Param, RunTag

        run = result.run
        ml_run = self._runs.pop(run.ident)
        logged = self.client.get_run(ml_run).data
        params = [Param(k, _value(v)) for k, v in flat(result.hyperparameters).items() if k not in logged.params]
        kept = {c.step: c for c in result.checkpoints}
        tags = [RunTag(f"checkpoint.{s}", c.uri) for s, c in kept.items()]
        tags.append(RunTag("pipeline.epochs", str(result.epochs)))
        tags.append(RunTag("pipeline.stopped_early", str(result.stopped).lower()))
        if result.newest is not None:
            tags.append(RunTag("checkpoint.newest", str(result.newest.step)))
        if result.best_step is not None:
            tags.append(RunTag("checkpoint.best", str(result.best_step)))
        self.client.log_batch(ml_run, params=params, tags=tags)
        for tag in logged.tags:
            if tag.startswith("checkpoint.") and tag.partition(".")[2].isdigit() and int(tag[11:]) not in kept:
                self.client.delete_tag(ml_run, tag)  # pruned by the keep policy: it no longer exists
        if self.log_model and result.newest is not None:
            self._log_models(ml_run, result, result.newest.step, "model")
            if result.best_step is not None and result.best_step != result.newest.step and result.best_step in kept:
                self._log_models(ml_run, result, result.best_step, "best_model")
        self.client.set_terminated(ml_run, status="FINISHED")

    def abandon(self, run: TrainingRun) -> None:
        ml_run = self._runs.pop(run.ident, None)
        if ml_run is not None:
            self.client.set_terminated(ml_run, status="FAILED")

    # -- helpers -------------------------------------------------------------------------------
    def _probe(self) -> None:
        """A server that does not answer fails fast here, not after MLflow's minutes of retries."""
        if self._probed:
            return
        uri = self.client.tracking_uri
        if uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=self.timeout) as r:
                    r.read()
            except OSError as e:
                raise ConnectionError(f"MLflow server {uri} does not answer ({e})") from None
        self._probed = True

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment, self.artifacts)
                except Exception:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _unfinished(self, experiment: str, run: TrainingRun) -> str | None:
        filter_string = (
            f"tags.`pipeline.key` = '{run.key}' and tags.`pipeline.stage` = '{_quote(run.stage)}' "
            "and attributes.status != 'FINISHED'"
        )
        found = self.client.search_runs([experiment], filter_string, max_results=1, order_by=["start_time DESC"])
        return found[0].info.run_id if found else None

    def _log_models(self, ml_run: str, result: TrainingResult, step: int, path: str) -> None:
        models = result.models(step)
        if not models:
            return
        with tempfile.TemporaryDirectory(prefix="pipeline-mlflow-") as tmp:
            root = os.path.join(tmp, path)
            for name, (kind, payload) in models.items():
                target = root if len(models) == 1 else os.path.join(root, name)
                if kind == "sklearn.estimator":
                    _save_sklearn(payload, target)
                else:
                    import joblib

                    os.makedirs(target, exist_ok=True)
                    joblib.dump(payload, os.path.join(target, f"{name}.joblib"))
            self.client.log_artifacts(ml_run, root, path)
        self.client.set_tag(ml_run, f"{path}.step", str(step))


def _save_sklearn(model: Any, folder: str) -> None:
    """An MLflow sklearn model (``mlflow.sklearn.load_model("runs:/<id>/model")``), written
    without MLflow's pip-requirement inference (a subprocess that imports the model)."""
    import mlflow.sklearn
    import sklearn

    mlflow.sklearn.save_model(model, folder, pip_requirements=[f"scikit-learn=={sklearn.__version__}"])


def _beside_database(uri: str | None) -> str | None:
    """``sqlite:///dir/mlflow.db`` -> ``file:///dir/mlartifacts`` (MLflow's default is ./mlruns
    of the working directory); None for other URIs."""
    if uri and uri.startswith("sqlite:///"):
        from pathlib import Path

        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text[:_PARAM_MAX]


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


__all__ = ["MlflowSink"]
