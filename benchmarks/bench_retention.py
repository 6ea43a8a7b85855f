"""Disk held by a 10-epoch torch run with ``keep=LatestN(2)``: this tree (pruned checkpoints'
objects freed at prune time) side by side with another tree (default /work/main: freed only by a
``gc`` after the grace), interleaved round by round.

The workload is bench_training.py's torch MLP (2.6 M parameters + Adam: ~32 MB per checkpoint),
``Checkpointer(save=EveryNEpochs(1), keep=LatestN(2))`` with the default background writer, 8
batches per epoch. Each run is a fresh process whose ``PYTHONPATH`` is the tree under test.
Reported per run: bytes under ``objects/`` after ``finish()``, the bytes of the kept checkpoints
(their manifests' sizes), held / kept, the most held between epochs (sampled after each
``step()``), and the run's wall seconds (training + checkpoints; noisy on this shared machine).

Then, with ``--scale 0,1000,5000``, what freeing at prune time costs as the store grows: a
small training (one 400 KB entry, ``Sync()`` writer, ``LatestN(2)``, 8 epochs) in a store that
already holds N other stage results, seconds per ``step()`` with freeing on vs off (off: the
manifest is deleted, its objects wait for gc), interleaved per round, in this process.

    python benchmarks/bench_retention.py [--rounds 2] [--epochs 10] [--peer /work/main] [--scale 0,1000,5000]
                                         [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from pipeline import Store
from pipeline.training import Checkpointer, EveryNEpochs, LatestN, TrainState

root, epochs = Path(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                          torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x, y = torch.randn(8 * 256, 512), torch.randint(0, 10, (8 * 256,))
store = Store(root)


def held():
    return sum(p.stat().st_size for p in (root / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp")


peak = 0
t0 = time.perf_counter()
with Checkpointer(store=store, name="bench", save=EveryNEpochs(1), keep=LatestN(2)) as ckpt:
    state = ckpt.restore(TrainState(model=net, optimizer=opt))
    for epoch in ckpt.epochs(state, epochs):
        for i in range(8):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[i * 256 : (i + 1) * 256]), y[i * 256 : (i + 1) * 256])
            loss.backward()
            opt.step()
        ckpt.step(epoch, state, {"loss": float(loss)})
        peak = max(peak, held())  # between epochs (the background write of this one may still run)
    ckpt.finish(state)
seconds = time.perf_counter() - t0
cps = store.checkpoints("bench", "default")
kept = sum(cps.read(s).bytes for s in cps.steps())
print(json.dumps({"held": held(), "peak": max(peak, held()), "kept": kept, "steps": cps.steps(), "seconds": seconds}))
"""


def one(tree: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "store"), str(epochs)], env=env,
                              capture_output=True, text=True, timeout=900, cwd=tree)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])


def prune_cost(n: int, rounds: int) -> tuple[float, float]:
    """Median seconds per step() with freeing on and off, in a store holding ``n`` other results."""
    sys.path.insert(0, str(HERE.parent))  # this tree's pipeline, whatever the environment says
    import numpy as np

    from pipeline import Manifest, Store
    from pipeline.training import Checkpointer, LatestN, Sync, TrainState

    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-retention-scale-") as tmp:
        store = Store(Path(tmp) / "store", fsync=False)
        for i in range(n):
            store.commit(Manifest("other", f"xxh3:{i:032x}", store.put({"i": i}), created="2026-01-01T00:00:00"))
        for r in range(rounds):
            for free in (True, False) if r % 2 == 0 else (False, True):
                with Checkpointer(store=store, name=f"fit-{r}-{free}", keep=LatestN(2), writer=Sync()) as ckpt:
                    ckpt._catalog.free_pruned = free  # off: prune as before (manifests only), for the comparison
                    state = ckpt.restore(TrainState(w=np.zeros(50_000)))
                    for epoch in ckpt.epochs(state, 8):
                        state["w"] = np.full(50_000, float(epoch))
                        t0 = time.perf_counter()
                        ckpt.step(epoch, state, {"loss": 1.0})
                        times[free].append(time.perf_counter() - t0)
                if free and not ckpt._catalog.freed_bytes:
                    raise SystemExit(f"freeing did not happen: is {HERE.parent} the pipeline imported?")
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--peer", default="/work/main")
    ap.add_argument("--scale", default="")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    trees = {"this tree (free at prune)": str(HERE.parent), f"peer {args.peer} (gc after grace)": args.peer}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items() if r % 2 == 0 else reversed(trees.items()):
            runs[name].append(one(tree, args.epochs))
            got = runs[name][-1]
            print(f"round {r + 1} {name}: held {got['held'] / 1e6:.1f} MB, kept {got['kept'] / 1e6:.1f} MB, "
                  f"{got['seconds']:.1f} s", flush=True)  # fmt: skip
    load = os.getloadavg()
    lines = [
        "## Disk held by a torch run with keep=LatestN(2) (issue 12)",
        "",
        f"`python benchmarks/bench_retention.py --rounds {args.rounds} --epochs {args.epochs} --peer {args.peer}`"
        f" — load average {load[0]:.1f} / {load[1]:.1f} on 2 cores; {args.epochs} epochs, ~32 MB per checkpoint.",
        "",
        "| tree | held after finish MB (min/median/max) | kept MB | held / kept (median) | peak MB (max) "
        "| wall s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        held = [x["held"] / 1e6 for x in rs]
        kept = statistics.median(x["kept"] / 1e6 for x in rs)
        ratio = statistics.median(x["held"] / x["kept"] for x in rs)
        secs = statistics.median(x["seconds"] for x in rs)
        peak = max(x["peak"] / 1e6 for x in rs)
        lines.append(f"| {name} | {min(held):.1f} / {statistics.median(held):.1f} / {max(held):.1f} | {kept:.1f} | "
                     f"{ratio:.2f}x | {peak:.1f} | {secs:.1f} |")  # fmt: skip
    names = list(runs)
    per_round = [a["seconds"] / b["seconds"] for a, b in zip(runs[names[0]], runs[names[1]])]
    lines += ["", f"Wall time ratio this tree / peer per round: {', '.join(f'{x:.2f}' for x in per_round)} "
              f"(median {statistics.median(per_round):.2f}); freeing scans the manifests once per prune."]  # fmt: skip
    if args.scale:
        lines += [
            "",
            "Cost of freeing at prune time as the store grows (`--scale`; ms per `step()`, median of "
            f"{args.rounds} rounds x 8 epochs, fsync off to isolate the scan):",
            "",
            "| other results in the store | free on ms | free off ms | extra ms per prune |",
            "|---|---|---|---|",
        ]
        for n in (int(x) for x in args.scale.split(",")):
            on, off = prune_cost(n, args.rounds)
            lines.append(f"| {n} | {on * 1000:.1f} | {off * 1000:.1f} | {(on - off) * 1000:.1f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
