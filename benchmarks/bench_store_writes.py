"""The store writes one search trial makes, per call (wall and CPU, us), side by side with the
code before (``--baseline DIR``, a source tree) and with the floor: a plain
``open / write / (fsync) / rename (/ directory fsync)`` of the same bytes. A script.

A trial of ``bench_tuning.py``'s headline setting (epoch checkpoints every 5 epochs,
``LatestN(1)``, fsync on) makes, through the store: per epoch checkpoint (no fsync: a
``Store.relaxed()`` view) one checkpoint manifest, which carries the model (a pickle of at most
16 KiB, ``pipeline.training.entries``) and the Generator's state, and names the global RNG
streams' object (written once, then reused while the streams are unchanged); at its end one
durable object (its model) and one durable result manifest; each commit checks that the
objects its manifest names are there. (Before the model rode in the manifest, each epoch
checkpoint also wrote the model as an object: ``checkpoint object`` below.) The operations
timed, each on bytes of the sizes a trial writes (the model: a fitted ``SGDClassifier`` of 30
features, ~1.1 KB of pickle):

- ``checkpoint object``: ``store.relaxed().put(model)``, a new object each call (joblib)
- ``checkpoint rng``: ``store.relaxed().put(rng state)``, a new 165-byte JSON object each call
- ``checkpoint manifest``: ``store.relaxed().checkpoints(stage, key).commit(manifest)`` of a
  ~2 KB checkpoint manifest naming three objects (a new key, so a new directory, every third
  call, as a trial's three checkpoints do)
- ``trial object``: ``store.put(model)``, durable (file and directory fsynced)
- ``trial manifest``: ``store.commit(manifest)`` of a ~3 KB result manifest, durable, a new key
  each call (one directory of results)
- ``missing check``: ``store.missing(tree)`` of a checkpoint manifest's three objects (all
  there), the check every commit makes after its manifest is written
- ``epoch checkpoint``: one checkpoint end to end, as a trial's ``Checkpointer`` makes it:
  ``step()`` (the snapshot of a model and a NumPy Generator, the global RNG streams) and
  ``wait()`` for its background write (objects, manifest, prune; ``LatestN(1)``,
  ``free_pruned=False``, the relaxed store), a new Checkpointer every three calls. Under
  callgrind the write runs in the calling thread (``Sync()``: collection is per thread), so its
  snapshot takes no copy there (and the model is pickled in the write). Floor: the model's and
  the manifest's bytes written as two files (the form before the model rode in the manifest;
  kept so that figures stay comparable: the checkpoint itself now writes one file).

Floors (same bytes, same directories, the same durability): the object or manifest bytes
(encoded outside the timing) to a temp file, ``fsync`` when durable, ``os.replace``,
directory fsync when durable; for the missing check, one ``os.lstat`` per object.

Each code tree runs in its own long-lived worker process (``PYTHONPATH`` = that tree, imports
and a warm-up done first); rounds alternate between the two (the order flips every round), and
within a worker each call of an operation alternates with a call of its floor. Per round, per
operation: the median wall and CPU (``time.process_time``) per call over ``--calls`` calls;
ratios per round (ours / before, ours / floor); min / median / max over rounds.

    python benchmarks/bench_store_writes.py --baseline /tmp/ts-base [--rounds 5] [--calls 200]
        [--markdown benchmarks/_store_writes_results.md]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
OPS = ["checkpoint object", "checkpoint rng", "checkpoint manifest", "trial object", "trial manifest", "missing check",
       "epoch checkpoint"]  # fmt: skip
STAGE = "bench.trial"


# -- the worker (runs in a process whose PYTHONPATH is the code tree measured) ---------------
def _fixtures() -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 30))
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    model = SGDClassifier(loss="log_loss", alpha=1e-4, eta0=0.01, learning_rate="invscaling", random_state=0)
    for _ in range(3):
        model.partial_fit(x, y, classes=[0, 1])
    history = [{"epoch": e, "val_loss": 0.5 / (1 + 0.1 * e) + 1e-9 * e} for e in range(1, 16)]
    versions = {"joblib": "1.6.0", "numpy": "2.4.6", "pandas": "3.1.1", "pipeline": "0.1.0", "prefect": "3.9.1",
                "pyarrow": "25.0.1", "python": "3.11.7", "scikit-learn": "1.9.1"}  # fmt: skip
    checkpoint = {
        "stage": STAGE, "key": "", "kind": "checkpoint", "step": 0, "format": 2, "code": "",
        "code_components": [], "compute_seconds": 0.0, "created": "2026-12-02T00:04:41.690211+00:00",
        "inputs": {}, "params": {}, "run_id": "7514648570d34643b101455a8d73aa50", "save_seconds": 0.016078,
        "versions": versions, "outputs": {"dict": {}},
        "extra": {"early_stopping": {"best": None, "best_step": None, "stopped": False, "wait": 0},
                  "entries": {"model": "sklearn.estimator", "rng": "numpy.generator"}, "epoch": 15,
                  "granularity": "full", "history": history, "hyperparameters": {},
                  "metrics": {"val_loss": history[-1]["val_loss"]}, "resumed_from": None, "time": 1796169881.67},
    }  # fmt: skip
    intermediate = {str(e): 0.5 / (1 + 0.1 * e) for e in range(20)}
    result = {
        "stage": STAGE, "key": "", "kind": "stage", "step": None, "format": 2,
        "code": "xxh3:379cb497e5e10747070c3ea12d2bab7b",
        "code_components": [["code", "pipeline.trial_run.run_trial", "xxh3:ab8792851b173fdc957d91c6170b3b1f"],
                            ["defaults", "pipeline.trial_run.run_trial", "xxh3:65b8b32b537617a05273fa0ddd820a30"],
                            ["global", "pipeline.trial_run.DEFERRED", "instance of _contextvars.ContextVar"],
                            ["package", "optuna", "5.0"], ["package", "pipeline", "0.1"]],
        "compute_seconds": 0.118976, "created": "2026-12-02T00:04:39.521541+00:00",
        "inputs": {"train_fn": "xxh3:b73e6ecf9c4afbe66f6952f070819142"},
        "params": {"early_stopping": {"fingerprint": "xxh3:32bd8bd95bc260882335809fb3ee2ac1", "repr": "None"},
                   "monitor": {"fingerprint": "xxh3:a66339d3381de33bcc9220cfbfe4c812", "repr": "'val_loss'"},
                   "params": {"fingerprint": "xxh3:c68a0d524d653625e77a30045dadc969",
                              "repr": "{'alpha': 2.1988464387221386e-05, 'eta0': 0.0031597120213268807, ..."}},
        "run_id": "7514648570d34643b101455a8d73aa50", "save_seconds": 0.030529, "versions": versions,
        "outputs": {"dict": {}},
        "extra": {"class_modules": {"<oid>": ["sklearn.base", "sklearn.linear_model._base",
                                              "sklearn.linear_model._stochastic_gradient",
                                              "sklearn.utils._metadata_requests", "sklearn.utils._repr_html.base"]},
                  "classes": {"<oid>": "sklearn.linear_model._stochastic_gradient:SGDClassifier"},
                  "trial": {"intermediate": intermediate, "params": {"alpha": 2.1988e-05, "eta0": 0.00316,
                            "learning_rate": "invscaling"}, "reason": "", "resumed": False, "state": "complete",
                            "value": intermediate["19"]}},
    }  # fmt: skip
    return {"model": model, "checkpoint": checkpoint, "result": result}


def _manifest(doc: dict[str, Any]) -> Any:
    """A Manifest of the code tree measured, read from ``doc`` as a store would read it."""
    from pipeline.store import Manifest
    from pipeline.store.seal import seal

    return Manifest.from_json(seal(json.dumps(doc, indent=1, sort_keys=True).encode()))


def _floor_write(path: str, tmp: str, data: bytes, durable: bool) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Round:
    """One round of every operation in a fresh store under ``base``."""

    def __init__(self, base: str, fx: dict[str, Any], calls: int, tag: str) -> None:
        from pipeline.store import Store

        self.root = os.path.join(base, f"store-{tag}")
        self.store = Store(self.root)
        self.relaxed = self.store.relaxed()
        for i in range(256):  # every fan-out directory already there, as in any store of some size
            os.makedirs(os.path.join(self.root, "objects", f"{i:02x}"), exist_ok=True)
        self.floor_dir = os.path.join(self.root, "floor")
        os.makedirs(self.floor_dir)
        self.fx, self.calls, self.tag = fx, calls, tag
        self.counting = False
        self.n = 0
        self.found: dict[str, dict[str, float]] = {}

    def _tmp(self) -> str:
        self.n += 1
        return os.path.join(self.floor_dir, f"tmp-{self.n}")

    def time(self, op: str, ours: Callable[[int], Any], floor: Callable[[int], Any]) -> list[Any]:
        """``ours(i)`` and ``floor(i)`` alternately for i < calls; per-call medians to ``found``.
        Under callgrind (``counting``): all calls of ``ours``, then all of ``floor``, each batch
        inside one ``functools.reduce`` (the C function callgrind collects in and dumps after)."""
        import resource

        if self.counting:  # (the cyclic gc off: its collections would land in one batch or another)
            gc.collect()
            gc.disable()
            try:
                out = functools.reduce(_collect(ours), range(self.calls), [])
                functools.reduce(_collect(floor), range(self.calls), [])
            finally:
                gc.enable()
            return out
        walls, cpus, fwalls, fcpus, out = [], [], [], [], []
        u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        user = 0.0
        for i in range(self.calls):
            c, w = time.process_time(), time.perf_counter()
            out.append(ours(i))
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
            u1 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
            user += u1 - u0
            c, w = time.process_time(), time.perf_counter()
            floor(i)
            fwalls.append(time.perf_counter() - w)
            fcpus.append(time.process_time() - c)
            u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        med = statistics.median
        self.found[op] = {"wall": med(walls) * 1e6, "cpu": med(cpus) * 1e6, "user": user / self.calls * 1e6,
                          "floor wall": med(fwalls) * 1e6, "floor cpu": med(fcpus) * 1e6}  # fmt: skip
        return out

    def run(self) -> dict[str, dict[str, float]]:
        import dataclasses

        import joblib  # noqa: F401  (the codec's import, done before any timing)

        from pipeline.store.codecs import JSON, candidates
        from pipeline.store.tree import DictNode, from_doc

        model, calls = self.fx["model"], self.calls
        pickled: list[bytes] = []

        def model_at(i: int) -> Any:
            model.t_ = 1000.0 + i + 1e6 * len(self.tag)  # other bytes each call (as each epoch's model)
            return model

        def model_bytes(i: int) -> bytes:
            import io

            f = io.BytesIO()
            candidates(model_at(i))[0].write(model_at(i), f)
            return f.getvalue()

        def rng_at(i: int) -> dict[str, Any]:
            seed = 2**100 + 7919 * i + 10**9 * len(self.tag)
            return {"bit_generator": "PCG64", "state": {"state": seed, "inc": 2**64 + 13}, "has_uint32": 0,
                    "uinteger": 0}  # fmt: skip

        def rng_bytes(i: int) -> bytes:
            return json.dumps(rng_at(i), separators=(",", ":")).encode()

        pickled = [model_bytes(i) for i in range(calls)]
        rngs = [rng_bytes(i) for i in range(calls)]
        objects = os.path.join(self.root, "objects", "ab")
        models = self.time(
            "checkpoint object",
            lambda i: self.relaxed.put(model_at(i), what="checkpoint entry 'model'"),
            lambda i: _floor_write(os.path.join(objects, f"f{self.n}.joblib"), self._tmp(), pickled[i], False),
        )
        states = self.time(
            "checkpoint rng",
            lambda i: self.relaxed.put(rng_at(i), what="checkpoint entry 'rng'"),
            lambda i: _floor_write(os.path.join(objects, f"f{self.n}.json"), self._tmp(), rngs[i], False),
        )
        assert all(s.codec == JSON.name for s in states)
        shared = self.relaxed.put({"streams": list(range(600))}, what="checkpoint entry '_rng'")
        template = _manifest(self.fx["checkpoint"])
        ckpts = []
        for i in range(calls):
            outputs = DictNode((("_rng", shared), ("model", models[i]), ("rng", states[i])))
            key = f"xxh3:{i // 3:016x}{len(self.tag):016x}"
            ckpts.append(dataclasses.replace(template, key=key, step=5 * (1 + i % 3), outputs=outputs))
        ckpt_bytes = [m.to_json() for m in ckpts]
        ckpt_dir = os.path.join(self.root, "floor-checkpoints")
        os.makedirs(ckpt_dir)
        self.time(
            "checkpoint manifest",
            lambda i: self.relaxed.checkpoints(STAGE, ckpts[i].key).commit(ckpts[i]),
            lambda i: _floor_write(os.path.join(ckpt_dir, f"{i}.json"), self._tmp(), ckpt_bytes[i], False),
        )
        trial_models = self.time(
            "trial object",
            lambda i: self.store.put(model_at(calls + i), what="the output of stage 'bench.trial'"),
            lambda i: _floor_write(os.path.join(objects, f"f{self.n}.joblib"), self._tmp(), pickled[i], True),
        )
        result = self.fx["result"]
        results = []
        for i, leaf in enumerate(trial_models):
            doc = {**result, "key": f"xxh3:{i:016x}{len(self.tag):016x}"}
            doc["extra"] = {**result["extra"], "classes": {leaf.object: "sklearn...:SGDClassifier"}}
            outputs = from_doc({"dict": {"model": {"object": leaf.object, "codec": leaf.codec, "bytes": leaf.bytes,
                                                   "fingerprint": "xxh3:71138db4049eb27ebe29408c1a01657b"}},
                                "fingerprint": "xxh3:0c99dc99e9df2205f139bf927b83993c"})  # fmt: skip
            results.append(dataclasses.replace(_manifest(doc), outputs=outputs))
        result_bytes = [m.to_json() for m in results]
        floor_stage = os.path.join(self.root, "floor-stage")
        os.makedirs(floor_stage)
        self.time(
            "trial manifest",
            lambda i: self.store.commit(results[i], value={"model": model_at(calls + i)}),
            lambda i: _floor_write(os.path.join(floor_stage, f"{i}.json"), self._tmp(), result_bytes[i], True),
        )
        paths = [[os.path.join(self.root, "objects", leaf.object[:2], f"{leaf.object[2:]}.{leaf.suffix}")
                  for _name, leaf in m.outputs.entries] for m in ckpts]  # fmt: skip
        self.time(
            "missing check", lambda i: self.store.missing(ckpts[i].outputs), lambda i: [os.lstat(p) for p in paths[i]]
        )
        self._epoch_checkpoints(model_at, pickled, ckpt_bytes)
        return self.found

    def _epoch_checkpoints(self, model_at: Callable[[int], Any], pickled: list[bytes], manifests: list[bytes]) -> None:
        import numpy as np

        from pipeline.training import Background, Checkpointer, EveryNEpochs, LatestN, Sync, TrainState

        live: dict[str, Any] = {}
        writer = Sync() if self.counting else Background()

        def step(i: int) -> None:
            if i % 3 == 0:  # a trial's three checkpoints, under a key of their own
                if live:
                    live["ckpt"].finish(live["state"])
                ckpt = Checkpointer(store=self.relaxed, name=STAGE, key=f"epochs-{self.tag}-{i}", save=EveryNEpochs(1),
                                    keep=LatestN(1), free_pruned=False, writer=writer)  # fmt: skip
                live.update(ckpt=ckpt, state=ckpt.restore(TrainState(model=model_at(i), rng=np.random.default_rng(i))))
            state = live["state"]
            state.model = model_at(i)
            state.rng.random()
            live["ckpt"].step(i % 3, state, {"val_loss": 1.0 / (1 + i)})
            live["ckpt"].wait()

        floor_dir = os.path.join(self.root, "floor-epochs")
        os.makedirs(floor_dir)

        def floor(i: int) -> None:
            _floor_write(os.path.join(floor_dir, f"{i}.joblib"), self._tmp(), pickled[i], False)
            _floor_write(os.path.join(floor_dir, f"{i}.json"), self._tmp(), manifests[i], False)

        self.time("epoch checkpoint", step, floor)
        live["ckpt"].finish(live["state"])


def _collect(f: Callable[[int], Any]) -> Callable[[list[Any], int], list[Any]]:
    def step(out: list[Any], i: int) -> list[Any]:
        out.append(f(i))
        return out

    return step


def worker(calls: int, counting: bool = False) -> None:
    """Serve rounds: each line on stdin ("round <tag>") -> one JSON line of per-call figures."""
    fx = _fixtures()
    base = tempfile.mkdtemp(prefix="bench-store-writes-")
    try:
        _Round(base, fx, 20, "warm").run()  # imports, caches, first-call costs: not measured
        print("ready", flush=True)
        for line in sys.stdin:
            cmd, _, tag = line.strip().partition(" ")
            if cmd != "round":
                break
            measured = _Round(base, fx, calls, tag)
            measured.counting = counting
            found = measured.run()
            shutil.rmtree(os.path.join(base, f"store-{tag}"))
            print(json.dumps(found), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the driver ------------------------------------------------------------------------------
def _env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PYTHONPATH=str(code), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


class _Worker:
    def __init__(self, code: Path, calls: int) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--calls", str(calls)],
                                     env=_env(code), cwd=tempfile.gettempdir(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"worker for {code} did not start (said {line!r})")

    def round(self, tag: str) -> dict[str, dict[str, float]]:
        self.proc.stdin.write(f"round {tag}\n")
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("a worker died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def count_instructions(code: Path, calls: int) -> dict[str, tuple[float, float]]:
    """User-space instructions per call of each operation and of its floor (callgrind ``Ir``;
    deterministic, unlike CPU seconds on a shared machine): one worker under callgrind,
    collecting only inside the batches' ``functools.reduce`` and dumping after each."""
    out_dir = tempfile.mkdtemp(prefix="bench-store-writes-cg-")
    try:
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
               "--dump-after=functools_reduce", f"--callgrind-out-file={out_dir}/cg",
               sys.executable, str(Path(__file__).resolve()), "--worker", "--counting",
               "--calls", str(calls)]  # fmt: skip
        done = subprocess.run(cmd, env=_env(code), cwd=tempfile.gettempdir(), input="round counted\n",
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"callgrind worker for {code} failed: {done.stderr[-2000:]}")
        dumps = sorted(
            (p for p in Path(out_dir).glob("cg.*") if p.suffix[1:].isdigit()), key=lambda p: int(p.suffix[1:])
        )
        totals = [_ir(p) for p in dumps][-2 * len(OPS) :]  # (before them: reduce calls of imports)
        if len(totals) != 2 * len(OPS):
            raise SystemExit(f"expected {2 * len(OPS)} callgrind dumps, found {len(totals)}")
        print(f"callgrind dumps of {code}: {[_ir(p) for p in dumps]}", file=sys.stderr)
        return {op: (totals[2 * k] / calls, totals[2 * k + 1] / calls) for k, op in enumerate(OPS)}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _ir(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def _spread(values: list[float], fmt: str = "{:.2f}x") -> str:
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, default=None, help="a source tree of the code before")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="calls of each operation per round")
    ap.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count user-space instructions per call under callgrind (N calls each; ~1.5 min a tree)",
    )
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--counting", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.calls, a.counting)
        return
    load0 = os.getloadavg()
    codes = {"ours": ROOT} | ({"before": a.baseline} if a.baseline else {})
    workers = {label: _Worker(code, a.calls) for label, code in codes.items()}
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {label: [] for label in codes}
    t0 = time.perf_counter()
    try:
        for r in range(a.rounds):
            order = list(codes) if r % 2 == 0 else list(reversed(codes))
            for label in order:
                rounds[label].append(workers[label].round(f"{label}{r}"))
                print(f"round {r + 1}/{a.rounds} {label} done", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()
    counted = (
        {label: count_instructions(code, a.instructions) for label, code in codes.items()} if a.instructions else {}
    )
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    lines = _table(rounds) + (_counted_table(counted, a.instructions) if counted else [])
    head = [
        "## Store writes of a search trial, per call (`bench_store_writes.py`)",
        "",
        f"`python benchmarks/bench_store_writes.py {' '.join(sys.argv[1:])}` ({elapsed:.0f} s; "
        f"load average {load0[0]:.1f} before, {load1[0]:.1f} after; {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; `before` = {a.baseline or '-'}). Per call: medians over {a.calls} calls "
        f"a round, {a.rounds} rounds, the workers' rounds interleaved; min/median/max of per-round ratios. "
        "CPU is user + system time (`time.process_time`): most of a small write's is the kernel's, and "
        "it swings with the file system's state from run to run; the instruction counts (when measured) "
        "are user space only, and deterministic.",
        "",
    ]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if a.markdown:
        a.markdown.write_text(text)


_WEIGHTS = {
    "checkpoint object": 3,
    "checkpoint rng": 3,
    "checkpoint manifest": 3,
    "trial object": 1,
    "trial manifest": 1,
}
"""What a trial of the headline setting wrote when every checkpoint entry was an object: three epoch
checkpoints (two objects and a manifest each), then its object and its manifest (each commit's missing
check is inside its manifest's figure). The same weights for both trees; ``epoch checkpoint`` is the
end-to-end figure of what a checkpoint writes now."""


def _header(columns: list[str], before_columns: list[str], before: bool) -> list[str]:
    """A table's head and rule: ``operation``, ``columns``, and ``before_columns`` if ``before``."""
    names = ["operation", *columns, *(before_columns if before else [])]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _table(rounds: dict[str, list[dict[str, dict[str, float]]]]) -> list[str]:
    med = statistics.median
    before = rounds.get("before")
    lines = _header(["ours CPU us", "ours wall us", "floor CPU / wall us", "ours / floor CPU"],
                    ["before CPU us", "before wall us", "ours / before CPU", "ours / before wall"],
                    bool(before))  # fmt: skip
    for op in OPS:
        ours = [r[op] for r in rounds["ours"]]
        row = (f"| {op} | {med([o['cpu'] for o in ours]):.0f} | {med([o['wall'] for o in ours]):.0f} | "
               f"{med([o['floor cpu'] for o in ours]):.0f} / {med([o['floor wall'] for o in ours]):.0f} | "
               f"{_spread([o['cpu'] / o['floor cpu'] for o in ours])} |")  # fmt: skip
        if before:
            old = [r[op] for r in before]
            row += (f" {med([o['cpu'] for o in old]):.0f} | {med([o['wall'] for o in old]):.0f} | "
                    f"{_spread([o['cpu'] / b['cpu'] for o, b in zip(ours, old)])} | "
                    f"{_spread([o['wall'] / b['wall'] for o, b in zip(ours, old)])} |")  # fmt: skip
        lines.append(row)
    per_trial = {
        label: sum(w * med([r[op]["cpu"] for r in rs]) for op, w in _WEIGHTS.items()) for label, rs in rounds.items()
    }
    lines += ["", "Per trial (3 x checkpoint object, rng and manifest; 1 x trial object and manifest): "
              + ", ".join(f"{label} {v / 1000:.2f} ms CPU" for label, v in per_trial.items()) + "."]  # fmt: skip
    return lines


def _counted_table(counted: dict[str, dict[str, tuple[float, float]]], calls: int) -> list[str]:
    before = counted.get("before")
    lines = ["", f"User-space instructions per call (callgrind, {calls} calls each, one process per tree):", ""]
    lines += _header(["ours k instr.", "floor k instr.", "ours - floor"],
                     ["before k instr.", "before - floor", "ours / before"], bool(before))  # fmt: skip
    for op in OPS:
        ours, floor = counted["ours"][op]
        row = f"| {op} | {ours / 1e3:.1f} | {floor / 1e3:.1f} | {(ours - floor) / 1e3:.1f} |"
        if before:
            old, old_floor = before[op]
            row += f" {old / 1e3:.1f} | {(old - old_floor) / 1e3:.1f} | {ours / old:.2f}x |"
        lines.append(row)
    per_trial = {label: sum(w * c[op][0] for op, w in _WEIGHTS.items()) for label, c in counted.items()}
    lines += ["", "Per trial: " + ", ".join(f"{label} {v / 1e6:.2f} M instructions" for label, v in per_trial.items())
              + "."]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
