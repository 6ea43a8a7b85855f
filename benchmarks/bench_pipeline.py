"""One ML pipeline, three caches: our ``@stage`` vs Prefect native caching vs joblib.Memory.

A script, not a test. The SAME six plain functions (load synthetic data -> clean -> feature
engineering -> split -> train an SGDClassifier for a few epochs -> evaluate) are run by one
pipeline body in three ways:

- ours:    each function wrapped with ``pipeline.stage``, inside a Prefect flow, with
           ``pipeline.use_store(Store(tmpdir))`` (default fsync=True, as the product ships)
- prefect: each function as ``prefect.task(cache_policy=INPUTS + TASK_SOURCE,
           persist_result=True, result_storage=LocalFileSystem(basepath=tmpdir))`` in a flow
- joblib:  ``joblib.Memory(tmpdir).cache`` on each function, no Prefect

Both flows run against one real ``prefect server start`` (127.0.0.1, free port, temp
PREFECT_HOME, analytics off) that the script starts and stops, with the flow heartbeat off.
Every variant runs ``--cold`` times cold (each time into a new, empty cache dir), then
``--warm`` times warm, both interleaved
(each round runs every variant, in rotating order, so they share the machine's noise).

Measured per variant: cold wall, warm wall (the whole flow / function call), warm stage time
(perf_counter around each stage call inside the pipeline body, summed: Prefect's task engine,
key hashing and cache loads included), and bytes on disk of the cache directory after all runs
(apparent size of every file in it). Warm numbers are medians. Every warm run must be all cache
hits: ours by its run summary (0 misses) and Prefect task states named ``Cached``, Prefect by
its task states named ``Cached``, joblib by ``MemorizedFunc`` reporting no fresh call; all
variants must give the same evaluation metrics.

    /work/venv/bin/python benchmarks/bench_pipeline.py [--rows 1000000] [--cols 20] [--epochs 5]
        [--cold 3] [--warm 5] [--dir DIR] [--markdown PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss, roc_auc_score

ALL_VARIANTS = ("ours", "ours-sync", "ours-small", "prefect", "joblib")
VARIANTS: tuple[str, ...] = ("ours", "prefect", "joblib")  # --variants
BASELINE = "prefect"  # the peer of the warm and bytes rows (the last variant when prefect is not run)
TARGET_STAGE = 0.5  # ours / prefect warm-rerun stage time
TARGET_BYTES = 0.7  # ours / prefect bytes on disk
TARGET_COLD = 1.05  # ours / joblib.Memory cold wall, per round (issue #12)
TARGET = "target"


# -- the plain stage functions: the same objects for all three variants ----------------------------
def load_data(rows: int, cols: int = 20, seed: int = 0) -> pd.DataFrame:
    """Synthetic tabular data: gaussian and log-normal float features, ~1% missing, a binary target."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols))
    x[:, : cols // 5] = np.exp(x[:, : cols // 5])  # a few skewed, positive features
    w = rng.standard_normal(cols)
    logits = np.tanh(x) @ w + 0.5 * rng.standard_normal(rows)
    x[rng.random((rows, cols)) < 0.01] = np.nan
    df = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(cols)])
    df[TARGET] = (logits > 0).astype(np.int8)
    return df


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != TARGET]


def clean(df: pd.DataFrame, clip_z: float = 4.0) -> pd.DataFrame:
    """Median-impute missing values, clip each feature to mean +/- clip_z standard deviations."""
    x = df[feature_columns(df)]
    x = x.fillna(x.median())
    mean, std = x.mean(), x.std()
    x = x.clip(mean - clip_z * std, mean + clip_z * std, axis=1)
    x[TARGET] = df[TARGET]
    return x


def engineer(df: pd.DataFrame, pairs: int = 4) -> pd.DataFrame:
    """Log-transform skewed features, standardise all, add a few pairwise products."""
    cols = {}
    for c in feature_columns(df):
        col = df[c]
        if col.min() >= 0 and col.skew() > 1.0:
            cols[f"log_{c}"] = np.log1p(col)
        else:
            cols[c] = col
    x = pd.DataFrame(cols)
    x = (x - x.mean()) / x.std()
    names = list(x.columns)
    for a, b in zip(names[:pairs], names[pairs : 2 * pairs]):
        x[f"{a}_x_{b}"] = x[a] * x[b]
    x[TARGET] = df[TARGET]
    return x


