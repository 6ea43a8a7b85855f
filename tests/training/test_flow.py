"""The bundled ``flows.train.train`` stage checkpoints per epoch: SIGKILLed mid-training and
rerun, it resumes under the same stage key and returns the same model as an uninterrupted
run; per-epoch progress reaches a listener."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import Store

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pipeline import use_store
    from pipeline.training import listening, print_progress
    from flows.preprocess import clean, engineer, make_synthetic, split
    from flows.train import train

    root, out, epochs, patience = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
    with use_store(root), listening(print_progress(lambda line: print(line, flush=True))):
        raw = make_synthetic(rows=3000, seed=1)
        train_df, val_df, _ = split(engineer(clean(raw)), test_size=0.2, val_size=0.2, seed=1)
        result = train(train_df, val_df, epochs=epochs, seed=3, patience=patience)
    clf = result["model"].named_steps["clf"]
    np.save(out, np.concatenate([clf.coef_.ravel(), clf.intercept_]))
    print("history", [h["epoch"] for h in result["history"]], flush=True)
    """
)


def start(tmp: Path, store: Path, out: Path, epochs: int, patience: int = 0) -> subprocess.Popen:
    script = tmp / "bundled_train.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), str(store), str(out), str(epochs), str(patience)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def output(proc: subprocess.Popen) -> list[str]:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout.splitlines()


@pytest.mark.slow
def test_bundled_train_stage_resumes_after_sigkill_with_the_same_model(tmp_path):
    epochs, kill_epoch = 60, random.randint(3, 15)
    reference = start(tmp_path, tmp_path / "ref", tmp_path / "ref.npy", epochs)
    victim = start(tmp_path, tmp_path / "store", tmp_path / "out.npy", epochs)
    seen = []
    for line in victim.stdout:
        seen.append(line.strip())
        if line.startswith(f"train epoch {kill_epoch}/{epochs} "):
            break
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL and seen[0] == "train: fresh", seen
    committed = sorted(int(p.stem) for p in (tmp_path / "store").glob("checkpoints/train/*/*.json"))
    assert committed and committed[-1] >= kill_epoch - 1  # async: the newest may still have been in flight

    lines = output(start(tmp_path, tmp_path / "store", tmp_path / "out.npy", epochs))
    assert lines[0] == f"train: resumed from checkpoint {committed[-1]}"
    assert lines[1].startswith(f"train epoch {committed[-1] + 1}/{epochs} train_loss=")
    assert lines[-1] == f"history {list(range(1, epochs + 1))}"  # the whole history, across the kill
    output(reference)
    assert np.load(tmp_path / "ref.npy").tobytes() == np.load(tmp_path / "out.npy").tobytes()
    kept = sorted(int(p.stem) for p in (tmp_path / "store").glob("checkpoints/train/*/*.json"))
    assert len(kept) <= 3 and kept[-1] == epochs  # LatestN(2) | BestK(1) after the stage finished
    assert Store(tmp_path / "store").verify().clean
