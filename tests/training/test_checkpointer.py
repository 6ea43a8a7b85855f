"""Checkpointer on a real store: stage keys, integrity fallback, retention on disk, async
writes (snapshots, failures, skipping), content policies, early-stopping resume, bad input."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from pipeline import CheckpointError, ConfigError, StageCache, Store
from pipeline.store.tree import DictNode, leaves
from pipeline.training import (
    Background,
    BestK,
    Checkpointer,
    EarlyStopping,
    EveryNEpochs,
    KeepAll,
    LatestN,
    Light,
    OnImprovement,
    Partial,
    SkipFinal,
    Sync,
    TrainState,
    listening,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((400, 8))
Y = (X[:, 0] + 0.3 * RNG.standard_normal(400) > 0).astype(int)


def fresh() -> TrainState:
    return TrainState(model=SGDClassifier(loss="log_loss", random_state=0), order=np.random.default_rng(1))


def big() -> TrainState:
    """A model too big to ride in its checkpoint's manifest (an object of its own, 60 KB)."""
    return TrainState(model=MLPClassifier((300,), random_state=0), order=np.random.default_rng(1))


def weights(model) -> np.ndarray:
    return model.coefs_[0] if isinstance(model, MLPClassifier) else model.coef_


def train(ckpt: Checkpointer, epochs: int, losses: list[float] | None = None, state=None) -> TrainState:
    """Real SGD epochs; ``losses`` replaces the reported val_loss (to script retention cases)."""
    state = ckpt.restore(state or fresh())
    for epoch in ckpt.epochs(state, epochs):
        perm = state.order.permutation(len(X))
        state.model.partial_fit(X[perm], Y[perm], classes=[0, 1])
        loss = losses[epoch] if losses else float(1 - state.model.score(X, Y))
        if ckpt.step(epoch, state, {"val_loss": loss}):
            break
    return state


def on_disk(store: Store, stage: str = "run", key: str = "default") -> list[int]:
    root = Path(store.url) / "checkpoints" / stage / key
    return sorted(int(p.stem) for p in root.glob("*.json"))


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


# -- the stage key -------------------------------------------------------------------------------
def test_inside_a_stage_checkpoints_live_under_its_key_and_resume_after_a_crash(store):
    def fit(epochs: int, crash_after: int = 0, alpha: float = 1e-4):
        ckpt = Checkpointer(keep=KeepAll(), writer=Sync())
        model = SGDClassifier(alpha=alpha, random_state=0)
        state = ckpt.restore(TrainState(model=model, order=np.random.default_rng(1)))
        for epoch in ckpt.epochs(state, epochs):
            state.model.partial_fit(X[state.order.permutation(400)], Y, classes=[0, 1])
            ckpt.step(epoch, state, {"acc": state.model.score(X, Y)})
            if epoch + 1 == crash_after:
                raise RuntimeError("killed")
        ckpt.finish(state)
        return state.model.coef_

    events = []
    stage = StageCache(store).wrap(fit, ignore=["crash_after"])
    with listening(events.append):
        with pytest.raises(RuntimeError):
            stage(6, crash_after=3)
        key = stage.key(6).key.partition(":")[2]
        assert on_disk(store, "fit", key) == [1, 2, 3]
        stage(6)  # same key after the crash: resumes from checkpoint 3
        stage(6, alpha=1e-3)  # changed params: another key, a fresh start
    assert [e.resumed_from for e in events if e.kind == "restore"] == [None, 3, None]
    assert {e.key.partition(":")[2] for e in events[:9]} == {key}  # crash run + resumed run
    assert on_disk(store, "fit", key) == [1, 2, 3, 4, 5, 6]


def test_outside_a_stage_a_store_and_name_are_required(store):
    with pytest.raises(ConfigError, match="needs a store and a name"):
        Checkpointer()
    with pytest.raises(ConfigError, match="needs name="):
        Checkpointer(store=store)


# -- integrity -----------------------------------------------------------------------------------
def _model_object(store: Store, step: int) -> Path:
    manifest = store.manifest("run", "default", step)
    leaf = manifest.outputs["model"]
    return Path(store.url) / "objects" / leaf.object[:2] / f"{leaf.object[2:]}.joblib"


