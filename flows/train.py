"""Training: a scikit-learn SGD classifier trained epoch by epoch with partial_fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline import stage

from .preprocess import TARGET, feature_columns


def xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df[feature_columns(df)].to_numpy(dtype=np.float64), df[TARGET].to_numpy()


def fit_sgd(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    *,
    alpha: float,
    epochs: int,
    seed: int,
    learning_rate: str = "optimal",
    eta0: float = 0.01,
    on_epoch: Any = None,
) -> tuple[Pipeline, list[dict[str, float]]]:
    """Train epoch by epoch; returns the fitted pipeline and the per-epoch metrics."""
    x, y = xy(train_df)
    xv, yv = xy(val_df)
    scaler = StandardScaler().fit(x)
    xs, xvs = scaler.transform(x), scaler.transform(xv)
    model = SGDClassifier(loss="log_loss", alpha=alpha, learning_rate=learning_rate, eta0=eta0, random_state=seed)
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        order = rng.permutation(len(xs))
        model.partial_fit(xs[order], y[order], classes=classes)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": float(log_loss(y, model.predict_proba(xs), labels=classes)),
            "val_loss": float(log_loss(yv, model.predict_proba(xvs), labels=classes)),
            "val_accuracy": float((model.predict(xvs) == yv).mean()),
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return Pipeline([("scale", scaler), ("clf", model)]), history


@stage
def train(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    alpha: float = 1e-4,
    epochs: int = 30,
    seed: int = 0,
    learning_rate: str = "optimal",
    eta0: float = 0.01,
) -> dict[str, Any]:
    """Train the final model; returns {"model": fitted Pipeline, "history": per-epoch metrics}."""
    model, history = fit_sgd(
        train_df, val_df, alpha=alpha, epochs=epochs, seed=seed, learning_rate=learning_rate, eta0=eta0
    )
    return {"model": model, "history": history}
