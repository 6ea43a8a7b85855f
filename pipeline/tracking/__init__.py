"""Tracking sinks: every Checkpointer's epochs, checkpoints and hyperparameters sent to
MLflow (``[mlflow]``), TensorBoard (``[tensorboard]``) or Prefect artifacts
(:mod:`pipeline.integrations.training_artifacts`), hooked on the per-epoch progress events
of :mod:`pipeline.training.progress`. Importable without Prefect, MLflow or tensorboardX.

::

    from pipeline.tracking import MlflowSink, TensorBoardSink, tracking

    with tracking(MlflowSink("sqlite:///mlflow.db"), TensorBoardSink("data/tensorboard")):
        ...train...

or per Checkpointer, for its training alone: ``Checkpointer(..., sinks=[MlflowSink(uri)])``;
or in pyproject.toml ``[tool.pipeline.tracking] sinks = ["mlflow", "tensorboard"]`` and
:func:`configured_tracking` (``python -m pipeline run`` uses it).
"""

from .base import CheckpointInfo, Sink, TrainingResult, TrainingRun, checkpoint_uri, training_record
from .dispatch import Tracker, configured_tracking, register_sink, sinks_from, tracking
from .mlflow_sink import MlflowSink
from .settings import SINK_NAMES, TrackingSettings
from .tensorboard_sink import TensorBoardSink

register_sink("mlflow", MlflowSink.from_settings)
register_sink("tensorboard", TensorBoardSink.from_settings)

__all__ = [
    "tracking",
    "configured_tracking",
    "Tracker",
    "Sink",
    "MlflowSink",
    "TensorBoardSink",
    "TrainingRun",
    "TrainingResult",
    "CheckpointInfo",
    "checkpoint_uri",
    "training_record",
    "TrackingSettings",
    "SINK_NAMES",
    "register_sink",
    "sinks_from",
]
