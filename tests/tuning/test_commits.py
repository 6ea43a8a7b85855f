"""A search's trial commits run in a committer thread while the next trial trains
(:mod:`pipeline.trial_commits`): what that may never change, and that it does overlap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution

from pipeline import Store
from pipeline.errors import StoreError
from pipeline.tuning import tune

SPACE = {"x": FloatDistribution(-1.0, 1.0)}
GATE = threading.Event()  # set by the training function of the trial after the gated one
UNPICKLABLE = threading.Event()  # set: a Model refuses to be saved


class Model:
    """A trial's model. Saving (pickling) it can be made to wait for the next trial's training
    to start (``gated``), or to fail (``UNPICKLABLE``)."""

    def __init__(self, x: float, gated: bool = False) -> None:
        self.x, self.gated = x, gated
        self.overlapped: bool | None = None

    def __reduce__(self):
        if UNPICKLABLE.is_set():
            raise TypeError(f"a Model ({self.x}) cannot be saved now")
        if self.gated:
            self.overlapped = GATE.wait(timeout=5.0)
        return (Model, (self.x,))


def train(params, ckpt, *, gate_trial: int | None = None, calls: list | None = None):
    n = len(calls)
    calls.append(params["x"])
    if gate_trial is not None and n == gate_trial + 1:
        GATE.set()  # this trial is training: the gated trial's save may go on now
    return (params["x"] - 0.3) ** 2, Model(params["x"], gated=n == gate_trial)


@pytest.fixture(autouse=True)
def _reset():
    GATE.clear()
    UNPICKLABLE.clear()
    yield
    GATE.clear()
    UNPICKLABLE.clear()


def test_the_next_trial_trains_while_the_previous_commits(tmp_path: Path):
    """Trial 1's model is saved (pickled, in the committer thread) only once trial 2 is
    training: a search that committed each trial before asking the next waits 5 s and sees
    no overlap."""
    import functools

    models: list[Model] = []
    calls: list[float] = []

    def keep(fn):
        @functools.wraps(fn)
        def wrapped(params, ckpt):
            value, model = fn(params, ckpt)
            models.append(model)
            return value, model

        return wrapped

    fn = keep(functools.partial(train, gate_trial=1, calls=calls))
    result = tune(fn, SPACE, n_trials=4, store=tmp_path / "s", name="gated", sampler="random", seed=1)
    assert [t.source for t in result.trials] == ["done"] * 4
    assert models[1].overlapped is True


def test_a_trial_is_reported_only_once_committed_with_its_best(tmp_path: Path):
    """When ``on_trial`` hears trial n, trials 0..n are committed and the best record names the
    best of them (the commit of each runs in the committer thread, the report after it lands)."""
    import functools

    store = Store(tmp_path / "s")
    seen = []

    def on_trial(record):
        committed = {m.extra["trial"]["params"]["x"] for m in store.manifests("rep.trial")}
        best = store.manifest("rep.best", result_key[0]) if result_key else None
        seen.append((record, committed, best))

    result_key: list[str] = []
    from pipeline.tuning import Search

    search = Search("rep", SPACE, functools.partial(train, calls=[]), n_trials=6, sampler="random", seed=2)
    result_key.append(search.key)
    result = search.run(store, on_trial=on_trial)
    assert [r.number for r, _, _ in seen] == list(range(6))
    best_so_far = None
    for i, (record, committed, best) in enumerate(seen):
        assert {r.params["x"] for r, _, _ in seen[: i + 1]} <= committed, f"trial {i} reported before committed"
        best_so_far = record.value if best_so_far is None else min(best_so_far, record.value)
        assert best is not None and best.extra["value"] == best_so_far
    assert result.best.value == best_so_far and result.best.tree is not None


FAIL_THIRD = threading.Event()  # set: saving the third trial of a run fails
CALLS: list[float] = []  # (not an argument: that would be part of the trials' keys)


def fail_third(params, ckpt, *, root: str):
    value, model = train(params, ckpt, calls=CALLS)
    if FAIL_THIRD.is_set() and len(CALLS) == 3:  # once the first two have landed, saving trial 2 fails
        deadline = time.monotonic() + 10
        while len(list(Store(root).manifests("fails.trial"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        UNPICKLABLE.set()
    return value, model


def test_a_failed_commit_fails_the_search_and_releases_its_lease(tmp_path: Path):
    """The commit's own error is raised by tune (not lost in the committer thread), the trial
    is not committed, its lease is gone, and a rerun serves the committed trials and trains it."""
    import functools

    root = tmp_path / "s"
    CALLS.clear()
    fn = functools.partial(fail_third, root=str(root))  # (a path would be keyed by its content)
    FAIL_THIRD.set()
    try:
        with pytest.raises(StoreError, match="cannot be saved now"):
            tune(fn, SPACE, n_trials=5, store=root, name="fails", sampler="random", seed=3)
    finally:
        FAIL_THIRD.clear()
        UNPICKLABLE.clear()
    assert len(CALLS) in (3, 4)  # the failure surfaces at the latest when the next trial is told
    assert len(list(Store(root).manifests("fails.trial"))) == 2
    assert not list((root / "leases").rglob("*.json"))
    CALLS.clear()
    result = tune(fn, SPACE, n_trials=5, store=root, name="fails", sampler="random", seed=3)
    assert [t.source for t in result.trials] == ["cached", "cached", "done", "done", "done"]
    assert len(CALLS) == 3


def test_no_thread_is_started_per_trial(tmp_path: Path):
    """Trials run in the calling thread; the committer, the epoch-checkpoint writer and the
    lease heartbeat are one thread each for the whole search (reused, not one per trial)."""
    import functools

    from pipeline.training import EveryNEpochs, LatestN, TrainState
    from pipeline.tuning import TrialCheckpointing

    threads: dict[int, threading.Thread] = {}  # held: a thread's id is not reused while we hold it
    trial_threads = set()

    def epochs(params, ckpt):
        trial_threads.add(threading.current_thread())
        state = ckpt.restore(TrainState(model={"w": params["x"]}))
        for epoch in ckpt.epochs(state, 4):
            if ckpt.step(epoch, state, {"val_loss": (params["x"] - 0.3) ** 2}):
                break
        ckpt.finish(state)
        return state.history[-1]["val_loss"]

    def on_trial(record):
        for t in threading.enumerate():
            threads[id(t)] = t

    before = set(threading.enumerate())  # (idle writer threads earlier tests left may serve this search)

    every = TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(1))
    tune(functools.partial(epochs), SPACE, n_trials=10, store=tmp_path / "s", name="th", sampler="random",
         seed=4, checkpointing=every, on_trial=on_trial)  # fmt: skip
    assert trial_threads == {threading.current_thread()}
    started = [t.name for t in threads.values() if t not in before]
    assert len(started) <= 4, f"threads started during a 10-trial search: {sorted(started)}"