@pytest.mark.parametrize("damage", ["flipped bytes", "missing object", "garbled manifest"])
def test_corrupt_newest_checkpoint_is_quarantined_and_restore_falls_back(store, damage):
    start = fresh if damage == "garbled manifest" else big  # (a damaged object: one the model is)
    train(Checkpointer(store=store, name="run", keep=KeepAll(), writer=Sync()), 2, state=start())
    reference = train(Checkpointer(store=store, name="ref", keep=KeepAll(), writer=Sync()), 2, state=start())
    train(Checkpointer(store=store, name="run", keep=KeepAll(), writer=Sync()), 3, state=start())
    assert on_disk(store) == [1, 2, 3]
    if damage == "flipped bytes":
        path = _model_object(store, 3)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "missing object":
        _model_object(store, 3).unlink()
    else:
        (Path(store.url) / "checkpoints/run/default/3.json").write_text('{"format": 1, "stage": ')

    with pytest.warns(UserWarning, match=r"checkpoint 3 of stage 'run' .* quarantined it, resuming from checkpoint 2"):
        state = Checkpointer(store=store, name="run", writer=Sync()).restore(start())
    assert state.epoch == 2 and state.resumed_from == 2
    np.testing.assert_array_equal(weights(state.model), weights(reference.model))
    assert on_disk(store) == [1, 2]
    assert any("checkpoints__run__default__3.json" in p.name for p in (Path(store.url) / "quarantine").iterdir())


# -- retention on disk ---------------------------------------------------------------------------
def test_retention_on_disk_keeps_latest_and_best_only_in_its_own_key(store):
    other = Checkpointer(store=store, name="run", key="other", keep=KeepAll(), writer=Sync())
    train(other, 4)
    losses = [0.9, 0.3, 0.5, 0.6, 0.4, 0.7, 0.8]
    ckpt = Checkpointer(store=store, name="run", keep=LatestN(2) | BestK(2, "val_loss"))
    state = train(ckpt, 7, losses)
    ckpt.finish(state)
    assert on_disk(store) == [2, 5, 6, 7]
    assert on_disk(store, key="other") == [1, 2, 3, 4]  # another key's checkpoints are untouched


def test_the_checkpoint_resumed_from_survives_until_finish(store):
    train(Checkpointer(store=store, name="run", keep=LatestN(1), writer=Sync()), 3)
    assert on_disk(store) == [3]
    ckpt = Checkpointer(store=store, name="run", keep=LatestN(1), writer=Sync())
    state = train(ckpt, 6)
    assert state.resumed_from == 3 and on_disk(store) == [3, 6]
    ckpt.finish(state)
    assert on_disk(store) == [6]


# -- async writes --------------------------------------------------------------------------------
def test_async_snapshot_is_isolated_from_later_updates(store):
    big = np.arange(8_000_000, dtype=np.float64)  # 64 MB: the write is still running when we mutate
    ckpt = Checkpointer(store=store, name="run", writer=Background())
    state = ckpt.restore(TrainState(weights=big))
    ckpt.step(0, state, {})
    state.weights *= -1.0  # in place, right after step() returned
    ckpt.close()
    restored = Checkpointer(store=store, name="run").restore(TrainState(weights=np.zeros_like(big)))
    np.testing.assert_array_equal(restored.weights, np.arange(8_000_000, dtype=np.float64))


def test_a_failed_background_write_is_raised_at_the_next_step_and_at_close(store):
    objects_tmp = Path(store.url) / "objects" / "tmp"
    for where in ("step", "close"):
        ckpt = Checkpointer(store=store, name=where, writer=Background())
        state = ckpt.restore(fresh())
        ckpt.step(0, state, {})
        ckpt.wait()
        shutil.rmtree(objects_tmp)
        objects_tmp.write_text("not a directory")  # every object write now fails with an OSError
        try:
            ckpt.step(1, state, {})  # submitted; fails in the background, not here
            with pytest.raises(CheckpointError, match=f"writing checkpoint 2 of stage '{where}' failed: cannot write"):
                if where == "step":
                    ckpt.step(2, state, {})
                else:
                    ckpt.close()
        finally:
            objects_tmp.unlink()
            objects_tmp.mkdir()
        assert on_disk(store, where) == [1]


def test_background_skip_when_busy_drops_saves_instead_of_waiting(store):
    events = []
    ckpt = Checkpointer(store=store, name="run", keep=KeepAll(), writer=Background(skip_when_busy=True))
    with listening(events.append):
        state = ckpt.restore(TrainState(weights=np.ones(4_000_000)))
        for epoch in range(6):
            state.weights += 1.0
            ckpt.step(epoch, state, {})
        ckpt.finish(state)
    skipped = [e.epoch for e in events if e.skipped]
    saved = [e.epoch for e in events if e.saved]
    assert skipped and saved and sorted(skipped + saved) == list(range(1, 7))
    assert on_disk(store) == saved


