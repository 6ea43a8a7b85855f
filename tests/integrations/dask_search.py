"""A grid search for the Dask tests: four trials of a small SGD model, checkpointed every epoch.

Each trial logs ``<pid> <alpha> start <epoch>`` once it has restored (epoch > 0: resumed from
a checkpoint), ``<pid> <alpha> epoch <n>`` after each epoch's checkpoint is committed, and
``<pid> <alpha> task-run 0`` if it runs inside a Prefect task run, ``<pid> <alpha> dask-call 0``
if it is a Dask task of its own (not run inside its search's task), to the file named by
DASK_TRIAL_LOG; DASK_TRIAL_PAUSE seconds of sleep per epoch give a test time to kill a worker
mid-trial (environment, not arguments: not part of any key).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from dask.context import thread_state
from prefect import flow
from prefect.context import TaskRunContext

from pipeline.integrations.prefect import prefect_map
from pipeline.training import EveryNEpochs, LatestN, Sync, TrainState
from pipeline.tuning import Search, TrialCheckpointing

ALPHAS = [1e-4, 1e-3, 1e-2, 1e-1]
EPOCHS = 6


def _data() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import scale

    x, y = load_breast_cancer(return_X_y=True)
    return scale(x), y


def _log(line: str) -> None:
    with open(os.environ["DASK_TRIAL_LOG"], "a") as f:
        f.write(f"{os.getpid()} {line}\n")


def objective(params: dict[str, Any], checkpointer: Any) -> tuple[float, Any]:
    from sklearn.linear_model import SGDClassifier

    x, y = _data()
    model = SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=0)
    state = checkpointer.restore(TrainState(model=model, order=np.random.default_rng(0)))
    _log(f"{params['alpha']} start {state.epoch}")
    if TaskRunContext.get() is not None:
        _log(f"{params['alpha']} task-run 0")
    if str(getattr(thread_state, "key", "")).startswith("pipeline-call-"):
        _log(f"{params['alpha']} dask-call 0")  # a plain Dask task of its own (dask_map)
    for epoch in checkpointer.epochs(state, EPOCHS):
        order = state.order.permutation(400)
        state.model.partial_fit(x[order], y[order], classes=[0, 1])
        time.sleep(float(os.environ.get("DASK_TRIAL_PAUSE", "0")))
        checkpointer.step(epoch, state, {"val_loss": 1.0 - state.model.score(x[400:], y[400:])})
        _log(f"{params['alpha']} epoch {epoch + 1}")
    checkpointer.finish(state)
    return state.history[-1]["val_loss"], state.model


SEARCH = Search(
    "grid", {"alpha": ALPHAS}, objective, n_trials=len(ALPHAS), sampler="grid", seed=0,
    checkpointing=TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(1), writer=Sync()),
)  # fmt: skip


def table(found: Any) -> list[tuple[Any, ...]]:
    """What must equal between runs: each trial's parameters and value, and the best model's weights."""
    rows = [(t.number, t.params["alpha"], t.value, t.state) for t in found.trials]
    return [*rows, ("best", found.best.params["alpha"], found.best.model.coef_.tolist())]


@flow(name="dask-grid")
def grid() -> list[tuple[Any, ...]]:
    return table(SEARCH.run(map_fn=prefect_map()))
