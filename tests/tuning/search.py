"""A real search for the tuning tests: SGD on a fixed synthetic task, checkpointed each epoch.

Run as a script (``python -m tests.tuning.search STORE LOG N_TRIALS [SAMPLER]``) so tests can
SIGKILL it; every training event is appended to LOG so tests can count them."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

from pipeline.training import EveryNEpochs, LatestN, Sync, TrainState
from pipeline.tuning import TrialCheckpointing

EPOCHS = 6
SPACE = {"alpha": FloatDistribution(1e-5, 1e-1, log=True), "eta0": FloatDistribution(1e-3, 1e-1, log=True),
         "batches": IntDistribution(1, 4)}  # fmt: skip
CHECKPOINTING = TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(2), writer=Sync())


def data():
    x, y = make_classification(n_samples=600, n_features=12, n_informative=6, random_state=3)
    return x[:400], y[:400], x[400:], y[400:]


def log(line: str) -> None:
    with open(os.environ["TUNE_LOG"], "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def train(params, ckpt):
    """One trial: SGD, one checkpoint per epoch; objective = final validation log loss."""
    x, y, xv, yv = data()
    label = f"{params['alpha']:.6g}/{params['eta0']:.6g}/{params['batches']}"
    model = SGDClassifier(loss="log_loss", alpha=params["alpha"], eta0=params["eta0"],
                          learning_rate="constant", random_state=0)  # fmt: skip
    state = ckpt.restore(TrainState(model=model, rng=np.random.default_rng(1)))
    log(f"start {label} {state.epoch}")
    val = float("nan")
    for epoch in ckpt.epochs(state, EPOCHS):
        order = state.rng.permutation(len(x))
        for part in np.array_split(order, params["batches"]):
            state.model.partial_fit(x[part], y[part], classes=[0, 1])
        val = float(log_loss(yv, state.model.predict_proba(xv), labels=[0, 1]))
        time.sleep(float(os.environ.get("EPOCH_SLEEP", "0")))
        log(f"epoch {label} {epoch}")
        if ckpt.step(epoch, state, {"val_loss": val}):
            break
    ckpt.finish(state)
    if state.history:
        val = state.history[-1]["val_loss"]
    log(f"finish {label} {val!r}")
    return val, state.model


def main(store: str, n_trials: int, sampler: str = "tpe") -> None:
    from pipeline.tuning import Search

    search = Search("search", SPACE, train, n_trials, sampler=sampler, seed=11, checkpointing=CHECKPOINTING)
    result = search.run(store)
    print(f"BEST {result.best_params} {result.best_value!r}")
    print("SOURCES " + " ".join(t.source for t in result.trials))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:4]))
