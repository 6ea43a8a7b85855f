"""Hyperparameter search: an Optuna search in which every trial is a cached stage.

A rerun replays finished trials from the store without training them, an interrupted trial
resumes from its epoch checkpoint, and the best model so far is always committed
(pipeline.tuning). The whole search is itself a stage, served at once when nothing changed.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from pipeline import stage
from pipeline.cache import current_stage
from pipeline.integrations.artifacts import publish_trials
from pipeline.integrations.prefect import prefect_map
from pipeline.training import EveryNEpochs, LatestN
from pipeline.tuning import Search, TrialCheckpointing

from .train import fit_sgd


def space() -> dict[str, Any]:
    """The search space. A function, not a module constant, so that importing the flow
    (a fully cached run) never imports optuna; its code and optuna's version are in the
    search's key all the same."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "alpha": FloatDistribution(1e-6, 1e-1, log=True),
        "eta0": FloatDistribution(1e-4, 1e-1, log=True),
        "learning_rate": CategoricalDistribution(["optimal", "constant", "invscaling"]),
    }


CHECKPOINTING = TrialCheckpointing(save=EveryNEpochs(5), keep=LatestN(1))


def objective(
    train_df: pd.DataFrame, val_df: pd.DataFrame, epochs: int, seed: int, params: dict[str, Any], checkpointer: Any
) -> tuple[float, Any]:
    """One trial: train with the trial's hyperparameters; the best epoch's validation loss."""
    model, history = fit_sgd(
        train_df,
        val_df,
        alpha=params["alpha"],
        eta0=params["eta0"],
        learning_rate=params["learning_rate"],
        epochs=epochs,
        seed=seed,
        checkpointer=checkpointer,
    )
    return min(h["val_loss"] for h in history), model


@stage
def search(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    n_trials: int = 8,
    sampler: str = "tpe",
    seed: int = 0,
    epochs: int = 15,
) -> dict[str, Any]:
    """Search the space; returns the best hyperparameters and the table of trials."""
    running = current_stage()
    train_fn = functools.partial(objective, train_df, val_df, epochs, seed)
    tuning = Search("tune", space(), train_fn, n_trials, sampler=sampler, seed=seed, checkpointing=CHECKPOINTING)
    # Trials run side by side on the run's task runner (`--runner dask`: one per worker thread);
    # otherwise, and outside a flow, one by one.
    found = tuning.run(running.store if running else None, map_fn=prefect_map())
    publish_trials("tune", found)  # the trial table as a Prefect artifact (the UI's Artifacts tab)
    return {"best": {**found.best.params, "val_loss": found.best.value}, "trials": found.table()}
