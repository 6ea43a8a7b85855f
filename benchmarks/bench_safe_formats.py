"""Safe formats vs joblib for the objects the store pickles: is either exact and fast enough?

A script, not a test. joblib (pickle) runs code on load; a store with a signing key refuses
unsigned joblib objects (README "Signed pickles"). Formats that run no code would need no
signature: skops (``skops.io``) for scikit-learn estimators and safetensors for torch state
dicts. For each object, interleaved rounds (each round does every format once, in turn),
in memory (no disk), and per-round ratios format / joblib:

- exact: the loaded object is equal to the saved one — every fitted array and parameter
  (deep equality) and identical predictions; for a state dict, the same keys in the same
  order (the order is part of its content fingerprint) with ``torch.equal`` tensors;
- save and load seconds (skops load includes ``get_untrusted_types``: a loader has to
  decide what to trust), bytes.

And what a signing key costs a joblib object (one SHA-256 pass on write and on read).
Needs ``pip install -e ".[bench,torch]"`` (skops, safetensors, torch).

    python benchmarks/bench_safe_formats.py [--rounds 5] [--signed-mb 200]
        [--markdown benchmarks/_safe_formats_results.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import time
from typing import Any, Callable

import joblib
import numpy as np


def sklearn_objects() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    return {
        "SGDClassifier": (SGDClassifier(loss="log_loss", random_state=0).fit(x, y), x),
        "scaler + SGD pipeline": (make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(x, y), x),
        "RandomForest (100 trees)": (RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y), x),
    }


def torch_objects() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    return {"MLP state_dict (5.3M params)": net.state_dict()}


# -- formats: each returns (save -> bytes, load bytes -> object) -------------------------------
def joblib_format() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    def save(obj: Any) -> bytes:
        buf = io.BytesIO()
        joblib.dump(obj, buf)
        return buf.getvalue()

    return save, lambda data: joblib.load(io.BytesIO(data))


def skops_format() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    import skops.io as sio

    def load(data: bytes) -> Any:
        return sio.loads(data, trusted=sio.get_untrusted_types(data=data))

    return sio.dumps, load


def safetensors_format() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    from safetensors.torch import load, save

    return (lambda sd: save(dict(sd))), load


def same(a: Any, b: Any, depth: int = 0) -> bool:
    """Deep equality of fitted state: arrays by dtype, shape and values (structured arrays
    field by field: their padding bytes are not content), containers item by item, objects
    by their ``__getstate__`` or attributes."""
    if type(a) is not type(b) or depth > 50:
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.names:
            return all(same(a[n], b[n], depth + 1) for n in a.dtype.names)
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k], depth + 1) for k in a)
    if isinstance(a, (int, float, str, bytes, bool, type(None), np.generic, type)):
        return a == b or (a != a and b != b)
    state_a = a.__getstate__() if hasattr(a, "__getstate__") else vars(a)
    state_b = b.__getstate__() if hasattr(b, "__getstate__") else vars(b)
    if state_a is None or not isinstance(state_a, (dict, tuple, list)):
        return state_a == state_b
    return same(state_a, state_b, depth + 1)


def exact_sklearn(a: Any, b: Any, x: Any) -> bool:
    return same(a, b) and np.array_equal(a.predict(x), b.predict(x))


def exact_torch(a: Any, b: Any) -> bool:
    """Same tensors (keys, dtypes, values) in the same order: the order is part of a state
    dict's content fingerprint, so a reordered one gives downstream stages other keys."""
    import torch

    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def exact_torch_tensors(a: Any, b: Any) -> bool:
    import torch

    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def timed(fn: Callable[[Any], Any], arg: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(arg)
    return time.perf_counter() - t0, out


def measure(name: str, obj: Any, formats: dict[str, Any], exact: Callable[[Any, Any], bool], rounds: int) -> list[dict]:
    seconds: dict[str, dict[str, list[float]]] = {f: {"save": [], "load": []} for f in formats}
    sizes: dict[str, int] = {}
    exactness: dict[str, bool] = {}
    for _ in range(rounds):
        for fmt, (save, load) in formats.items():  # interleaved: every round does every format
            ts, data = timed(save, obj)
            tl, back = timed(load, data)
            seconds[fmt]["save"].append(ts)
            seconds[fmt]["load"].append(tl)
            sizes[fmt] = len(data)
            exactness[fmt] = exactness.get(fmt, True) and exact(obj, back)
    rows = []
    for fmt in formats:
        row = {"object": name, "format": fmt, "exact": exactness[fmt], "bytes": sizes[fmt]}
        for op in ("save", "load"):
            row[op] = statistics.median(seconds[fmt][op])
            ratios = [a / b for a, b in zip(seconds[fmt][op], seconds["joblib"][op])]
            row[f"{op} ratio"] = (min(ratios), statistics.median(ratios), max(ratios))
        rows.append(row)
    return rows


def signing_cost(mb: int, rounds: int) -> str:
    """The cost of a signing key on a joblib object of ``mb`` MB (numpy array): one SHA-256
    pass while writing and one before loading. Store on disk without fsync, interleaved."""
    import tempfile

    from pipeline import Store
    from pipeline.store.seal import CHECKSUM, Hmac

    a = np.random.default_rng(0).standard_normal(mb * (1 << 20) // 8)
    with tempfile.TemporaryDirectory() as d:
        stores = {"no key": Store(f"{d}/p", sealer=CHECKSUM, fsync=False),
                  "signing key": Store(f"{d}/s", sealer=Hmac(b"bench key"), fsync=False)}  # fmt: skip
        secs: dict[str, dict[str, list[float]]] = {k: {"save": [], "load": []} for k in stores}
        for r in range(rounds):
            value = a + r  # new bytes each round: no deduplication
            for k, store in stores.items():
                ts, leaf = timed(store.put, value)
                tl, _ = timed(store.load, leaf)
                secs[k]["save"].append(ts)
                secs[k]["load"].append(tl)
    lines = [f"Signing cost, one {mb} MB numpy array through the store (joblib):", "",
             "| op | no key | signing key | signed / unsigned (min / median / max) |", "|---|---|---|---|"]  # fmt: skip
    for op in ("save", "load"):
        ratios = [x / y for x, y in zip(secs["signing key"][op], secs["no key"][op])]
        plain, signed = statistics.median(secs["no key"][op]), statistics.median(secs["signing key"][op])
        lines.append(
            f"| {op} | {plain:.3f} s | {signed:.3f} s "
            f"| {min(ratios):.2f} / **{statistics.median(ratios):.2f}x** / {max(ratios):.2f} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [
        "| object | format | exact | bytes | save | load | save / joblib (min / median / max) | load / joblib |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, lo = r["save ratio"], r["load ratio"]
        lines.append(
            f"| {r['object']} | {r['format']} | {'yes' if r['exact'] else 'NO'} | {r['bytes']:,} | "
            f"{r['save'] * 1e3:.1f} ms | {r['load'] * 1e3:.1f} ms | {s[0]:.2f} / **{s[1]:.2f}x** / {s[2]:.2f} | "
            f"{lo[0]:.2f} / **{lo[1]:.2f}x** / {lo[2]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--signed-mb", type=int, default=200, help="size of the array for the signing cost")
    args = parser.parse_args()
    rows: list[dict] = []
    notes: list[str] = []
    for name, (est, x) in sklearn_objects().items():
        formats = {"joblib": joblib_format(), "skops": skops_format()}
        rows += measure(name, est, formats, lambda a, b, x=x: exact_sklearn(a, b, x), args.rounds)
    for name, sd in torch_objects().items():
        formats = {"joblib": joblib_format(), "safetensors": safetensors_format()}
        rows += measure(name, sd, formats, exact_torch, args.rounds)
        back = safetensors_format()[1](safetensors_format()[0](sd))
        notes.append(
            f"{name}: safetensors tensors equal (keys, dtypes, values): {exact_torch_tensors(sd, back)}; "
            f"key order kept: {list(sd) == list(back)}; type kept: {type(back).__name__} vs {type(sd).__name__}"
        )
    text = table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    text += "\n\n" + signing_cost(args.signed_mb, args.rounds)
    print(text)
    if args.markdown:
        load = os.getloadavg()[0]
        when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = (f"python benchmarks/bench_safe_formats.py --rounds {args.rounds} --signed-mb {args.signed_mb} "
               f"--markdown {args.markdown}")  # fmt: skip
        with open(args.markdown, "w") as f:
            f.write(
                "# Safe formats vs joblib: skops for scikit-learn, safetensors for torch (issue #13)\n\n"
                f"`{cmd}` — {when}, load average {load:.1f}.\n\n"
                "In memory, interleaved rounds; seconds are medians, ratios per round (format / joblib). "
                "Exact: every fitted array and parameter equal (deep equality) and the same predictions; for "
                "torch, the same keys in the same order, dtypes and `torch.equal` tensors.\n\n" + text + "\n"
            )


if __name__ == "__main__":
    main()
