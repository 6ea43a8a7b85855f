"""Fingerprinting DataFrames: ours vs Prefect's INPUTS policy vs joblib.hash vs raw xxh3.

A script, not a test. Time is the best of N runs in this process; peak extra memory is
measured in a fresh subprocess per (frame, method): the frame is built, every method is
warmed up on a 10-row frame of the same schema (so lazy imports are not counted), the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), the method runs once, and
the reported number is VmHWM - VmRSS: bytes the hashing itself added, numpy, Arrow and
malloc alike.

    /work/venv/bin/python benchmarks/bench_fingerprint.py [--quick] [--markdown PATH]

``--interleaved`` measures the rows of issue #12 side by side instead, each method once
per round in turn, ratios taken per round (min / median / max) in wall and CPU time:
a fitted RandomForest (100 trees) vs raw xxh3 over its trees' ``nodes``/``values``
buffers, Prefect INPUTS and joblib.hash; the same forest after a joblib round trip (its
node padding no longer zero) vs raw xxh3; the mixed 1e6-row frame (and its Arrow string
column alone) vs raw xxh3 over the same buffers.

    python benchmarks/bench_fingerprint.py --interleaved --markdown benchmarks/_fingerprint_interleaved.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xxhash

METHODS = ("ours", "raw xxh3", "prefect INPUTS", "joblib.hash")
# ms-level calls: more tries on a shared machine
REPEATS = {"ours": 15, "raw xxh3": 15, "prefect INPUTS": 2, "joblib.hash": 2}
TARGETS = {"prefect INPUTS": 30.0, "joblib.hash": 10.0}  # float frames; the mixed frame: >= 5x both
MIXED_TARGET = 5.0
MEMORY_TARGET = 0.10  # extra peak <= 10% of the frame
RAW_TARGET = 2.0  # ours within 2x of raw xxh3 over the same buffers
# The big numeric frame, tightened when keys grew subclass/order checks (issue #9): those must
# cost nothing there.
BIG = "float 1e7 x 10"
BIG_TARGETS = {"prefect INPUTS": 40.0, "raw xxh3": 1.3}


def make_frame(case: str, rows: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    kind, n = CASES[case]
    n = rows or n
    if kind == "float":
        return pd.DataFrame({f"f{i}": rng.random(n) for i in range(10)})
    words = np.array([f"item-{k:05d}" for k in range(50_000)])
    strings = words[rng.integers(0, len(words), n)].tolist()
    data = {
        "i0": rng.integers(0, 1_000_000, n),
        "i1": rng.integers(-50, 50, n).astype("int32"),
        "f0": rng.random(n),
        "f1": rng.normal(size=n),
        "s": pd.Series(strings, dtype=object if kind == "mixed-object" else "str"),
        "cat": pd.Categorical(rng.choice(["red", "green", "blue", "cyan"], n)),
        "ts": pd.date_range("2020-01-01", periods=n, freq="s"),
    }
    return pd.DataFrame(data)


CASES = {
    "float 1e6 x 10": ("float", 1_000_000),
    "float 1e7 x 10": ("float", 10_000_000),
    "mixed 1e6": ("mixed", 1_000_000),
    "mixed 1e6 (object strings)": ("mixed-object", 1_000_000),  # extra: text as object dtype
}


def raw_buffers(df: pd.DataFrame):
    """The buffers the frame's content lives in, zero-copy, column by column."""
    import pyarrow as pa

    for _, col in df.items():
        arr = col.array
        if isinstance(arr, pd.Categorical):
            yield np.asarray(arr.codes)
        elif hasattr(arr, "asi8"):
            yield arr.asi8
        elif isinstance(arr, pd.arrays.ArrowExtensionArray):
            chunked = arr.__arrow_array__()
            for chunk in chunked.chunks if isinstance(chunked, pa.ChunkedArray) else [chunked]:
                yield from (b for b in chunk.buffers() if b is not None)
        elif col.dtype == object:  # raw xxh3 has no buffer to read: the utf-8 text
            yield "".join(col.to_list()).encode()
        else:
            yield col.to_numpy()


