"""Resume equivalence with real processes: train uninterrupted vs SIGKILL mid-run + rerun.

A training script (a StageCache stage, so checkpoints live under its stage key) trains
scikit-learn SGD / MLP or a torch MLP epoch by epoch and prints ``epoch N`` after each
``step()``. One run goes through uninterrupted; another is SIGKILLed at a random moment
after a random epoch and rerun in the same store. The final weights and predictions must
be bitwise identical, and the rerun must have resumed from the newest committed checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import Store

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, os, random, sys, warnings
    import numpy as np
    from pipeline import StageCache, Store
    from pipeline.training import Background, Checkpointer, EarlyStopping, EveryNEpochs, LatestN, Sync, TrainState

    warnings.filterwarnings("ignore")  # sklearn's partial_fit convergence chatter
    kind, root, out, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    opts = json.loads(sys.argv[5])

    def data(n, d=20, noise=0.0, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, d)).astype(np.float32)
        y = (x[:, :3].sum(1) > 0).astype(np.int64)
        flip = rng.random(n) < noise
        y[flip] = 1 - y[flip]
        return x, y

    if kind == "torch":
        import torch

        torch.set_num_threads(1)
        x, y = data(2048)
        xv, yv = data(512, seed=1)
        width = opts.get("width", 64)

        def build():
            torch.manual_seed(0)
            random.seed(0)
            np.random.seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(20, width), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(width, 2)
            )
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
            return TrainState(model=model, optimizer=opt, scheduler=sched, order=torch.Generator().manual_seed(1))

        def one_epoch(s):
            s.model.train()
            perm = torch.randperm(len(x), generator=s.order)
            for i in range(0, len(x), 128):
                idx = perm[i : i + 128]
                xb = torch.from_numpy(x[idx.numpy()])
                xb = xb + float(np.random.normal(0, 0.01)) * random.random()  # global numpy + python RNGs
                s.optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(s.model(xb), torch.from_numpy(y[idx.numpy()]))
                loss.backward()
                s.optimizer.step()
            s.scheduler.step()
            s.model.eval()
            with torch.no_grad():
                val = torch.nn.functional.cross_entropy(s.model(torch.from_numpy(xv)), torch.from_numpy(yv))
            return {"val_loss": val.item()}

        def result(s):
            with torch.no_grad():
                pred = s.model(torch.from_numpy(xv)).numpy().ravel()
            return np.concatenate([p.detach().numpy().ravel() for p in s.model.parameters()] + [pred])
    else:
        from sklearn.linear_model import SGDClassifier
        from sklearn.metrics import log_loss
        from sklearn.neural_network import MLPClassifier

        x, y = data(opts.get("rows", 4000), noise=opts.get("noise", 0.0))
        xv, yv = data(1000, noise=opts.get("noise", 0.0), seed=1)

        def build():
            if kind == "sgd":
                model = SGDClassifier(loss="log_loss", learning_rate="adaptive", eta0=0.01, random_state=0)
            else:
                model = MLPClassifier((opts.get("width", 32),), learning_rate_init=opts.get("lr", 0.01), random_state=0)
            return TrainState(model=model, order=np.random.default_rng(7))

        def one_epoch(s):
            perm = s.order.permutation(len(x))
            s.model.partial_fit(x[perm], y[perm], classes=[0, 1])
            return {"val_loss": float(log_loss(yv, s.model.predict_proba(xv)))}

        def result(s):
            m = s.model
            weights = [m.coef_, m.intercept_] if kind == "sgd" else [*m.coefs_, *m.intercepts_]
            return np.concatenate([w.ravel() for w in weights] + [m.predict_proba(xv).ravel()])

    def train(epochs: int):
        es = opts.get("patience")
        ckpt = Checkpointer(
            save=EveryNEpochs(opts.get("every", 1)),
            keep=LatestN(2),
            early_stopping=EarlyStopping("val_loss", patience=es, restore_best=True) if es else None,
            writer=Background() if opts.get("async") else Sync(),
        )
        state = ckpt.restore(build())
        print("resumed", state.resumed_from, flush=True)
        for epoch in ckpt.epochs(state, epochs):
            metrics = one_epoch(state)
            stop = ckpt.step(epoch, state, metrics)
            print("epoch", epoch + 1, float(result(state).sum()), flush=True)
            if stop:
                break
        ckpt.finish(state)
        print("best", ckpt.best_step, flush=True)
        return result(state)

    np.save(out, StageCache(Store(root)).wrap(train, name="train")(epochs))
    print("done", flush=True)
    """
)


def start(tmp: Path, kind: str, store: Path, out: Path, epochs: int, **opts) -> subprocess.Popen:
    import json

    script = tmp / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), kind, str(store), str(out), str(epochs), json.dumps(opts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )


def finish(proc: subprocess.Popen) -> list[str]:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout.splitlines()


def kill_after_epoch(proc: subprocess.Popen, epoch: int, delay: float) -> list[str]:
    """SIGKILL ``delay`` seconds after the process reports epoch ``epoch``."""
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(f"epoch {epoch} "):
            time.sleep(delay)
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, lines
    return lines


