"""Routing Checkpointer events to sinks: what a sink sees, a failing sink, the config path.
No extra needed: the sinks here are plain Python objects over a real store."""

from __future__ import annotations

import warnings

import pytest

from pipeline import ConfigError, Store
from pipeline.tracking import Sink, TrackingSettings, configured_tracking, sinks_from, tracking

from .training import Crash, key_of, train


class Recorder(Sink):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.results = []

    def start(self, run):
        self.calls.append(("start", run.stage, run.resumed_from))

    def epoch(self, run, event):
        self.calls.append(("epoch", event.epoch, event.saved))

    def finish(self, result):
        self.calls.append(("finish", result.epochs))
        self.results.append(result)

    def abandon(self, run):
        self.calls.append(("abandon", run.stage))

    def close(self):
        self.calls.append(("close",))


class Broken(Sink):
    name = "broken"

    def epoch(self, run, event):
        raise ConnectionError("server down")


def test_a_sink_sees_every_epoch_and_the_store_s_checkpoints_at_the_end(tmp_path):
    store = Store(tmp_path / "store")
    rec = Recorder()
    with tracking(rec):
        outcome = train(store, epochs=8, patience=2)
    assert rec.calls == [("start", "train", None), *[("epoch", n, True) for n in range(1, 6)], ("finish", 5),
                         ("close",)]  # fmt: skip
    (result,) = rec.results
    assert result.run.key == outcome.manifest.key and result.run.store is store and result.run.run_id
    assert [c.step for c in result.checkpoints] == [3, 4, 5] and result.best_step == 3 and result.stopped
    assert all(c.bytes > 0 and c.uri.startswith("file://") and c.uri.endswith(f"/{c.step}.json")
               for c in result.checkpoints)  # fmt: skip
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert result.hyperparameters["alpha"] == 0.01 and result.final_metrics["val_loss"] == 0.4
    assert list(result.models(5)) == ["model"] and result.models(5)["model"][0] == "sklearn.estimator"


def test_a_crashed_run_is_abandoned_and_its_resumption_has_the_whole_history(tmp_path):
    store = Store(tmp_path / "store")
    rec = Recorder()
    with tracking(rec), pytest.raises(Crash):
        train(store, epochs=6, crash_after=3)
    assert rec.calls[-2:] == [("abandon", "train"), ("close",)]
    rec = Recorder()
    with tracking(rec):
        train(store, epochs=6)
    assert rec.calls[0] == ("start", "train", 3) and [c[1] for c in rec.calls if c[0] == "epoch"] == [4, 5, 6]
    assert [h["epoch"] for h in rec.results[0].history] == [1, 2, 3, 4, 5, 6]  # epochs 1-3 from the checkpoint
    assert rec.results[0].run.key == key_of(store, epochs=6)


def test_a_failing_sink_warns_once_and_the_others_and_training_go_on(tmp_path):
    rec = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracking(Broken(), rec) as tracker:
            outcome = train(Store(tmp_path / "store"), epochs=4)
            train(Store(tmp_path / "store"), alpha=0.5, epochs=4)
    messages = [str(w.message) for w in caught if "tracking" in str(w.message)]
    assert messages == [
        "tracking sink 'broken' failed in epoch (ConnectionError: server down); "
        "it is off for the rest of this run, training goes on"
    ]
    assert tracker.failed == {"broken": "ConnectionError: server down"}
    assert len(outcome.value) == 4 and len(rec.results) == 2


def test_tracking_takes_sinks_only():
    with pytest.raises(ConfigError, match="takes sinks .* not 'mlflow'"):
        with tracking("mlflow"):
            pass


def test_configured_tracking_without_sinks_does_nothing_and_names_missing_ones(tmp_path):
    with configured_tracking(TrackingSettings()) as tracker:
        assert tracker is None
    with pytest.raises(ConfigError, match="unknown tracking sink\\(s\\) \\['wandb'\\]"):
        TrackingSettings(sinks=("wandb",))
    pytest.importorskip("tensorboardX")
    (sink,) = sinks_from(TrackingSettings(sinks=("tensorboard",), tensorboard_dir="tb", root=str(tmp_path)))
    assert sink.log_dir == str(tmp_path / "tb")


def test_tracking_imports_without_prefect_mlflow_or_tensorboard():
    from tests.test_imports import BLOCK, run

    out = run(
        BLOCK.format(names=("prefect", "mlflow", "tensorboardX", "tbparse", "matplotlib"))
        + """
import pipeline.tracking as t
try:
    t.MlflowSink()
except Exception as e:
    print(e)
"""
    )
    assert out.returncode == 0, out.stderr
    assert "the MLflow sink needs the [mlflow] extra: pip install 'pipeline[mlflow]'" in out.stdout