def split(df: pd.DataFrame, test_size: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle and split into train / test frames."""
    order = np.random.default_rng(seed).permutation(len(df))
    n_test = int(len(df) * test_size)
    test = df.iloc[order[:n_test]].reset_index(drop=True)
    train_df = df.iloc[order[n_test:]].reset_index(drop=True)
    return train_df, test


def train(df: pd.DataFrame, epochs: int = 5, alpha: float = 1e-4, seed: int = 0) -> SGDClassifier:
    """Logistic regression by SGD, ``epochs`` passes of partial_fit."""
    x, y = df[feature_columns(df)].to_numpy(), df[TARGET].to_numpy()
    model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed)
    classes = np.unique(y)
    for _ in range(epochs):
        model.partial_fit(x, y, classes=classes)
    return model


def evaluate(model: SGDClassifier, df: pd.DataFrame) -> dict[str, float]:
    """Accuracy, log loss and ROC AUC on a held-out frame."""
    x, y = df[feature_columns(df)].to_numpy(), df[TARGET].to_numpy()
    proba = model.predict_proba(x)[:, 1]
    return {
        "accuracy": float(((proba > 0.5) == y).mean()),
        "log_loss": float(log_loss(y, proba)),
        "auc": float(roc_auc_score(y, proba)),
    }


STAGES: tuple[Callable[..., Any], ...] = (load_data, clean, engineer, split, train, evaluate)


def run_pipeline(stages: dict[str, Callable[..., Any]], rows: int, cols: int, epochs: int, seed: int) -> dict:
    """The pipeline body all variants share; times each stage call (engine and cache included)."""
    seconds: dict[str, float] = {}
    nbytes: dict[str, int] = {}

    def step(name: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = stages[name](*args, **kwargs)
        seconds[name] = time.perf_counter() - t0
        nbytes[name] = _memory_bytes(out)
        return out

    raw = step("load_data", rows=rows, cols=cols, seed=seed)
    cleaned = step("clean", raw, clip_z=4.0)
    features = step("engineer", cleaned)
    train_df, test_df = step("split", features, test_size=0.2, seed=seed)
    model = step("train", train_df, epochs=epochs, seed=seed)
    metrics = step("evaluate", model, test_df)
    return {"metrics": metrics, "stage_seconds": seconds, "output_bytes": sum(nbytes.values())}


def _memory_bytes(value: Any) -> int:
    """In-memory size of a stage output's frames (tuples walked); models and metrics count 0."""
    if isinstance(value, tuple):
        return sum(_memory_bytes(v) for v in value)
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(index=True).sum())
    return 0


# -- the three variants -------------------------------------------------------------------------------
@dataclass
class Run:
    wall: float
    stage_seconds: dict[str, float]
    hits: int
    misses: int
    metrics: dict[str, float]
    note: str = ""
    output_bytes: int = 0
    missed: list[str] = field(default_factory=list)

    @property
    def stage_total(self) -> float:
        return sum(self.stage_seconds.values())


@dataclass
class Variant:
    name: str
    root: Path
    params: dict[str, int]
    outcomes: list[tuple[str, bool]] = field(default_factory=list)  # (stage, hit) of the current run

    def run(self) -> Run:
        raise NotImplementedError

    def _hook(self, task: Any, task_run: Any, state: Any) -> None:
        self.outcomes.append((task.name, state.name == "Cached"))


class Ours(Variant):
    frames = "fast"

    def __init__(self, name: str, root: Path, params: dict[str, int]) -> None:
        super().__init__(name, root, params)
        from pipeline import Store, stage

        self.store = Store(root, frames=self.frames)
        stages = {f.__name__: stage(f, name=f.__name__, on_completion=[self._hook]) for f in STAGES}
        self.flow = _make_flow("bench-ours", stages)

    def run(self) -> Run:
        from pipeline import use_store
        from pipeline.runs import summarise

        self.outcomes = []
        t0 = time.perf_counter()
        with use_store(self.store):
            state = self.flow(**self.params, return_state=True)
        wall = time.perf_counter() - t0
        out = state.result()
        summary = summarise(self.store, str(state.state_details.flow_run_id), state.type.value.lower(), wall)
        cached = sum(hit for _, hit in self.outcomes)
        note = f"summary {summary['hits']} hits / {summary['misses']} misses; {cached} tasks Cached"
        if summary["hits"] != cached:
            raise AssertionError(f"ours: run summary and task states disagree: {note}")
        return Run(
            wall, out["stage_seconds"], summary["hits"], summary["misses"], out["metrics"], note, out["output_bytes"]
        )


