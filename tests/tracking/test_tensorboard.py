"""The TensorBoard sink writes real event files; tbparse reads them back."""

from __future__ import annotations

import pytest

from pipeline import Store
from pipeline.tracking import TensorBoardSink, tracking

from .training import VAL_LOSS, Crash, key_of, train

pytest.importorskip("tensorboardX")
tbparse = pytest.importorskip("tbparse")


def read(log_dir):
    reader = tbparse.SummaryReader(str(log_dir), extra_columns={"dir_name"})
    return reader.scalars, reader.hparams


def test_scalars_per_epoch_and_hparams(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    with tracking(sink) as tracker:
        outcome = train(Store(tmp_path / "store"), alpha=0.01, epochs=8, patience=2)
    assert tracker.failed == {}
    scalars, hparams = read(tmp_path / "tb")
    folder = f"train/{outcome.manifest.key[5:17]}"
    assert set(scalars["dir_name"]) == {folder}
    val = scalars[scalars["tag"] == "val_loss"]
    assert list(val["step"]) == [1, 2, 3, 4, 5]  # stopped early after epoch 5
    assert list(val["value"]) == pytest.approx(VAL_LOSS[:5])
    assert list(scalars[scalars["tag"] == "train_loss"]["value"]) == pytest.approx([v * 0.9 for v in VAL_LOSS[:5]])
    final = scalars[scalars["tag"] == "hparam/val_loss"]
    assert list(final["step"]) == [5] and list(final["value"]) == pytest.approx([0.4])
    assert dict(zip(hparams["tag"], hparams["value"])) == {
        "alpha": 0.01, "epochs": 8, "optimizer.name": "sgd", "optimizer.momentum": 0.9
    }  # fmt: skip


def test_a_resumed_run_redoes_epochs_without_doubling_them(tmp_path):
    """Killed while checkpoint 3 was being written: resumed from 2, epoch 3 is redone; the
    earlier event of epoch 3 is purged, so each epoch appears once."""
    store = Store(tmp_path / "store")
    with tracking(TensorBoardSink(tmp_path / "tb")), pytest.raises(Crash):
        train(store, epochs=6, crash_after=3)
    key = key_of(store, epochs=6)
    store.delete_manifest(store.manifest("train", key, 3))
    with tracking(TensorBoardSink(tmp_path / "tb")):
        train(store, epochs=6)
    folder = tmp_path / "tb" / "train" / key[5:17]
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # the first run's file is still there
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))  # TensorBoard's own reader applies the purge (tbparse doesn't)
    events.Reload()
    val = events.Scalars("val_loss")
    assert [e.step for e in val] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in val] == pytest.approx(VAL_LOSS[:6])
    scalars, _ = read(tmp_path / "tb")
    assert sorted(scalars[scalars["tag"] == "val_loss"]["step"]) == [1, 2, 3, 3, 4, 5, 6]  # both files' events
