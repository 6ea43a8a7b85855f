"""What a finished trial costs on disk, counted on a real store as the fsyncs happen: one
object (its model) and one manifest (carrying the trial's facts), each fsynced with its
directory, the object first; epoch checkpoints unfsynced; their objects freed by the search."""

from __future__ import annotations

import os

import numpy as np
from optuna.distributions import FloatDistribution

from pipeline import Store
from pipeline.store.tree import leaves
from pipeline.training import EveryNEpochs, LatestN, TrainState
from pipeline.tuning import Search, TrialCheckpointing, trial_facts

N_TRIALS = 6


def _train(params, ckpt):
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    y = (x[:, 0] > 0).astype(int)
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=0)))
    for epoch in ckpt.epochs(state, 6):
        state.model.partial_fit(x, y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 1.0 - state.model.score(x, y)})
    ckpt.finish(state)
    return state.history[-1]["val_loss"] + params["alpha"], state.model


def _kind(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    if rel.startswith("objects/tmp/"):
        return "file"  # an object or a manifest, fsynced under its temporary name before its rename
    return "dir " + ("objects" if rel.startswith("objects/") else rel)


def test_a_finished_trial_is_one_object_and_one_manifest_each_fsynced_with_its_directory(tmp_path, monkeypatch):
    root = str(tmp_path / "s")
    store = Store(root)
    for i in range(256):  # every fan-out directory already there, as in any store of some size
        os.makedirs(os.path.join(root, "objects", f"{i:02x}"), exist_ok=True)
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(_kind(os.readlink(f"/proc/self/fd/{fd}"), os.path.realpath(root)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    per_trial: list[list[str]] = []
    seen = [0]

    def on_trial(record):
        per_trial.append(synced[seen[0] :])
        seen[0] = len(synced)

    checkpointing = TrialCheckpointing(save=EveryNEpochs(2), keep=LatestN(1))  # epochs 2, 4 (6 is skipped)
    search = Search("t", {"alpha": FloatDistribution(1e-4, 1e-1, log=True)}, _train, N_TRIALS, sampler="random",
                    seed=3, checkpointing=checkpointing)  # fmt: skip
    result = search.run(store, on_trial=on_trial)

    trial = ["file", "dir objects", "file", "dir stages/t.trial"]  # model object, then the manifest
    best = ["file", "dir stages/t.best"]
    running = None
    for n, (record, fsyncs) in enumerate(zip(result.trials, per_trial)):
        improves = running is None or record.value < running
        running = record.value if improves else running
        if n == 0:  # the first also makes the stage directories durable
            continue
        assert fsyncs == trial + (best if improves else []), f"trial {n}"

    manifests = list(store.manifests("t.trial"))
    assert len(manifests) == N_TRIALS
    models = set()
    for m in manifests:
        assert [leaf.codec for leaf in leaves(m.outputs)] == ["joblib"]  # the model; its facts are in the manifest
        assert trial_facts(store, m).state == "complete"
        models.update(leaf.object for leaf in leaves(m.outputs))
    report = store.verify()
    assert report.clean and report.ok == N_TRIALS == len(models)
    assert report.orphans == 0  # the objects of the dropped epoch checkpoints were freed
    assert not list((tmp_path / "s" / "checkpoints").rglob("*.json"))