def run_method(method: str, df: pd.DataFrame) -> str:
    if method == "ours":
        from pipeline.fingerprint import fingerprint

        return fingerprint(df)
    if method == "raw xxh3":
        h = xxhash.xxh3_128()
        for buf in raw_buffers(df):
            h.update(buf)
        return h.hexdigest()
    if method == "prefect INPUTS":
        from prefect.cache_policies import INPUTS

        return INPUTS.compute_key(task_ctx=None, inputs={"df": df}, flow_parameters={})
    if method == "joblib.hash":
        import joblib

        return joblib.hash(df)
    raise ValueError(method)


def best_time(method: str, df: pd.DataFrame, repeats: int) -> float:
    run_method(method, df.head(10))  # imports and lazy registration are not timed
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        run_method(method, df)
        times.append(time.perf_counter() - t0)
    return min(times)


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _give_back_free_memory() -> None:
    """Return freed heap to the OS, so a later allocation can't hide in it."""
    import ctypes

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_child(case: str, method: str, rows: int | None) -> None:
    """Runs in a fresh interpreter: print the extra peak memory of one method on one frame."""
    import tracemalloc

    df = make_frame(case, rows)
    run_method(method, make_frame(case, 10))
    _give_back_free_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status()["VmRSS"]
    run_method(method, df)
    extra = _status()["VmHWM"] - before
    _give_back_free_memory()
    tracemalloc.start()
    run_method(method, df)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"extra": extra, "traced": traced}))