class PrefectNative(Variant):
    def __init__(self, name: str, root: Path, params: dict[str, int]) -> None:
        super().__init__(name, root, params)
        from prefect import task
        from prefect.cache_policies import INPUTS, TASK_SOURCE
        from prefect.filesystems import LocalFileSystem

        root.mkdir(parents=True)
        storage = LocalFileSystem(basepath=str(root))
        storage.save(f"bench-{root.name}".lower().replace("_", "-"), overwrite=True)
        stages = {
            f.__name__: task(
                f,
                name=f.__name__,
                cache_policy=INPUTS + TASK_SOURCE,
                persist_result=True,
                result_storage=storage,
                on_completion=[self._hook],
            )
            for f in STAGES
        }
        self.flow = _make_flow("bench-prefect", stages)

    def run(self) -> Run:
        self.outcomes = []
        t0 = time.perf_counter()
        state = self.flow(**self.params, return_state=True)
        wall = time.perf_counter() - t0
        out = state.result()
        hits = sum(hit for _, hit in self.outcomes)
        return Run(
            wall,
            out["stage_seconds"],
            hits,
            len(self.outcomes) - hits,
            out["metrics"],
            "task states",
            out["output_bytes"],
        )


class JoblibMemory(Variant):
    def __init__(self, name: str, root: Path, params: dict[str, int]) -> None:
        super().__init__(name, root, params)
        import joblib

        memory = joblib.Memory(root, verbose=0)
        self.stages = {f.__name__: self._recording(f.__name__, memory.cache(f)) for f in STAGES}

    def _recording(self, name: str, memorized: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            # what MemorizedFunc.__call__ does, keeping the metadata: {} means served from the cache
            out, metadata = memorized._cached_call(args, kwargs, shelving=False)
            self.outcomes.append((name, not metadata))
            return out

        return call

    def run(self) -> Run:
        self.outcomes = []
        t0 = time.perf_counter()
        out = run_pipeline(self.stages, **self.params)
        wall = time.perf_counter() - t0
        hits = sum(hit for _, hit in self.outcomes)
        return Run(
            wall,
            out["stage_seconds"],
            hits,
            len(self.outcomes) - hits,
            out["metrics"],
            "MemorizedFunc",
            out["output_bytes"],
        )


def _make_flow(name: str, stages: dict[str, Callable[..., Any]]) -> Any:
    from prefect import flow

    def pipeline_flow(rows: int, cols: int, epochs: int, seed: int) -> dict:
        return run_pipeline(stages, rows, cols, epochs, seed)

    return flow(pipeline_flow, name=name, log_prints=False)


class OursSync(Ours):
    """Ours with ``commits = "sync"``: every stage commits before its task run completes
    (the behaviour before background commits; the same code otherwise)."""

    def run(self) -> Run:
        before = os.environ.get("PIPELINE_COMMITS")
        os.environ["PIPELINE_COMMITS"] = "sync"
        try:
            return super().run()
        finally:
            if before is None:
                del os.environ["PIPELINE_COMMITS"]
            else:
                os.environ["PIPELINE_COMMITS"] = before


class OursSmall(Ours):
    """Ours with ``frames = "small"``: numeric frames as Parquet (byte-stream-split + zstd)."""

    frames = "small"


MAKERS: dict[str, type[Variant]] = {
    "ours": Ours,
    "ours-sync": OursSync,
    "ours-small": OursSmall,
    "prefect": PrefectNative,
    "joblib": JoblibMemory,
}


def dir_bytes(root: Path) -> int:
    """Apparent size of every file under ``root``."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


# -- the Prefect server --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=1) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def start_server(home: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on a free 127.0.0.1 port with its own PREFECT_HOME; waits for /health.
    Points this process at it (call before importing prefect)."""
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [*cmd, "--no-ui", "--analytics-off"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not _healthy(api_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.2)
    os.environ.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    )
    return proc, api_url


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server this script started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- the benchmark ---------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _timed_run(variant: Variant, label: str) -> Run:
    gc.collect()
    run = variant.run()
    run.missed = [s for s, hit in variant.outcomes if not hit]
    _log(
        f"{label:8s} {variant.name:8s} wall {run.wall:7.2f}s  stages {run.stage_total:7.2f}s  "
        f"hits {run.hits}/{run.hits + run.misses}  ({run.note})"
        + (f" missed: {', '.join(run.missed)}" if run.missed else "")
    )
    return run


def _check_warm(run: Run, name: str) -> None:
    if run.misses or run.hits != len(STAGES):
        raise AssertionError(f"{name}: a warm rerun was not all cache hits: {run.hits} hits, {run.misses} misses")


def _check_metrics(reference: dict[str, float], run: Run, name: str) -> None:
    for k, v in reference.items():
        if not math.isclose(run.metrics[k], v, rel_tol=1e-9):
            raise AssertionError(f"{name}: metric {k} {run.metrics[k]} differs from {v}")


def warm_up(base: Path) -> None:
    """Imports, the first flow run and code paths of every variant, on a tiny frame (not measured)."""
    params = {"rows": 2_000, "cols": 20, "epochs": 1, "seed": 0}
    for name in VARIANTS:
        v = MAKERS[name](name, base / f"warmup-{name}", params)
        for _ in range(2):
            _timed_run(v, "warm-up")
        _check_warm(_timed_run(v, "warm-up"), f"warm-up {name}")


def _rotated(i: int) -> tuple[str, ...]:
    return VARIANTS[i % len(VARIANTS) :] + VARIANTS[: i % len(VARIANTS)]  # rotate who goes first


def bench(params: dict[str, int], cold_rounds: int, warm: int, base: Path, profile: bool) -> dict[str, Any]:
    warm_up(base)
    variants = {name: MAKERS[name](name, base / name, params) for name in VARIANTS}
    colds: dict[str, list[Run]] = {name: [] for name in VARIANTS}
    for i in range(cold_rounds):  # round 0 fills the caches the warm runs use; later rounds use new ones
        for name in _rotated(i):
            v = variants[name] if i == 0 else MAKERS[name](name, base / f"{name}-cold{i}", params)
            colds[name].append(_timed_run(v, f"cold {i + 1}"))
            if i:
                shutil.rmtree(v.root, ignore_errors=True)
    cold = {name: runs[0] for name, runs in colds.items()}
    reference = cold[BASELINE].metrics
    for name in VARIANTS:
        for run in colds[name]:
            _check_metrics(reference, run, name)
    # The first rerun is reported but not measured: a cache whose keys change when its own outputs
    # come back from disk (Prefect pickles its inputs to hash them) misses here once.
    first = {name: _timed_run(variants[name], "rerun 1") for name in VARIANTS[::-1]}
    for name in VARIANTS:
        _check_metrics(reference, first[name], name)
    warm_runs: dict[str, list[Run]] = {name: [] for name in VARIANTS}
    for i in range(warm):
        for name in _rotated(i):
            run = _timed_run(variants[name], f"warm {i + 1}")
            _check_warm(run, name)
            _check_metrics(reference, run, name)
            warm_runs[name].append(run)
    sizes = {name: dir_bytes(variants[name].root) for name in VARIANTS}
    profile_text = _profile(variants["ours"]) if profile else ""
    return {
        "cold": cold,
        "colds": colds,
        "first": first,
        "warm": warm_runs,
        "bytes": sizes,
        "profile": profile_text,
        "metrics": reference,
    }


def _profile(variant: Variant, top: int = 30) -> str:
    """cProfile of one more warm run of a variant (not part of the measurements)."""
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    variant.run()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}x / {statistics.median(ratios):.2f}x / {max(ratios):.2f}x"


