"""A small real training stage for the sink tests: an SGD classifier, checkpointed per epoch,
early stopping on a scripted val_loss so the best epoch and the stop are known in advance."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier

from pipeline import StageCache, Store
from pipeline.training import BestK, Checkpointer, EarlyStopping, LatestN, TrainState

VAL_LOSS = [1.0, 0.5, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8]
"""Best epoch 3; with patience 2 training stops after epoch 5."""


class Crash(RuntimeError):
    pass


def fit(alpha: float, epochs: int, patience: int = 0, crash_after: int = 0) -> list[dict[str, float]]:
    ckpt = Checkpointer(
        keep=LatestN(2) | BestK(1, "val_loss"),
        early_stopping=EarlyStopping("val_loss", patience=patience, restore_best=True) if patience else None,
        hyperparameters={"alpha": alpha, "epochs": epochs, "optimizer": {"name": "sgd", "momentum": 0.9}},
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", alpha=alpha, random_state=0)))
    for epoch in ckpt.epochs(state, epochs):
        state.model.partial_fit(x, y, classes=[0, 1])
        loss = VAL_LOSS[epoch]
        if ckpt.step(epoch, state, {"val_loss": loss, "train_loss": loss * 0.9}):
            break
        if crash_after and epoch + 1 == crash_after:
            ckpt.wait()
            raise Crash(f"killed after epoch {crash_after}")
    ckpt.finish(state)
    return state.history


def train(store: Store, alpha: float = 0.01, epochs: int = 8, patience: int = 0, crash_after: int = 0):
    """Run ``fit`` as a stage ``train`` of ``store`` (its checkpoints live under the stage key)."""
    stage = StageCache(store).wrap(fit, name="train", ignore=["crash_after"])
    return stage.call(alpha, epochs, patience, crash_after=crash_after)


def key_of(store: Store, alpha: float = 0.01, epochs: int = 8, patience: int = 0) -> str:
    """The stage key ``train`` runs under (its checkpoints live there)."""
    return StageCache(store).wrap(fit, name="train", ignore=["crash_after"]).key(alpha, epochs, patience).key