# -- content ------------------------------------------------------------------------------------
def test_partial_saves_chosen_entries_and_light_saves_metrics_only(store):
    part = Checkpointer(store=store, name="part", content=Partial("model"), writer=Sync())
    state = train(part, 2)
    manifest = store.manifest("part", "default", 2)
    assert set(manifest.outputs.names()) | set(manifest.extra["pickled"]) == {"model"}  # (small: carried)
    resumed = Checkpointer(store=store, name="part", content=Partial("model")).restore(fresh())
    assert resumed.epoch == 2
    np.testing.assert_array_equal(resumed.model.coef_, state.model.coef_)
    assert resumed.order.bit_generator.state == np.random.default_rng(1).bit_generator.state  # not saved

    light = Checkpointer(store=store, name="light", content=Light(), hyperparameters={"alpha": 1e-4})
    train(light, 2)
    light.close()
    manifest = store.manifest("light", "default", 2)
    assert store.load(manifest.outputs) == {
        "epoch": 2,
        "metrics": {"val_loss": manifest.extra["metrics"]["val_loss"]},
        "hyperparameters": {"alpha": 1e-4},
    }
    assert Checkpointer(store=store, name="light", content=Light()).restore(fresh()).epoch == 0


# -- early stopping ------------------------------------------------------------------------------
def test_a_run_that_stopped_early_resumes_stopped_and_finishes_with_the_best(store):
    losses = [0.9, 0.5, 0.6, 0.7, 0.8, 0.2]
    stopping = EarlyStopping("val_loss", patience=2, restore_best=True)
    ckpt = Checkpointer(store=store, name="run", save=EveryNEpochs(10), keep=LatestN(1), early_stopping=stopping)
    best = train(Checkpointer(store=store, name="ref", keep=KeepAll(), writer=Sync()), 2)
    state = train(ckpt, 6, losses)
    assert state.stopped and state.epoch == 4 and ckpt.best_step == 2
    assert on_disk(store) == [2, 4]  # saved: improvements 1, 2 and the stop 4; LatestN(1) + the best
    np.testing.assert_array_equal(state.model.coef_, best.model.coef_)  # restored at the stop
    ckpt.close()  # then "crash" before the stage returns

    again = Checkpointer(store=store, name="run", save=EveryNEpochs(10), keep=LatestN(1), early_stopping=stopping)
    state = again.restore(fresh())
    assert state.stopped and state.resumed_from == 4 and list(again.epochs(state, 6)) == []
    again.finish(state)
    np.testing.assert_array_equal(state.model.coef_, best.model.coef_)
    assert on_disk(store) == [2, 4]
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4]