def cold_table(colds: dict[str, list[Run]]) -> list[str]:
    """Cold runs round by round, and ours / peer per round (min / median / max): the rounds
    share the machine's load, so their ratios are what counts."""
    lines = [
        "Cold runs (empty caches), interleaved in rotating order; ours / peer per round, min / median / max "
        "(< 1: ours is faster):",
        "",
        "| variant | cold wall s, each round | median | load_data s, each round | ours / it, wall | "
        "ours / it, load_data |",
        "|---|---|---:|---|---:|---:|",
    ]
    ours = colds["ours"]
    for name in VARIANTS:
        runs = colds[name]
        walls = [r.wall for r in runs]
        loads = [r.stage_seconds["load_data"] for r in runs]
        if name == "ours":
            vs = ("", "")
        else:
            vs = (
                _spread([o.wall / r.wall for o, r in zip(ours, runs)]),
                _spread([o.stage_seconds["load_data"] / r.stage_seconds["load_data"] for o, r in zip(ours, runs)]),
            )
        lines.append(
            f"| {name} | {', '.join(f'{w:.2f}' for w in walls)} | {statistics.median(walls):.2f} "
            f"| {', '.join(f'{x:.2f}' for x in loads)} | {vs[0]} | {vs[1]} |"
        )
    ratio = statistics.median(o.wall / j.wall for o, j in zip(ours, colds["joblib"]))
    lines += [
        "",
        f"- Target cold wall <= {TARGET_COLD}x joblib.Memory (median of the per-round ratios): {ratio:.2f}x "
        f"({'met' if ratio <= TARGET_COLD else 'MISSED'}). Ours runs inside a Prefect flow against the server "
        "(task engine, task-run records), joblib.Memory is plain function calls.",
    ]
    return lines


