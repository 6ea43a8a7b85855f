"""One rank of a small data-parallel training run (gloo on 127.0.0.1), for the tests.

    python -m tests.training.ddp_worker --rank R --world 2 --port P --store DIR --out DIR
        --strategy synchronized|master|asynchronous|none --steps 12 --every 2

Every random stream is in play and per rank: dropout (torch's global RNG), input noise
(NumPy's global RNG), a loss weight (Python's ``random``) and the batch order (a
``torch.Generator``, a local entry). Prints ``resumed <step>`` and ``step <n>`` lines; writes
the final weights and the next draw of every stream to ``<out>/rank<R>.npz``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from pipeline.training import EveryNEpochs, LatestN, TrainState
from pipeline.training.distributed import Asynchronous, DistributedCheckpointer, MasterSaves, Synchronized

STRATEGIES = {"synchronized": Synchronized(), "master": MasterSaves(), "asynchronous": Asynchronous(timeout=60)}


def build(rank: int) -> TrainState:
    torch.manual_seed(0)  # the same initial weights on every rank
    nn = torch.nn
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
    torch.manual_seed(1000 + rank)  # per-rank streams from here on
    np.random.seed(2000 + rank)
    random.seed(3000 + rank)
    return TrainState(model=model, optimizer=opt, scheduler=sched, order=torch.Generator().manual_seed(4000 + rank))


def main() -> None:
    p = argparse.ArgumentParser()
    for name, kind in (("rank", int), ("world", int), ("port", int), ("steps", int), ("every", int)):
        p.add_argument(f"--{name}", type=kind, required=name in ("rank", "world", "port"), default=1)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--strategy", default="synchronized")
    p.add_argument("--step-sleep", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(a.port))
    dist.init_process_group("gloo", rank=a.rank, world_size=a.world)
    state = build(a.rank)
    ddp = torch.nn.parallel.DistributedDataParallel(state.model)
    ckpt = None
    if a.strategy != "none":
        ckpt = DistributedCheckpointer(
            store=a.store, name="ddp", strategy=STRATEGIES[a.strategy], save=EveryNEpochs(a.every),
            keep=LatestN(2), local=("order",),
        )  # fmt: skip
        state = ckpt.restore(state)
        print(f"resumed {state.resumed_from}", flush=True)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(256, 8, generator=g), torch.randint(0, 2, (256,), generator=g)
    mine = torch.arange(a.rank, 256, a.world)
    for i in range(state.epoch, a.steps):
        idx = mine[torch.randperm(len(mine), generator=state.order)[:32]]
        noise = torch.from_numpy(np.random.normal(0, 0.01, (32, 8)).astype(np.float32))
        weight = 0.5 + random.random()
        state.optimizer.zero_grad()
        loss = weight * torch.nn.functional.cross_entropy(ddp(x[idx] + noise), y[idx])
        loss.backward()  # gradients all-reduced across ranks
        state.optimizer.step()
        state.scheduler.step()
        if ckpt is not None:
            ckpt.step(i, state, {"loss": loss.item()})
        print(f"step {i + 1}", flush=True)
        time.sleep(a.step_sleep)
    if ckpt is not None:
        ckpt.finish(state)
    final = {f"w.{k}": v.numpy() for k, v in state.model.state_dict().items()}
    final |= {f"m.{i}": s["momentum_buffer"].numpy() for i, s in state.optimizer.state_dict()["state"].items()}
    final |= {"torch": torch.rand(4).numpy(), "numpy": np.random.rand(4), "python": np.array([random.random()])}
    final |= {"order": torch.randperm(10, generator=state.order).numpy(), "lr": np.array(state.scheduler.get_last_lr())}
    np.savez(os.path.join(a.out, f"rank{a.rank}.npz"), **final)
    dist.barrier()
    dist.destroy_process_group()
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
