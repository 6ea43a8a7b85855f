"""``python -m pipeline run --force``: a forced stage computes from scratch — its training
starts at epoch 0 instead of restoring its committed checkpoints, and the trials of a forced
search retrain — and the forced result replaces the old one under the same key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import Store

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "tune.n_trials=2", "--set", "train.epochs=5", "--set", "tune.epochs=3"]

# The real CLI in a real process, with a progress listener that prints every epoch trained.
COUNTING_CLI = """
import sys
from pipeline.cli import app
from pipeline.training import listening, print_progress

with listening(print_progress(lambda line: print("EPOCH-EVENT", line, flush=True))):
    app(args=sys.argv[1:], prog_name="pipeline")
"""


def run(store: Path, *args: str) -> tuple[str, dict[str, int]]:
    done = subprocess.run(
        [sys.executable, "-c", COUNTING_CLI, "run", "--store", str(store), *FAST, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    epochs: dict[str, int] = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if words[:1] == ["EPOCH-EVENT"] and len(words) > 2 and words[2] == "epoch":
            epochs[words[1]] = epochs.get(words[1], 0) + 1
    return done.stdout, epochs


@pytest.mark.slow  # three CLI processes, each a run of the bundled flow
@pytest.mark.usefixtures("prefect_api")
def test_force_retrains_from_epoch_zero_and_forced_search_retrains_its_trials(tmp_path):
    store = tmp_path / "store"
    out, epochs = run(store)
    assert "0 cached, 9 computed" in out
    assert epochs == {"train": 5, "tune.trial": 6}
    (first,) = Store(store).manifests("train")
    (best,) = Store(store).manifests("tune.best")

    # --force train used to restore the committed epoch-5 checkpoint and train 0 epochs.
    out, epochs = run(store, "--force", "train")
    assert epochs == {"train": 5}, out
    (forced,) = Store(store).manifests("train")
    assert forced.key == first.key and forced.created > first.created and forced.run_id != first.run_id

    # --force clean used to serve every trial of the search downstream as cached.
    out, epochs = run(store, "--force", "clean")
    assert epochs == {"train": 5, "tune.trial": 6}, out
    assert "1 cached, 8 computed" in out  # only the raw data load is upstream of clean
    assert [row.split("│")[-2].strip() for row in _trial_rows(out)] == ["done", "done"]
    (rewritten,) = Store(store).manifests("tune.best")  # the forced search's best replaces the old
    assert rewritten.key == best.key and rewritten.created > forced.created > best.created


def _trial_rows(out: str) -> list[str]:
    """The rows of the printed trial table (its last column says done/cached/resumed)."""
    return [line for line in out.splitlines() if line.lstrip("│ ").startswith("tune ")]
