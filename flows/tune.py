"""Hyperparameter search: one stage per trial, so a rerun replays finished trials."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline import stage

from .train import fit_sgd


@stage
def trial(train_df: pd.DataFrame, val_df: pd.DataFrame, alpha: float, epochs: int = 15, seed: int = 0) -> dict:
    """Train one candidate and report its validation metrics."""
    _, history = fit_sgd(train_df, val_df, alpha=alpha, epochs=epochs, seed=seed)
    best = min(history, key=lambda m: m["val_loss"])
    return {"alpha": alpha, "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"]}


@stage
def select_best(*trials: dict[str, Any]) -> dict[str, Any]:
    """The trial with the lowest validation loss, and the table of all trials."""
    ranked = sorted(trials, key=lambda t: t["val_loss"])
    return {"best": ranked[0], "trials": list(trials)}