# -- progress ------------------------------------------------------------------------------------
def test_progress_events_reach_a_listener_from_a_worker_thread(store):
    events = []
    with listening(events.append), concurrent.futures.ThreadPoolExecutor(1) as pool:
        ckpt = Checkpointer(store=store, name="run", save=EveryNEpochs(2))
        pool.submit(lambda: ckpt.finish(train(ckpt, 3))).result()
    assert [(e.kind, e.epoch, e.total, e.saved) for e in events] == [
        ("restore", 0, None, False),  # the total is known once epochs() is called
        ("epoch", 1, 3, False),
        ("epoch", 2, 3, True),
        ("epoch", 3, 3, False),
        ("finish", 3, 3, False),
    ]
    assert events[1].metrics.keys() == {"val_loss"} and threading.current_thread() is threading.main_thread()


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"content": "partial"}, r"content= takes Full\(\), Partial"),
        ({"content": Light(), "early_stopping": EarlyStopping(restore_best=True)}, "needs model state"),
        ({"writer": "async"}, r"writer= takes Sync\(\) or Background"),
        ({"save": LatestN(2)}, "save= takes a save policy"),
        ({"keep": EveryNEpochs(1)}, "keep= takes a keep policy"),
        ({"granularity": "partial", "keys": ["model"]}, r"granularity=...\) is gone.*content=Full\(\), Partial"),
        ({"async_write": False}, r"async_write=...\) is gone.*writer=Background\(\) or Sync\(\)"),
        ({"when_busy": "skip"}, "skip_when_busy=True"),
        ({"save_last": False}, "save=SkipFinal"),
        ({"sav": EveryNEpochs(1)}, "unexpected argument 'sav'"),
        ({"hyperparameters": {"f": print}}, "hyperparameters must be JSON-able"),
    ],
)
def test_bad_configuration_is_a_config_error(store, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Checkpointer(store=store, name="run", **kwargs)


def test_metrics_are_recorded_as_floats_whatever_number_type_they_come_as(store):
    """Plain floats take the per-epoch fast path; ints, NumPy scalars and float subclasses are
    converted; "epoch" is the checkpointer's own; a bool or a string is refused."""

    class Loss(float):
        pass

    ckpt = Checkpointer(store=store, name="m", save=EveryNEpochs(10), writer=Sync())
    state = ckpt.restore(fresh())
    metrics = {"val_loss": 0.5, "n": 3, "acc": np.float32(0.25), "sub": Loss(1.5), "epoch": 7.0}
    ckpt.step(0, state, metrics)
    assert state.history == [{"epoch": 1, "val_loss": 0.5, "n": 3.0, "acc": 0.25, "sub": 1.5}]
    assert all(type(v) is float for k, v in state.history[0].items() if k != "epoch")
    for bad in ({"val_loss": True}, {"val_loss": "0.5"}, {1: 0.5}):
        with pytest.raises(ConfigError, match="metrics must be numbers keyed by name"):
            ckpt.step(1, state, bad)
    with pytest.raises(ConfigError, match="metrics as a dict of name -> number, not list"):
        ckpt.step(1, state, [0.5])
    ckpt.close()


def test_unknown_monitored_metric_names_it_and_the_metrics_given(store):
    ckpt = Checkpointer(store=store, name="run", early_stopping=EarlyStopping("val_los"))
    state = ckpt.restore(fresh())
    message = r"EarlyStopping monitors metric 'val_los', but step\(\) got only \['val_loss'\]"
    with pytest.raises(ConfigError, match=message):
        ckpt.step(0, state, {"val_loss": 0.5})
    with pytest.raises(ConfigError, match="metric 'val_loss' = 'low'"):
        ckpt.step(0, state, {"val_los": 0.5, "val_loss": "low"})
    with pytest.raises(ConfigError, match=r"Partial: \['net'\] name no entry"):
        Checkpointer(store=store, name="p", content=Partial("net")).step(0, state, {})


@pytest.mark.parametrize("writer", [Sync(), Background()])
@pytest.mark.parametrize("bad", [threading.Lock(), (i for i in range(3)), lambda x: x])
def test_state_that_cannot_be_captured_fails_at_once_naming_the_entry(store, bad, writer):
    ckpt = Checkpointer(store=store, name="run", writer=writer)
    state = ckpt.restore(TrainState(model=np.zeros(3), callback=bad))
    with pytest.raises(CheckpointError, match=r"cannot capture state entry 'callback' \("):
        ckpt.step(0, state, {})
    ckpt.close()
    assert on_disk(store) == []


def test_closed_checkpointer_refuses_work(store):
    ckpt = Checkpointer(store=store, name="run")
    ckpt.close()
    with pytest.raises(CheckpointError, match="is closed"):
        ckpt.step(0, TrainState(), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Checkpointer(store=store, name="run") as ctx:
            ctx.step(0, ctx.restore(TrainState(x=1)), {})
    assert on_disk(store) == [1] and os.path.isdir(store.url)


def test_the_same_on_an_fsspec_store(tmp_path):
    import uuid

    import fsspec

    url = f"memory://ckpt-{uuid.uuid4().hex}"
    try:
        store = Store(url)
        ckpt = Checkpointer(store=store, name="run", keep=LatestN(1) | BestK(1, "val_loss"))
        first = train(ckpt, 3, [0.5, 0.9, 0.8])
        ckpt.close()
        assert Checkpointer(store=store, name="run").steps() == [1, 3]
        again = Checkpointer(store=store, name="run").restore(fresh())
        assert again.epoch == 3 and again.history == first.history
        np.testing.assert_array_equal(again.model.coef_, first.model.coef_)
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_skip_final_skips_only_the_last_epochs_checkpoint(store):
    ckpt = Checkpointer(store=store, name="run", keep=KeepAll(), save=SkipFinal(EveryNEpochs(1)))
    ckpt.finish(train(ckpt, 4))
    assert on_disk(store) == [1, 2, 3]
    # a forced save (early stopping's new best, restore_best) still happens at the last epoch
    ckpt = Checkpointer(store=store, name="run", key="es", keep=KeepAll(), save=SkipFinal(EveryNEpochs(10)),
                        early_stopping=EarlyStopping("val_loss", patience=5, restore_best=True))  # fmt: skip
    ckpt.finish(train(ckpt, 3, [0.9, 0.8, 0.1]))
    assert on_disk(store, key="es") == [1, 2, 3]


EXIT_WITHOUT_CLOSE = """
import shutil, sys
from pathlib import Path
import numpy as np
from pipeline import Store
from pipeline.training import Background, Checkpointer, TrainState

store = Store(sys.argv[1])
ckpt = Checkpointer(store=store, name="run", writer=Background())
state = ckpt.restore(TrainState(w=np.zeros(1)))
if sys.argv[2] == "fail":
    tmp = Path(store.url) / "objects" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")
state["w"] = np.random.default_rng(0).standard_normal(20_000_000)  # 160 MB: still writing at exit
ckpt.step(0, state, {})
print("exiting", flush=True)  # no finish(), no close()
"""


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_a_program_that_exits_without_close_keeps_its_last_write_or_says_why(tmp_path, mode):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_CLOSE, str(tmp_path / "s"), mode], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and "exiting" in proc.stdout, proc.stderr
    if mode == "ok":
        store = Store(tmp_path / "s")
        assert on_disk(store) == [1] and store.verify().clean
        assert Checkpointer(store=store, name="run").restore(TrainState(w=np.zeros(1))).epoch == 1
    else:
        assert "pipeline: writing checkpoint 1 of stage 'run' failed: StoreError: cannot write" in proc.stderr
        assert not (tmp_path / "s" / "checkpoints").exists()


def test_global_random_streams_round_trip_in_both_recorded_forms():
    import random

    from pipeline.training import adapters

    random.seed(5)
    np.random.seed(6)
    states = (adapters.capture_rng(), {"python": random.getstate(), "numpy": np.random.get_state(legacy=False)})
    expected = ([random.random() for _ in range(3)], np.random.random(3).tolist())
    for state in states:
        random.seed(9)
        np.random.seed(9)
        adapters.restore_rng(state)  # the compact array form, and tuples of ints (older checkpoints)
        assert ([random.random() for _ in range(3)], np.random.random(3).tolist()) == expected


def test_small_plain_json_entries_ride_in_the_manifest_and_restore_exactly(store):
    """A Generator's state, counters, small dicts: no object of their own (one object write per
    checkpoint fewer), read back with their exact types; anything JSON would not give back as
    it is (a tuple, NaN, a big list) stays an object."""
    ckpt = Checkpointer(store=store, name="run", writer=Background())
    counters = {"seen": 10**30, "ratio": 0.1, "tags": ["a", None, True], "nested": {"n": -(2**70)}}
    odd = {"pair": (1, 2), "nan": float("nan")}
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0),
                                    order=np.random.default_rng(1), counters=counters, odd=odd,
                                    big=list(range(1000))))  # fmt: skip
    for epoch in ckpt.epochs(state, 2):
        state.model.partial_fit(X, Y, classes=[0, 1])
        state.order.permutation(10)
        ckpt.step(epoch, state, {"val_loss": 0.5})
    ckpt.finish(state)
    manifest = store.manifest("run", "default", 2)
    assert set(manifest.extra["inline"]) == {"order", "counters"}
    assert set(manifest.extra["pickled"]) == {"model", "odd"}  # small pickles ride in the manifest too
    assert set(manifest.outputs.names()) == {"big", "_rng"}
    expected_next = state.order.permutation(len(X))
    again = Checkpointer(store=store, name="run", writer=Sync())
    restored = again.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0),
                                        order=np.random.default_rng(99), counters={}, odd={}, big=[]))  # fmt: skip
    assert restored.resumed_from == 2
    assert restored.counters == counters and type(restored.counters["seen"]) is int
    assert type(restored.counters["ratio"]) is float and restored.counters["nested"]["n"] == -(2**70)
    assert restored.odd["pair"] == (1, 2) and type(restored.odd["pair"]) is tuple and np.isnan(restored.odd["nan"])
    np.testing.assert_array_equal(restored.order.permutation(len(X)), expected_next)
    again.close()