def resumed_from(lines: list[str]) -> int | None:
    value = next(line.split()[1] for line in lines if line.startswith("resumed"))
    return None if value == "None" else int(value)


def committed_steps(store: Path) -> list[int]:
    return sorted(int(p.stem) for p in store.glob("checkpoints/train/*/*.json"))


CASES = [
    pytest.param("sgd", 30, {"rows": 8000}, id="sklearn-sgd"),
    pytest.param("mlp", 25, {"rows": 4000}, id="sklearn-mlp"),
    pytest.param("torch", 14, {}, id="torch-cpu"),
]


@pytest.mark.parametrize("kind, epochs, opts", CASES)
@pytest.mark.slow
def test_sigkill_then_rerun_is_bitwise_identical_to_uninterrupted(tmp_path, kind, epochs, opts):
    if kind == "torch":
        pytest.importorskip("torch")
    rnd = random.Random()
    kill_epoch = rnd.randint(2, epochs // 2)
    reference = start(tmp_path, kind, tmp_path / "ref-store", tmp_path / "ref.npy", epochs, **opts)
    victim = start(tmp_path, kind, tmp_path / "store", tmp_path / "out.npy", epochs, **opts)
    kill_after_epoch(victim, kill_epoch, rnd.uniform(0, 0.02))
    assert not (tmp_path / "out.npy").exists()
    steps = committed_steps(tmp_path / "store")
    assert steps and steps[-1] >= kill_epoch  # sync writes: epoch k printed => checkpoint k committed

    lines = finish(start(tmp_path, kind, tmp_path / "store", tmp_path / "out.npy", epochs, **opts))
    assert resumed_from(lines) == steps[-1]
    finish(reference)
    ref, out = np.load(tmp_path / "ref.npy"), np.load(tmp_path / "out.npy")
    assert ref.dtype == out.dtype and ref.tobytes() == out.tobytes(), f"killed after epoch {kill_epoch}"
    assert Store(tmp_path / "store").verify().clean


@pytest.mark.slow
def test_sigkill_during_async_write_resumes_from_newest_committed(tmp_path):
    """A big torch model written asynchronously; killed while an object is being written."""
    pytest.importorskip("torch")
    opts = {"width": 4000, "async": True}  # ~0.3 MB of weights, ~1 MB with Adam's state
    store = tmp_path / "store"
    reference = start(tmp_path, "torch", tmp_path / "ref-store", tmp_path / "ref.npy", 6, **opts)
    victim = start(tmp_path, "torch", store, tmp_path / "out.npy", 6, **opts)
    tmpdir = store / "objects" / "tmp"
    assert victim.stdout.readline().startswith("resumed None")
    assert victim.stdout.readline().startswith("epoch 1 ")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim.poll() is None:
        if os.listdir(tmpdir) and committed_steps(store):  # a write is in flight right now
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    steps = committed_steps(store)
    assert steps, "no checkpoint was committed before the kill"
    assert Store(store).verify().clean  # the interrupted write left no manifest behind

    lines = finish(start(tmp_path, "torch", store, tmp_path / "out.npy", 6, **opts))
    assert resumed_from(lines) == steps[-1]
    finish(reference)
    assert np.load(tmp_path / "ref.npy").tobytes() == np.load(tmp_path / "out.npy").tobytes()


@pytest.mark.slow
def test_early_stopping_restores_best_epoch_across_a_resume(tmp_path):
    """val_loss of an overfitting MLP bottoms out at epoch 8; patience 4 stops at 12. Saves
    every 3 epochs (plus every improvement); killed after epoch 10 and rerun, the result is the
    best epoch's model — the same as the uninterrupted run's."""
    opts = {"rows": 300, "noise": 0.3, "width": 256, "lr": 0.002, "patience": 4, "every": 3}
    ref_lines = finish(start(tmp_path, "mlp", tmp_path / "ref-store", tmp_path / "ref.npy", 60, **opts))
    sums = {int(line.split()[1]): float(line.split()[2]) for line in ref_lines if line.startswith("epoch")}
    best = int(next(line.split()[1] for line in ref_lines if line.startswith("best")))
    assert 3 <= best < max(sums) < 60, ref_lines  # stopped early, after a real minimum
    assert float(np.load(tmp_path / "ref.npy").sum()) == pytest.approx(sums[best], rel=1e-12)

    victim = start(tmp_path, "mlp", tmp_path / "store", tmp_path / "out.npy", 60, **opts)
    kill_after_epoch(victim, best + 2, 0.0)
    lines = finish(start(tmp_path, "mlp", tmp_path / "store", tmp_path / "out.npy", 60, **opts))
    assert resumed_from(lines) is not None and resumed_from(lines) > best - 3
    assert int(next(line.split()[1] for line in lines if line.startswith("best"))) == best
    assert np.load(tmp_path / "ref.npy").tobytes() == np.load(tmp_path / "out.npy").tobytes()
