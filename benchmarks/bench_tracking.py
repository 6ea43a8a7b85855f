"""What the tracking sinks cost a training loop: the bundled ``fit_sgd`` (breast_cancer, 60
epochs, a checkpoint every epoch) as a stage, without a sink, with MLflow (SQLite) and with
TensorBoard. Training time is measured inside the ``tracking`` block; "caught up" includes the
background sinks draining at its end.

    PYTHONPATH=. python benchmarks/bench_tracking.py
"""

from __future__ import annotations

import tempfile
import time
import warnings

import pandas as pd

from flows.preprocess import clean, engineer, raw_path, split
from flows.train import fit_sgd
from pipeline import StageCache, Store
from pipeline.tracking import MlflowSink, TensorBoardSink, tracking
from pipeline.training import Checkpointer, EveryNEpochs, LatestN

EPOCHS = 60
warnings.filterwarnings("ignore")
tmp = tempfile.mkdtemp()
raw = pd.read_csv(raw_path("breast_cancer"))
features = engineer.__pipeline_stage__.fn(clean.__pipeline_stage__.fn(raw))
train_df, val_df, _ = split.__pipeline_stage__.fn(features, 0.2, 0.2, 42)


def job(alpha: float):
    ckpt = Checkpointer(save=EveryNEpochs(1), keep=LatestN(2), hyperparameters={"alpha": alpha})
    return fit_sgd(train_df, val_df, alpha=alpha, epochs=EPOCHS, seed=0, checkpointer=ckpt)[1]


def timed(label: str, sinks: list, alpha: float) -> tuple[float, float]:
    t = time.perf_counter()
    with tracking(*sinks):
        StageCache(Store(f"{tmp}/{label}")).wrap(job, name="train")(alpha)
        trained = time.perf_counter() - t
    return trained, time.perf_counter() - t


mlflow_sink = MlflowSink(f"sqlite:///{tmp}/mlflow.db")  # construction (import mlflow) not timed
tb_sink = TensorBoardSink(f"{tmp}/tb")
timed("warmup", [mlflow_sink], 2e-3)  # the database created, imports done
for rep in range(3):
    alpha = 1e-4 * (rep + 1)
    base, _ = timed(f"none{rep}", [], alpha)
    ml, ml_done = timed(f"ml{rep}", [mlflow_sink], alpha)
    tb, tb_done = timed(f"tb{rep}", [tb_sink], alpha)
    print(
        f"rep {rep}: no sink {base:.2f} s | mlflow {ml:.2f} s (+{(ml - base) / EPOCHS * 1000:.1f} ms/epoch, "
        f"caught up {ml_done:.2f} s) | tensorboard {tb:.2f} s (+{(tb - base) / EPOCHS * 1000:.1f} ms/epoch, "
        f"caught up {tb_done:.2f} s)"
    )