# -- a plain dict as the training state ----------------------------------------------------------
def test_step_takes_a_plain_dict_of_entries_and_the_run_resumes_from_it(store):
    """The shape many loops keep: ``{"model": m, "epoch": 3}``; "epoch" is not an entry."""
    reference = train(Checkpointer(store=store, name="ref", keep=KeepAll(), writer=Sync()), 3)
    ckpt = Checkpointer(store=store, name="run", keep=KeepAll(), writer=Sync())
    loop = {"model": SGDClassifier(loss="log_loss", random_state=0), "order": np.random.default_rng(1), "epoch": 0}
    for epoch in range(2):
        perm = loop["order"].permutation(len(X))
        loop["model"].partial_fit(X[perm], Y[perm], classes=[0, 1])
        loop["epoch"] = epoch + 1
        assert ckpt.step(epoch, loop, {"val_loss": float(1 - loop["model"].score(X, Y))}) is False
    ckpt.finish(TrainState())
    manifest = store.manifest("run", "default", 2)
    assert set(manifest.outputs.names()) == {"_rng"} and manifest.extra["epoch"] == 2
    assert set(manifest.extra["inline"]) == {"order"}  # the Generator's state rides in the manifest
    assert set(manifest.extra["pickled"]) == {"model"}  # and so does the small model
    assert [h["epoch"] for h in manifest.extra["history"]] == [1, 2]

    resumed = train(Checkpointer(store=store, name="run", keep=KeepAll(), writer=Sync()), 3)
    assert resumed.resumed_from == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_array_equal(resumed.model.coef_, reference.model.coef_)