def peak_extra(case: str, method: str, rows: int | None) -> tuple[int, int]:
    """(peak extra RSS, tracemalloc peak) of one call, from a fresh interpreter."""
    cmd = [sys.executable, __file__, "--child", case, method] + (["--rows", str(rows)] if rows else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["extra"], result["traced"]


def make_forest():
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(20_000, 20, random_state=0)
    return RandomForestClassifier(100, random_state=0, n_jobs=1).fit(X, y)


def forest_raw(model) -> bytes:
    """xxh3_128 streamed over every tree's two arrays, zero-copy: the floor."""
    h = xxhash.xxh3_128()
    for est in model.estimators_:
        state = est.tree_.__getstate__()
        h.update(state["nodes"])
        h.update(state["values"])
    return h.digest()


def _call(method: str, value) -> object:
    if method == "raw xxh3" and not isinstance(value, (pd.DataFrame, pd.Series)):
        return forest_raw(value)
    if method == "raw xxh3" and isinstance(value, pd.Series):
        return run_method(method, value.to_frame())
    return run_method(method, value)


def interleaved(value, methods: tuple[str, ...], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Each method once per round, in turn; per-method (wall, CPU) seconds of every round.
    CPU is this thread's time: what a loaded machine's preemption does not inflate."""
    for m in methods:
        _call(m, value)  # imports, lazy registration, first-call caches
    out: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            gc.collect()
            t0, c0 = time.perf_counter(), time.thread_time()
            _call(m, value)
            out[m].append((time.perf_counter() - t0, time.thread_time() - c0))
    return out


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _spread(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{xs[0]:.2f}x / {xs[len(xs) // 2]:.2f}x / {xs[-1]:.2f}x"


def dirty_padding(model) -> int:
    """How many tree nodes of ``model`` have a non-zero padding byte."""
    count = 0
    for est in model.estimators_:
        nodes = est.tree_.__getstate__()["nodes"]
        tail = nodes.view(np.uint8).reshape(len(nodes), -1)[:, 57:]  # after missing_go_to_left
        count += int(tail.any(axis=1).sum())
    return count


def interleaved_report(rounds: int) -> tuple[str, list[tuple[str, bool, str]], str]:
    import io

    import joblib

    rows = [
        "| value | method | median ms wall | median ms CPU | ours / method per round, wall (min / median / max) "
        "| same, CPU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    forest = make_forest()
    buf = io.BytesIO()
    joblib.dump(forest, buf)
    loaded = joblib.load(io.BytesIO(buf.getvalue()))
    nodes = sum(e.tree_.node_count for e in forest.estimators_)
    note = (
        f"Nodes with non-zero padding: fitted {dirty_padding(forest)}, joblib-loaded {dirty_padding(loaded)} "
        f"of {nodes}."
    )
    fitted = f"RandomForest, 100 trees ({nodes} nodes)"
    cases = [
        (fitted, forest, METHODS),
        ("the same forest after a joblib round trip", loaded, ("ours", "raw xxh3")),
        ("mixed 1e6 frame", make_frame("mixed 1e6"), ("ours", "raw xxh3")),
    ]
    cases.append(("its Arrow string column", cases[2][1]["s"], ("ours", "raw xxh3")))
    for label, value, methods in cases:
        times = interleaved(value, methods, rounds)
        ours = times["ours"]
        for m in methods:
            wall = [o[0] / t[0] for o, t in zip(ours, times[m])]
            cpu = [o[1] / t[1] for o, t in zip(ours, times[m])]
            med_wall = _median([t[0] for t in times[m]]) * 1e3
            med_cpu = _median([t[1] for t in times[m]]) * 1e3
            spread = "1.00x | 1.00x" if m == "ours" else f"{_spread(wall)} | {_spread(cpu)}"
            rows.append(f"| {label} | {m} | {med_wall:.2f} | {med_cpu:.2f} | {spread} |")
        vs_raw = _median([o[0] / t[0] for o, t in zip(ours, times["raw xxh3"])])
        vs_raw_cpu = _median([o[1] / t[1] for o, t in zip(ours, times["raw xxh3"])])
        got = f"{vs_raw:.2f}x (CPU {vs_raw_cpu:.2f}x)"
        if label == fitted:
            verdicts.append((f"{label}: within 3x raw xxh3 of its arrays (median, wall)", vs_raw <= 3.0, got))
            vs_p = _median([p[0] / o[0] for o, p in zip(ours, times["prefect INPUTS"])])
            vs_p_cpu = _median([p[1] / o[1] for o, p in zip(ours, times["prefect INPUTS"])])
            got = f"{vs_p:.1f}x (CPU {vs_p_cpu:.1f}x)"
            verdicts.append((f"{label}: >= 5x faster than Prefect INPUTS (median, wall)", vs_p >= 5.0, got))
        elif label.startswith("mixed"):
            verdicts.append((f"{label}: within 1.5x raw xxh3 (median, wall)", vs_raw <= 1.5, got))
        elif label.startswith("the same forest"):
            verdicts.append((f"{label}: within 3x raw xxh3 (extra, not a target; median, wall)", vs_raw <= 3.0, got))
    return "\n".join(rows), verdicts, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e5-row frames, for a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the results to this file")
    parser.add_argument("--interleaved", action="store_true", help="the #12 rows, interleaved rounds")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(*args.child, args.rows)
        return
    if args.interleaved:
        load = os.getloadavg()
        table, verdicts, note = interleaved_report(args.rounds)
        checks = "\n".join(f"- [{'x' if ok else ' '}] {name}: {got}" for name, ok, got in verdicts)
        end = os.getloadavg()
        env = (
            f"python {platform.python_version()}, {len(os.sched_getaffinity(0))} CPUs, {args.rounds} rounds, "
            f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, at the end {end[0]:.1f}"
        )
        print(f"{env}\n\n{table}\n\n{note}\n\nTargets:\n{checks}")
        if args.markdown:
            command = " ".join(["python", *sys.argv])
            args.markdown.write_text(
                "# Fingerprint rows of issue #12, interleaved\n\n"
                f"Command (from the repository root):\n\n```\n{command}\n```\n\n"
                f"Environment: {env}. Each round runs every method once, in turn; the ratio is taken\n"
                "per round, so the load of the shared machine hits every method alike. Wall is\n"
                "`perf_counter`, CPU is `thread_time` (not inflated by preemption on a loaded machine).\n"
                "Raw xxh3 for the forest: xxh3_128 over each tree's `nodes` and `values` arrays\n"
                "(`tree_.__getstate__()`), nothing else (no hyperparameters, no framing). For the fitted\n"
                "forest these are exactly the array bytes our key's stream carries (its padding is all\n"
                "zero, see below); our stream adds each estimator's hyperparameters, `classes_` and\n"
                "the arrays' dtype/shape headers. For the joblib-loaded forest raw xxh3 hashes the\n"
                "loaded bytes, padding as it lies; ours hashes them with the padding zeroed, so the\n"
                "two forests get one key.\n\n"
                f"{table}\n\n{note}\n\nTargets:\n\n{checks}\n"
            )
        return

    rows = 100_000 if args.quick else None
    lines = [
        "| frame | method | seconds (best of N) | GB/s | time vs ours | peak extra RSS | % of frame "
        "| tracemalloc peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for case in CASES:
        df = make_frame(case, rows)
        size = int(df.memory_usage(deep=True, index=True).sum())
        print(f"{case}: {size / 1e6:.0f} MB, dtypes {dict(df.dtypes.astype(str))}", file=sys.stderr)
        results = {}
        for method in METHODS:
            seconds = best_time(method, df, REPEATS[method])
            extra, traced = peak_extra(case, method, rows)
            results[method] = (seconds, max(extra, traced), extra, traced)
            note = f"  {method}: {seconds:.4f} s, +{extra / 1e6:.1f} MB RSS, {traced / 1e6:.1f} MB traced"
            print(note, file=sys.stderr)
        ours = results["ours"][0]
        for method, (seconds, _, extra, traced) in results.items():
            ratio = "1.0x" if method == "ours" else f"{seconds / ours:.1f}x"
            lines.append(
                f"| {case} ({size / 1e6:.0f} MB) | {method} | {seconds:.4f} | {size / seconds / 1e9:.2f} | "
                f"{ratio} | {extra / 1e6:.1f} MB | {100 * extra / size:.1f}% | {traced / 1e6:.1f} MB |"
            )
        float_frame = case.startswith("float")
        big = case == BIG and rows is None
        for method in ("prefect INPUTS", "joblib.hash"):
            need = TARGETS[method] if float_frame else MIXED_TARGET
            need = BIG_TARGETS.get(method, need) if big else need
            got = results[method][0] / ours
            verdicts.append((f"{case}: >= {need:g}x faster than {method}", got >= need, f"{got:.0f}x"))
        need = BIG_TARGETS["raw xxh3"] if big else RAW_TARGET
        got = ours / results["raw xxh3"][0]
        verdicts.append((f"{case}: within {need:g}x of raw xxh3", got <= need, f"{got:.2f}x"))
        got = results["ours"][1] / size
        name = f"{case}: extra peak (max of RSS, traced) <= 10% of frame"
        verdicts.append((name, got <= MEMORY_TARGET, f"{100 * got:.1f}%"))
        del df
        gc.collect()

    env = (
        f"python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
        f"xxhash {xxhash.VERSION} (libxxhash {xxhash.XXHASH_VERSION}), {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average at start {os.getloadavg()[0]:.1f}"
    )
    table = "\n".join(lines)
    checks = "\n".join(f"- [{'x' if ok else ' '}] {name}: {got}" for name, ok, got in verdicts)
    print(f"{env}\n\n{table}\n\nTargets:\n{checks}")
    if args.markdown:
        command = " ".join([Path(sys.executable).as_posix(), *sys.argv])
        args.markdown.write_text(
            "# Fingerprint benchmark results\n\n"
            f"Command (from the repository root):\n\n```\n{command}\n```\n\n"
            f"Environment: {env}\n\n"
            "Seconds: best of N runs in one process (N = 15 for ours and raw xxh3, 2 for Prefect and joblib).\n"
            "Peak extra RSS: measured in a fresh subprocess per (frame, method) after a warm-up on a\n"
            "10-row frame of the same schema and after handing free heap back to the OS (malloc_trim,\n"
            "Arrow pool release_unused): VmHWM - VmRSS with the peak mark reset through\n"
            "/proc/self/clear_refs just before the call (covers numpy, Arrow and malloc alike).\n"
            "tracemalloc peak: a second call in the same subprocess under tracemalloc (Python and\n"
            "numpy allocations; not Arrow's pool). The memory target is checked on the larger of the two.\n"
            "Raw xxh3: xxh3_128 streamed over the frame's own buffers (numpy columns, Arrow buffers,\n"
            "categorical codes, datetime int64s; for object strings the joined utf-8 text).\n"
            "Prefect: `INPUTS.compute_key(task_ctx=None, inputs={'df': df}, flow_parameters={})`.\n"
            "The mixed frame's text column is pandas 3's default `str` dtype (Arrow-backed). The last frame,\n"
            "the same data with text as `object` dtype, is an extra beyond the required three: it has no\n"
            "buffer to hash, so its 'raw xxh3' is joining and encoding the strings (no type check, no\n"
            "framing) and the within-2x target does not strictly apply to it.\n\n"
            f"{table}\n\nTargets:\n\n{checks}\n"
        )


if __name__ == "__main__":
    main()
