"""pipeline.training imports (and checkpoints numpy / sklearn state) with Prefect and torch
unavailable, and importing it loads neither."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("prefect", "torch"):
            raise ImportError(f"blocked: {name}")

sys.meta_path.insert(0, Block())

import numpy as np
import pipeline.training
from pipeline import Store
from pipeline.training import Checkpointer, EarlyStopping, LatestN, TrainState, rich_progress

ckpt = Checkpointer(store=Store(sys.argv[1]), name="t", keep=LatestN(1), early_stopping=EarlyStopping("loss"))
state = ckpt.restore(TrainState(w=np.zeros(3), rng=np.random.default_rng(0)))
for epoch in ckpt.epochs(state, 3):
    state.w += state.rng.random(3)
    ckpt.step(epoch, state, {"loss": float(-state.w.sum())})
ckpt.finish(state)
fresh = TrainState(w=np.zeros(3), rng=np.random.default_rng(0))
again = Checkpointer(store=Store(sys.argv[1]), name="t").restore(fresh)
assert again.epoch == 3 and (again.w == state.w).all()
assert not [m for m in sys.modules if m.partition(".")[0] in ("prefect", "torch", "rich")], "imported too much"
print("ok")
"""


def test_training_needs_neither_prefect_nor_torch(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CODE), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