def test_restore_best_reaches_a_plain_dict_too(store):
    stopping = EarlyStopping(patience=1, restore_best=True)
    ckpt = Checkpointer(store=store, name="run", writer=Sync(), early_stopping=stopping)
    loop = {"w": np.zeros(2)}
    for epoch, loss in enumerate([0.5, 0.2, 0.9]):
        loop["w"] = np.full(2, float(epoch))
        stop = ckpt.step(epoch, loop, {"val_loss": loss})
    assert stop and ckpt.best_step == 2
    np.testing.assert_array_equal(loop["w"], np.full(2, 1.0))  # the best epoch's entries, in the dict


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([1, 2], "step\\(\\) takes the training state: the TrainState restore\\(\\) returned, or a dict.*got list"),
        ({"model": 1, "_private": 2}, "entry names are strings not starting with '_', not '_private'"),
        ({"model": 1, "epoch": "three"}, "'epoch' counts completed epochs .* not 'three'"),
    ],
)
def test_a_state_step_cannot_use_is_a_checkpoint_error_at_once(store, state, message):
    ckpt = Checkpointer(store=store, name="run", writer=Sync())
    with pytest.raises(CheckpointError, match=message):
        ckpt.step(0, state, {"val_loss": 0.1})
    assert on_disk(store) == []


# -- the policies themselves -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "saved"),
    [
        (None, {"model", "order", "_rng"}),  # the default: Full()
        (Partial("model"), {"model"}),
        (Partial(["order", "model"]), {"order", "model"}),
        (Light(), None),
    ],
)
def test_content_policies_save_what_they_say(store, content, saved):
    ckpt = Checkpointer(store=store, name="run", writer=Sync(), **({"content": content} if content else {}))
    train(ckpt, 1)
    manifest = store.manifest("run", "default", 1)
    outputs = manifest.outputs  # (the Generator and the small model ride in the manifest)
    inline = set(manifest.extra.get("inline", {})) | set(manifest.extra.get("pickled", {}))
    assert (set(outputs.names()) | inline if isinstance(outputs, DictNode) else None) == saved


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Partial(), "needs the names of the state entries"),
        (lambda: Partial("model", "_rng"), "not '_rng'"),
        (lambda: Background(skip_when_busy="yes"), "takes True or False, not 'yes'"),
        (lambda: SkipFinal(LatestN(1)), "SkipFinal wraps a save policy"),
    ],
)
def test_bad_policy_arguments_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_policies_are_frozen_values():
    assert Partial("model", "optimizer") == Partial(["model", "optimizer"]) and Background() == Background(False)
    with pytest.raises(AttributeError):
        Background().skip_when_busy = True  # type: ignore[misc]
    assert SkipFinal(EveryNEpochs(2) | OnImprovement("val_loss")).monitors == ("val_loss",)


def test_unchanged_global_rng_streams_reuse_their_object_changed_ones_are_written(tmp_path):
    """Training that never draws from the global streams writes their object once; a draw
    between checkpoints writes a new one; each checkpoint restores exactly its own streams."""
    import random

    store = Store(tmp_path / "s")
    ckpt = Checkpointer(store=store, name="run", save=EveryNEpochs(1), keep=KeepAll(), writer=Sync())
    state = ckpt.restore(fresh())
    streams = {}
    for epoch in range(4):
        if epoch == 1:  # the object of step 1's streams, aged: writing it again (deduplicated) would touch it
            leaf = store.checkpoints("run", "default").read(1).outputs.get("_rng")
            (aged,) = (tmp_path / "s" / "objects").glob(f"*/{leaf.object[2:]}*")
            os.utime(aged, (1e9, 1e9))
        if epoch == 2:
            random.random()  # this epoch draws from Python's global stream
        state.model.partial_fit(X, Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 0.5})
        streams[epoch + 1] = random.getstate()
    ckpt.close()
    rng_objects = {s: store.checkpoints("run", "default").read(s).outputs.get("_rng").object for s in streams}
    assert rng_objects[1] == rng_objects[2] != rng_objects[3] == rng_objects[4]
    assert aged.stat().st_mtime == 1e9  # step 2 reused step 1's object: not serialised or written again
    for step, expected in streams.items():
        random.seed(12345)  # anything else
        again = Checkpointer(store=store, name="run", save=EveryNEpochs(1), keep=KeepAll(), writer=Sync())
        manifest = store.checkpoints("run", "default").read(step)
        from pipeline.training import adapters

        adapters.restore_rng(store.load(manifest.outputs)["_rng"])
        assert random.getstate() == expected
        again.close()