class Slow(Recorder):
    name = "slow"
    background = True

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.threads = set()

    def epoch(self, run, event):
        import threading
        import time

        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        super().epoch(run, event)


def test_a_background_sink_does_not_slow_training_and_catches_up_at_the_end(tmp_path):
    import time

    slow = Slow(0.3)
    with tracking(slow):
        t0 = time.perf_counter()
        train(Store(tmp_path / "store"), epochs=5)
        trained = time.perf_counter() - t0
        assert len([c for c in slow.calls if c[0] == "epoch"]) < 5  # still catching up
    assert trained < 5 * 0.3  # training waited for none of the sink's 1.5 s
    assert [c[0] for c in slow.calls] == ["start", "epoch", "epoch", "epoch", "epoch", "epoch", "finish", "close"]
    assert slow.threads == {"tracking-slow"}


def test_a_sink_that_cannot_catch_up_is_left_behind_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="tracking sink 'slow' did not catch up within 0.2 s; .* pending call"):
        with tracking(Slow(0.5), drain_seconds=0.2):
            train(Store(tmp_path / "store"), epochs=4)


def test_events_that_carry_their_store_need_no_running_stage(tmp_path):
    """A Checkpointer outside a stage: with store/run_id/hyperparameters on its events (the
    hook the Checkpointer's _emit can fill), the result still has its checkpoints."""
    from pipeline.training import Checkpointer, Sync, TrainState
    from pipeline.training.progress import ProgressEvent, emit

    store = Store(tmp_path / "store")
    ckpt = Checkpointer(store=store, name="fit", writer=Sync())
    state = ckpt.restore(TrainState(w=[0.0]))
    ckpt.step(0, state, {"loss": 1.0})
    ckpt.finish(state)
    rec = Recorder()
    with tracking(rec):
        emit(ProgressEvent("finish", "fit", "default", 1, 1, {"loss": 1.0}, store=store, run_id="r1",
                           hyperparameters={"lr": 0.1}))  # fmt: skip
    (result,) = rec.results
    assert result.run.store is store and result.run.run_id == "r1" and result.hyperparameters == {"lr": 0.1}
    assert [c.step for c in result.checkpoints] == [1]
    rec = Recorder()
    with tracking(rec):  # a Checkpointer's own events carry its store, run id and hyperparameters
        ckpt = Checkpointer(store=store, name="fit2", writer=Sync(), hyperparameters={"lr": 0.2})
        state = ckpt.restore(TrainState(w=[0.0]))
        ckpt.step(0, state, {"loss": 1.0})
        ckpt.finish(state)
    (result,) = rec.results
    assert result.run.store is store and result.hyperparameters == {"lr": 0.2}
    assert [c.step for c in result.checkpoints] == [1]


def test_a_checkpointer_s_own_sinks_see_its_training_alone(tmp_path):
    from pipeline.training import Checkpointer, TrainState

    store = Store(tmp_path / "store")
    mine, everyone = Recorder(), Recorder()
    with tracking(everyone):
        ckpt = Checkpointer(store=store, name="own", hyperparameters={"lr": 0.1}, sinks=[mine])
        state = ckpt.restore(TrainState(weights=[0.0]))
        for epoch in ckpt.epochs(state, 3):
            ckpt.step(epoch, state, {"loss": 1.0 / (epoch + 1)})
        ckpt.finish(state)
        train(store, epochs=3)  # another Checkpointer: not fed to `mine`
    assert mine.calls == [("start", "own", None), *[("epoch", n, True) for n in (1, 2, 3)], ("finish", 3), ("close",)]
    (result,) = mine.results
    assert result.hyperparameters == {"lr": 0.1} and [c.step for c in result.checkpoints] == [2, 3]
    assert [c[1] for c in everyone.calls if c[0] == "start"] == ["own", "train"]  # the block sees both


def test_a_checkpointer_s_sinks_abandon_a_training_that_raised(tmp_path):
    from pipeline.training import Checkpointer, TrainState

    rec = Recorder()
    with pytest.raises(Crash), Checkpointer(store=Store(tmp_path / "s"), name="own", sinks=[rec]) as ckpt:
        state = ckpt.restore(TrainState(weights=[0.0]))
        for epoch in ckpt.epochs(state, 3):
            ckpt.step(epoch, state, {"loss": 1.0})
            raise Crash("boom")
    assert rec.calls == [("start", "own", None), ("epoch", 1, True), ("abandon", "own"), ("close",)]
    with pytest.raises(ConfigError, match=r"Checkpointer\(sinks=...\) takes sinks"):
        Checkpointer(store=Store(tmp_path / "s"), name="x", sinks=["mlflow"])