def report(results: dict[str, Any], params: dict[str, int], warm: int, command: str) -> str:
    med = {
        name: {
            "wall": statistics.median(r.wall for r in runs),
            "stage": statistics.median(r.stage_total for r in runs),
            "per_stage": {s.__name__: statistics.median(r.stage_seconds[s.__name__] for r in runs) for s in STAGES},
        }
        for name, runs in results["warm"].items()
    }
    cold, sizes = results["cold"], results["bytes"]
    base_m, base_cold, base_bytes = med[BASELINE], cold[BASELINE], sizes[BASELINE]
    lines = [
        f"Data: {params['rows']:,} rows x {params['cols']} float64 features + int8 target "
        f"(raw frame {params['rows'] * (params['cols'] * 8 + 1) / 1e6:.0f} MB); SGDClassifier {params['epochs']} "
        f"epochs. {len(results['colds']['ours'])} cold runs, then {warm} warm reruns per variant, interleaved in "
        "rotating order; warm numbers are medians; the cold wall in the first table is the first round's. "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"prefect {_version('prefect')}, pandas {pd.__version__}, pyarrow {_version('pyarrow')}, "
        f"joblib {_version('joblib')}.",
        "",
        f"| variant | cold wall s | 1st rerun wall s (hits) | warm wall s | warm wall vs {BASELINE} | warm stage s "
        f"| warm stage vs {BASELINE} | warm stage s, each run | bytes on disk MB | bytes vs {BASELINE} | warm hits |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name in VARIANTS:
        m, runs, first = med[name], results["warm"][name], results["first"][name]
        each = ", ".join(f"{r.stage_total:.2f}" for r in runs)
        hits = f"{sum(r.hits for r in runs)}/{sum(r.hits + r.misses for r in runs)}"
        lines.append(
            f"| {name} | {cold[name].wall:.2f} | {first.wall:.2f} ({first.hits}/{first.hits + first.misses}) "
            f"| {m['wall']:.2f} | {m['wall'] / base_m['wall']:.2f}x "
            f"| {m['stage']:.2f} | {m['stage'] / base_m['stage']:.2f}x | {each} | {sizes[name] / 1e6:.0f} "
            f"| {sizes[name] / base_bytes:.2f}x | {hits} |"
        )
    per_stage_tables = {
        "Warm rerun, median seconds per stage call (engine, key hashing and cache load included):": {
            name: med[name]["per_stage"] for name in VARIANTS
        },
        "Cold run, seconds per stage call (compute + persist):": {name: cold[name].stage_seconds for name in VARIANTS},
    }
    for title, seconds in per_stage_tables.items():
        lines += ["", title, "", "| variant | " + " | ".join(s.__name__ for s in STAGES) + " |",
                  "|---|" + "---:|" * len(STAGES)]  # fmt: skip
        for name in VARIANTS:
            lines.append(f"| {name} | " + " | ".join(f"{seconds[name][s.__name__]:.3f}" for s in STAGES) + " |")
    lines += ["", *cold_table(results["colds"])]
    stage_ratio = med["ours"]["stage"] / base_m["stage"]
    bytes_ratio = sizes["ours"] / base_bytes
    cold_ratio = cold["ours"].wall / base_cold.wall
    frames = cold[BASELINE].output_bytes
    lines += [
        "",
        f"- Target warm-rerun stage time <= {TARGET_STAGE}x {BASELINE}: {stage_ratio:.2f}x "
        f"({'met' if stage_ratio <= TARGET_STAGE else 'MISSED'}).",
        f"- Target bytes on disk <= {TARGET_BYTES}x {BASELINE}: {bytes_ratio:.2f}x "
        f"({'met' if bytes_ratio <= TARGET_BYTES else 'MISSED'}).",
        "- 1st rerun: the first run after the cold one, not in the medians; "
        + "; ".join(f"{name} missed {', '.join(r.missed) or 'nothing'}" for name, r in results["first"].items())
        + ".",
        f"- In-memory size of all stage outputs (frames): {frames / 1e6:.0f} MB; bytes on disk per in-memory byte: "
        + ", ".join(f"{name} {sizes[name] / frames:.2f}" for name in VARIANTS)
        + ".",
        f"- Cold run wall (first round), ours vs {BASELINE}: {cold_ratio:.2f}x (ours fsyncs every object and "
        "manifest).",
        f"- Load average (1/5/15 min): {results['load'][0]} at the start, {results['load'][1]} at the end.",
        "- Metrics (identical for every variant and run): "
        + ", ".join(f"{k} {v:.4f}" for k, v in results["metrics"].items()),
        "",
        "Command (from the repository root):",
        "",
        f"    {command}",
    ]
    return "\n".join(lines) + "\n"


def _loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _version(dist: str) -> str:
    from importlib import metadata

    return metadata.version(dist)


def main() -> None:
    global VARIANTS, BASELINE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold", type=int, default=3, help="cold runs per variant, each into new caches (>= 1)")
    ap.add_argument("--warm", type=int, default=5, help="warm reruns per variant (>= 3, median)")
    ap.add_argument("--dir", type=Path, default=None, help="where the caches go (default: a temp dir)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    ap.add_argument("--profile", action="store_true", help="cProfile one extra warm run of ours (stderr)")
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(ALL_VARIANTS)} (ours and joblib always; ours-sync: "
        "background commits off, the before/after of #12's pipelined commit; ours-small: frames = 'small')",
    )
    args = ap.parse_args()
    if args.cold < 1:
        ap.error("--cold must be >= 1")
    if args.warm < 3:
        ap.error("--warm must be >= 3 (medians)")
    if args.cols < 10:
        ap.error("--cols must be >= 10")
    chosen = tuple(v for v in ALL_VARIANTS if v in set(args.variants.split(",")) | {"ours", "joblib"})
    if set(args.variants.split(",")) - set(ALL_VARIANTS):
        ap.error(f"--variants: choose from {', '.join(ALL_VARIANTS)}")
    VARIANTS = chosen
    BASELINE = "prefect" if "prefect" in VARIANTS else VARIANTS[-1]
    params = {"rows": args.rows, "cols": args.cols, "epochs": args.epochs, "seed": args.seed}
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.dir))
    t0 = time.perf_counter()
    proc, api_url = start_server(base / "prefect-home")
    _log(f"prefect server at {api_url} (pid {proc.pid}), started in {time.perf_counter() - t0:.1f}s")
    try:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            load_before = _loadavg()
            results = bench(params, args.cold, args.warm, base, args.profile)
            results["load"] = (load_before, _loadavg())
    finally:
        stop_server(proc)
        shutil.rmtree(base, ignore_errors=True)
    _log(f"total {time.perf_counter() - t0:.0f}s")
    if results["profile"]:
        _log(results["profile"])
    command = " ".join(["/work/venv/bin/python", "benchmarks/bench_pipeline.py", *sys.argv[1:]])
    text = report(results, params, args.warm, command)
    print(text)
    if args.markdown:
        title = "# Pipeline benchmark: our stages vs Prefect native caching vs joblib.Memory"
        args.markdown.write_text(f"{title}\n\n{text}")


if __name__ == "__main__":
    main()
