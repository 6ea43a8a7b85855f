"""Per-epoch progress displays: the rich bars the CLI shows, plain lines, a broken listener."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from pipeline import Store
from pipeline.training import Checkpointer, TrainState, listening, print_progress, rich_progress


def train(store: Store, epochs: int = 4) -> None:
    ckpt = Checkpointer(store=store, name="fit")
    state = ckpt.restore(TrainState(w=np.zeros(2)))
    for epoch in ckpt.epochs(state, epochs):
        state.w += 1.0
        ckpt.step(epoch, state, {"val_loss": 1.0 / (epoch + 1)})
    ckpt.finish(state)


def test_rich_progress_shows_a_bar_per_training_stage(tmp_path):
    out = io.StringIO()
    with rich_progress(Console(file=out, width=120, force_terminal=False)):
        train(Store(tmp_path / "store"))
    text = out.getvalue()
    assert "fit" in text and "4/4" in text and "done val_loss=0.25" in text


def test_print_progress_lines_and_a_resumed_run(tmp_path):
    store = Store(tmp_path / "store")
    lines: list[str] = []
    with listening(print_progress(lines.append)):
        train(store, 2)
        train(store, 3)
    assert lines[0] == "fit: fresh"
    assert lines[1].startswith("fit epoch 1/2 val_loss=1 saved (")
    assert lines[3] == "fit: finished at epoch 2/2"
    assert lines[4:6] == ["fit: resumed from checkpoint 2", lines[5]] and lines[5].startswith("fit epoch 3/3 ")


def test_a_failing_listener_is_dropped_with_a_warning_and_training_goes_on(tmp_path):
    calls = []

    def broken(event):
        calls.append(event.kind)
        raise RuntimeError("display gone")

    with listening(broken), pytest.warns(UserWarning, match="progress listener .* failed \\(display gone\\); removed"):
        train(Store(tmp_path / "store"))
    assert calls == ["restore"]
