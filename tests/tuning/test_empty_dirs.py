"""A finished trial leaves no directory behind: its epoch checkpoints are dropped once its
result is committed, and so is the key directory they lay in (a 100k-trial store would
otherwise keep 100k empty directories that every gc, verify and listing walks)."""

from __future__ import annotations

import os
from pathlib import Path

from optuna.distributions import FloatDistribution

from pipeline import Store
from pipeline.training import EveryNEpochs, LatestN, Sync, TrainState
from pipeline.tuning import TrialCheckpointing, tune

SPACE = {"x": FloatDistribution(-1.0, 1.0)}


def train(params, ckpt):
    state = ckpt.restore(TrainState(w=0.0))
    for epoch in ckpt.epochs(state, 3):
        state.w = params["x"] * epoch
        ckpt.step(epoch, state, {"val_loss": (params["x"] - 0.3) ** 2 + 1.0 / (epoch + 1)})
    ckpt.finish(state)
    return (params["x"] - 0.3) ** 2


def key_dirs(root: Path) -> list[Path]:
    """The key directories under ``checkpoints/<stage>/``."""
    return [k for stage in (root / "checkpoints").iterdir() for k in stage.iterdir()]


def empty_key_dirs(root: Path) -> list[Path]:
    return [k for k in key_dirs(root) if not os.listdir(k)]


def test_a_search_leaves_no_empty_checkpoint_directories(tmp_path):
    root = tmp_path / "s"
    checkpointing = TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(2), writer=Sync())
    result = tune(train, SPACE, n_trials=5, store=Store(root), sampler="random", seed=1, checkpointing=checkpointing)
    assert len(result.trials) == 5 and all(t.source == "done" for t in result.trials)
    assert not list((root / "checkpoints").rglob("*.json"))  # each committed trial dropped its checkpoints…
    assert key_dirs(root) == []  # …and the directory they lay in (the stage's stays: one a stage)
    assert [p.name for p in (root / "checkpoints").iterdir()] == ["tune.trial"]
