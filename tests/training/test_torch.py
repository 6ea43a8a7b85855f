"""torch state through a real store: module (with buffers), optimizer, schedulers, generators,
exotic dtypes — restored in place into freshly built objects, bit for bit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline import Store  # noqa: E402
from pipeline.training import Background, Checkpointer, Sync, TrainState  # noqa: E402


def build(seed: int) -> TrainState:
    torch.manual_seed(seed)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return TrainState(
        model=model,
        optimizer=opt,
        warmup=torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=100),
        plateau=torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1),
        order=torch.Generator().manual_seed(seed),
        ema=torch.zeros(4, dtype=torch.bfloat16),
    )


def advance(state: TrainState, steps: int) -> None:
    x, y = torch.randn(64, 6), torch.randint(0, 2, (64,))
    for _ in range(steps):
        idx = torch.randperm(64, generator=state.order)[:32]
        state.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(state.model(x[idx]), y[idx])
        loss.backward()
        state.optimizer.step()
        state.warmup.step()
        state.plateau.step(loss.item())
        state.ema.mul_(0.5).add_(loss.detach().to(torch.bfloat16))


def snapshot(state: TrainState) -> dict:
    return {
        "model": {k: v.clone() for k, v in state.model.state_dict().items()},
        "adam": [s["exp_avg_sq"].clone() for s in state.optimizer.state.values()],
        "lr": state.optimizer.param_groups[0]["lr"],
        "warmup": state.warmup.state_dict(),
        "plateau": state.plateau.state_dict()["num_bad_epochs"],
        "order": state.order.get_state().clone(),
        "ema": state.ema.clone(),
        "rng": torch.get_rng_state().clone(),
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # incl. BatchNorm buffers
    assert all(torch.equal(x, y) for x, y in zip(a["adam"], b["adam"]))
    assert a["lr"] == b["lr"] and a["warmup"] == b["warmup"] and a["plateau"] == b["plateau"]
    assert torch.equal(a["order"], b["order"]) and torch.equal(a["rng"], b["rng"])
    assert a["ema"].dtype == b["ema"].dtype == torch.bfloat16 and torch.equal(a["ema"], b["ema"])


@pytest.mark.parametrize("writer", [Sync(), Background()])
def test_torch_state_round_trips_in_place_and_training_continues_identically(tmp_path, writer):
    store = Store(tmp_path / "store")
    ckpt = Checkpointer(store=store, name="net", writer=writer)
    state = ckpt.restore(build(0))
    advance(state, 5)
    ckpt.step(0, state, {"loss": 1.0})
    saved = snapshot(state)
    advance(state, 3)  # keeps training while the snapshot is written
    ckpt.close()
    expected = snapshot(state)

    fresh = build(1)  # other seed, other weights: everything must come from the checkpoint
    params_before = [id(p) for p in fresh.model.parameters()]
    restored = Checkpointer(store=store, name="net").restore(fresh)
    assert restored is fresh and [id(p) for p in restored.model.parameters()] == params_before  # in place
    assert_same(snapshot(restored), saved)
    advance(restored, 3)
    assert_same(snapshot(restored), expected)
