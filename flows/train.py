"""Training: a scikit-learn SGD classifier trained epoch by epoch with partial_fit.

The ``train`` stage checkpoints every epoch under its stage key (pipeline.training): a run
killed mid-training resumes from its last epoch, and the result is the same as if it had
never stopped. With ``patience`` it stops early and returns the best epoch's model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline import stage
from pipeline.training import BestK, Checkpointer, EarlyStopping, EveryNEpochs, LatestN, TrainState

from .preprocess import TARGET, feature_columns

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


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
    checkpointer: Checkpointer | None = None,
) -> tuple[Pipeline, list[dict[str, float]]]:
    """Train epoch by epoch; returns the fitted pipeline and the per-epoch metrics.

    With a ``checkpointer`` the model and the data-order RNG are checkpointed by its
    policies, training resumes from its newest checkpoint, and may stop early."""
    # imported here, not at module level: a fully cached run never pays for them (their
    # versions are still part of the code key: see pipeline.fingerprint.code)
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = xy(train_df)
    xv, yv = xy(val_df)
    scaler = StandardScaler().fit(x)
    xs, xvs = scaler.transform(x), scaler.transform(xv)
    model = SGDClassifier(loss="log_loss", alpha=alpha, learning_rate=learning_rate, eta0=eta0, random_state=seed)
    classes = np.unique(y)
    state = TrainState(model=model, order=np.random.default_rng(seed))
    if checkpointer is not None:
        state = checkpointer.restore(state)
    for epoch in checkpointer.epochs(state, epochs) if checkpointer is not None else range(epochs):
        order = state.order.permutation(len(xs))
        state.model.partial_fit(xs[order], y[order], classes=classes)
        metrics = {
            "train_loss": float(log_loss(y, state.model.predict_proba(xs), labels=classes)),
            "val_loss": float(log_loss(yv, state.model.predict_proba(xvs), labels=classes)),
            "val_accuracy": float((state.model.predict(xvs) == yv).mean()),
        }
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, **metrics})
        if checkpointer is None:
            state.history.append({"epoch": epoch + 1, **metrics})
        elif checkpointer.step(epoch, state, metrics):
            break
    if checkpointer is not None:
        checkpointer.finish(state)
    return Pipeline([("scale", scaler), ("clf", state.model)]), state.history


@stage
def train(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    alpha: float = 1e-4,
    epochs: int = 30,
    seed: int = 0,
    learning_rate: str = "optimal",
    eta0: float = 0.01,
    patience: int | None = None,
) -> dict[str, Any]:
    """Train the final model; returns {"model": fitted Pipeline, "history": per-epoch metrics}.

    Checkpoints every epoch (the newest two and the best by val_loss are kept). With
    ``patience`` it stops once val_loss has not improved for that many epochs and returns
    the best epoch's model."""
    ckpt = Checkpointer(
        save=EveryNEpochs(1),
        keep=LatestN(2) | BestK(1, "val_loss"),
        early_stopping=EarlyStopping("val_loss", patience=patience, restore_best=True) if patience else None,
        hyperparameters={"alpha": alpha, "epochs": epochs, "seed": seed, "learning_rate": learning_rate, "eta0": eta0},
    )
    model, history = fit_sgd(
        train_df,
        val_df,
        alpha=alpha,
        epochs=epochs,
        seed=seed,
        learning_rate=learning_rate,
        eta0=eta0,
        checkpointer=ckpt,
    )
    return {"model": model, "history": history}
