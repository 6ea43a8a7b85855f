"""Real runs of the bundled flow (flows.ml_pipeline) on a fresh store, small enough for tests:
a cold run, a warm run (every stage a hit), and a run with a changed training param."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import Store

SMALL = ["tune.n_trials=4", "tune.epochs=5", "train.epochs=40", "train.patience=2"]


@dataclass(frozen=True)
class BundledRuns:
    store: Store
    cold: str
    warm: str
    changed: str
    """run ids: cold, warm (all hits), changed (train.seed changed: train and what follows rerun)"""


def run_bundled(root: Path) -> BundledRuns:
    from flows.ml_pipeline import DEFAULT_PARAMS
    from pipeline.integrations.runner import run_flow
    from pipeline.params import load_params

    store = Store(root)
    ref = "flows.ml_pipeline:ml_pipeline"
    cold = run_flow(ref, load_params(DEFAULT_PARAMS, SMALL), store).run_id
    warm = run_flow(ref, load_params(DEFAULT_PARAMS, SMALL), store).run_id
    changed = run_flow(ref, load_params(DEFAULT_PARAMS, [*SMALL, "train.seed=8"]), store).run_id
    return BundledRuns(store, cold, warm, changed)
