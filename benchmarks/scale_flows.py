"""The flows ``bench_scale.py`` runs (a module of their own, so the Dask workers import them).

- ``search_flow(trials, work, parallel)``: a grid search of ``trials`` CPU-bound trials (``work``
  200x200 matrix products per epoch, 3 epochs, a checkpoint each epoch), ``parallel`` at a time
  through the flow's task runner.
- ``tiny_flow(n, nonce)``: ``n`` trivial stages submitted at once (distinct keys per ``nonce``).
- ``tiny_search_flow(n, nonce)``: a grid search of ``n`` trivial trials, two at a time through
  the flow's task runner (distinct keys per ``nonce``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow

from pipeline import stage
from pipeline.integrations.prefect import prefect_map
from pipeline.training import EveryNEpochs, LatestN, TrainState
from pipeline.tuning import Search, TrialCheckpointing

EPOCHS = 3


def burn(params: dict[str, Any], checkpointer: Any) -> float:
    """One CPU-bound trial: a fixed amount of float64 matrix work per epoch (one BLAS thread)."""
    rng = np.random.default_rng(params["seed"])
    a = rng.standard_normal((200, 200)) / 20.0
    state = checkpointer.restore(TrainState(w=np.eye(200)))
    for epoch in checkpointer.epochs(state, EPOCHS):
        w = state.w
        for _ in range(params["work"]):
            w = np.tanh(w @ a)
        state.w = w
        checkpointer.step(epoch, state, {"loss": float(np.abs(w).mean())})
    checkpointer.finish(state)
    return state.history[-1]["loss"]


@flow(name="bench-scale-search")
def search_flow(trials: int, work: int, parallel: int) -> list[float]:
    search = Search(
        "scale", {"seed": list(range(trials)), "work": [work]}, burn, n_trials=trials, sampler="grid", seed=0,
        checkpointing=TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(1)),
    )  # fmt: skip
    found = search.run(parallel=parallel, map_fn=prefect_map())
    return sorted(t.value for t in found.trials)


@stage
def tiny(x: int, nonce: str) -> int:
    return x + 1


@flow(name="bench-scale-tiny")
def tiny_flow(n: int, nonce: str) -> int:
    futures = [tiny.submit(i, nonce) for i in range(n)]
    return sum(f.result() for f in futures)


def nothing(params: dict[str, Any], checkpointer: Any) -> float:
    """A trivial trial: the overhead of a trial and nothing else."""
    return float(params["i"])


@flow(name="bench-scale-tiny-search")
def tiny_search_flow(n: int, nonce: str) -> float:
    search = Search("tiny", {"i": list(range(n)), "nonce": [nonce]}, nothing, n_trials=n, sampler="grid", seed=0)
    return sum(t.value for t in search.run(parallel=2, map_fn=prefect_map()).trials)