def test_the_next_checkpointer_on_a_store_reuses_the_rng_object_and_rewrites_it_if_it_is_gone(tmp_path):
    """Trials of a search: each a Checkpointer of its own, none drawing from the global streams.
    The second's checkpoint references the object the first wrote (not serialised again); if
    that object vanished meanwhile (a gc), the commit writes it again and the checkpoint restores."""
    import random

    store = Store(tmp_path / "s")
    first = Checkpointer(store=store, name="a", save=EveryNEpochs(1), keep=KeepAll(), writer=Sync())
    state = first.restore(fresh())
    first.step(0, state, {"val_loss": 0.5})
    first.close()
    leaf = store.checkpoints("a", "default").read(1).outputs.get("_rng")
    (obj,) = (tmp_path / "s" / "objects").glob(f"*/{leaf.object[2:]}*")
    os.utime(obj, (1e9, 1e9))
    second = Checkpointer(store=store, name="b", save=EveryNEpochs(1), keep=KeepAll(), writer=Sync())
    second.step(0, second.restore(fresh()), {"val_loss": 0.5})
    assert store.checkpoints("b", "default").read(1).outputs.get("_rng").object == leaf.object
    assert obj.stat().st_mtime == 1e9  # referenced, not written again
    obj.unlink()  # a gc took it
    expected = random.getstate()
    second.step(1, state, {"val_loss": 0.5})
    second.close()
    assert store.checkpoints("b", "default").read(2).outputs.get("_rng").object == leaf.object
    assert obj.exists()  # written again by the commit
    random.seed(1)
    from pipeline.training import adapters

    adapters.restore_rng(store.load(store.checkpoints("b", "default").read(2).outputs)["_rng"])
    assert random.getstate() == expected


def test_pruning_its_own_checkpoints_reads_no_manifest_back(tmp_path, monkeypatch):
    """The catalog remembers the manifests it committed: a prune drops the previous checkpoint
    and hands back exactly the objects only it referenced, without reading any manifest."""
    store = Store(tmp_path / "s")
    reads: list[str] = []
    parse = store._parse_manifest
    monkeypatch.setattr(store, "_parse_manifest", lambda rel: reads.append(rel) or parse(rel))
    ckpt = Checkpointer(store=store, name="run", keep=LatestN(1), writer=Sync(), free_pruned=False)
    state = ckpt.restore(big())  # (a model that is an object of its own)
    reads.clear()
    objects = {}
    for epoch in range(3):
        state.model.partial_fit(X, Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 0.5})
        written = store.checkpoints("run", "default").read(epoch + 1)
        objects[epoch + 1] = {leaf.object for leaf in leaves(written.outputs)}
        reads.clear()  # (the test's own read)
    ckpt.finish(state)
    assert reads == []
    assert store.checkpoints("run", "default").steps() == [3]
    released = {path.rpartition("/")[2].partition(".")[0] for path in ckpt.released()}
    dropped = (objects[1] | objects[2]) - objects[3]
    assert {o[2:] for o in dropped} == released and dropped  # the models of steps 1, 2 (generators ride inline)


def test_pruning_lists_the_steps_once_at_restore_not_at_every_checkpoint(tmp_path, monkeypatch):
    """restore() lists the key's steps; the prunes after each checkpoint and at finish judge
    that list as kept up to date since (a listing per checkpoint cost each trial of a search
    ten system calls and more, in the thread that competes with training for the GIL)."""
    store = Store(tmp_path / "s")
    lists: list[str] = []
    listing = store._backend.list
    monkeypatch.setattr(store._backend, "list", lambda prefix: lists.append(prefix) or listing(prefix))
    ckpt = Checkpointer(store=store, name="run", keep=LatestN(1), writer=Sync())
    state = ckpt.restore(fresh())
    assert len([p for p in lists if p.startswith("checkpoints/")]) == 1
    lists.clear()
    for epoch in ckpt.epochs(state, 4):
        state.model.partial_fit(X, Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 0.5})
    ckpt.finish(state)
    assert [p for p in lists if p.startswith("checkpoints/")] == []
    assert on_disk(store) == [4]


def test_a_kept_checkpoint_deleted_from_outside_sends_the_prune_back_to_a_listing(store):
    """The prune judges the steps it remembers, but checks that those it keeps are still there:
    with LatestN(2), step 2 deleted behind its back, committing step 3 must keep step 1 (the
    latest two on disk are 1 and 3), not delete it in favour of the step that is gone."""
    ckpt = Checkpointer(store=store, name="run", keep=LatestN(2), writer=Sync())
    state = ckpt.restore(fresh())
    for epoch in range(2):
        state.model.partial_fit(X, Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 0.5})
    assert on_disk(store) == [1, 2]
    store.checkpoints("run", "default").delete(2)  # another process, a user, a gc of that key
    state.model.partial_fit(X, Y, classes=[0, 1])
    ckpt.step(2, state, {"val_loss": 0.5})
    assert on_disk(store) == [1, 3]
    ckpt.finish(state)
    assert on_disk(store) == [1, 3]


def test_writers_sharing_a_lane_run_on_its_thread_and_keep_their_own_waits_and_failures():
    """A search writes its trials' checkpoints on the thread that commits its trials: Writers
    created in ``sharing(lane)`` run there in submission order, each waits only for its own
    jobs and hears only its own failure; once the lane has closed they start their own thread."""
    import threading

    from pipeline.training.writer import Writer, sharing

    lane = Writer(Background()).start()
    ran: list[tuple[str, threading.Thread]] = []
    release = threading.Event()
    lane.submit("lane job", lambda: (release.wait(10), ran.append(("lane", threading.current_thread()))))
    with sharing(lane):
        first, second = Writer(Background()), Writer(Background())
    assert Writer(Background())._lane is None  # (outside the block: a thread of its own)

    def fail() -> None:
        ran.append(("fail", threading.current_thread()))
        raise OSError("disk full")

    first.submit("checkpoint 1", lambda: ran.append(("first", threading.current_thread())))
    second.submit("checkpoint 2", fail)
    assert first.busy() and second.busy() and lane.busy()  # queued behind the lane's own job
    release.set()
    first.wait()
    second.wait()
    lane.wait()
    assert [name for name, _ in ran] == ["lane", "first", "fail"]
    assert len({thread for _, thread in ran}) == 1 and ran[0][1] is not threading.main_thread()
    first.check()  # the failure is second's alone
    lane.check()
    with pytest.raises(CheckpointError, match="writing checkpoint 2 failed: OSError: disk full"):
        second.close()
    first.close()
    lane.close()
    first.submit("after the lane closed", lambda: ran.append(("own", threading.current_thread())))
    first.close()  # would hang if the job went to the closed lane
    assert ran[-1][0] == "own"

    idle = Writer(Background())  # a lane that never ran a job of its own starts at its sharers' first
    with sharing(idle):
        sharer = Writer(Background())
    sharer.submit("checkpoint", lambda: ran.append(("sharer", threading.current_thread())))
    sharer.close()
    assert ran[-1][0] == "sharer" and idle._started
    idle.close()


def test_background_writes_run_in_one_thread_that_the_next_writer_reuses(store, monkeypatch):
    """No thread start per save (it cost the training loop up to 37 ms on a loaded machine),
    nor per Checkpointer (a search's trials, one after another): a closed writer's thread
    serves the next writer, and ends once idle for IDLE_SECONDS."""
    import threading

    from pipeline.training import writer as writers
    from pipeline.training.writer import Writer

    monkeypatch.setattr(writers, "IDLE_SECONDS", 0.3)
    writer = Writer(Background())
    threads = []
    for _ in range(3):
        writer.submit("job", lambda: threads.append(threading.current_thread()))
    writer.wait()
    assert len(threads) == 3 and threads[0] is threads[1] is threads[2] is not threading.main_thread()
    writer.close()
    deadline = time.monotonic() + 10
    while writers._idle == 0 and time.monotonic() < deadline:  # the thread reads the stop after close returns
        time.sleep(0.01)
    running = set(threading.enumerate())  # (earlier tests' idle writer threads may serve it too)
    following = Writer(Background())
    following.submit("job", lambda: threads.append(threading.current_thread()))
    following.close()
    assert threads[-1] in running and threads[-1].name == threads[0].name, "the next writer started a thread of its own"
    for thread in (threads[0], threads[-1]):
        thread.join(timeout=10)
        assert not thread.is_alive(), "an idle writer thread never ended"

    dropped = Writer(Background())  # never closed: its thread ends once the writer is collected
    dropped.submit("job", lambda: threads.append(threading.current_thread()))
    dropped.wait()
    del dropped
    import gc

    gc.collect()
    threads[-1].join(timeout=10)
    assert not threads[-1].is_alive()
