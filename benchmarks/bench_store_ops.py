"""The store operations behind ``ls``, ``gc --dry-run`` and ``verify``, in-process (imports
done, so without the CLI's import floor), side by side with the code before. A script.

For an existing store (build one with ``bench_store_scale.build``: ``--build N``), each round
runs, for the code before (``--baseline DIR``, a source tree) and this tree, interleaved, one
fresh process that times ``Store.newest()`` (the page ``ls`` shows, best of 3), ``gc(store,
dry_run=True)`` (best of 2) and ``Store.verify()`` (once; and for code whose verify takes
``workers``, ``verify(workers=0)``: the lean pass in one process): CPU seconds (the process's
and its worker processes') and wall seconds, and verify's results/s and GB/s read. Directory
listings are kept in a fresh place for the run (``PIPELINE_LISTING_CACHE``); one untimed
``newest()`` first keeps them.

    python benchmarks/bench_store_ops.py --store /tmp/s100k [--build 100000] --baseline /tmp/base [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CHILD = r"""
import inspect, json, resource, sys, time
from pipeline import Store
from pipeline.store.retention import gc
s = Store(sys.argv[1], create=False)
s.newest()
def cpu():  # this process and its finished children (verify's worker processes)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime
def best(f, n):
    out = []
    for _ in range(n):
        c, w = cpu(), time.perf_counter()
        f()
        out.append((cpu() - c, time.perf_counter() - w))
    return min(out)
found = {"ls page": best(s.newest, 3)}
found["ls rss"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0.0)  # MiB, before gc and verify
import tracemalloc
tracemalloc.start()
s.newest()
found["ls traced"] = (tracemalloc.get_traced_memory()[1] / 1e6, 0.0)  # MB allocated at the peak of one page
tracemalloc.stop()
found["gc --dry-run"] = best(lambda: gc(s, dry_run=True), 2)
found["verify"] = best(s.verify, 1)
if "workers" in inspect.signature(s.verify).parameters:  # the lean pass in this process alone
    found["verify (one process)"] = best(lambda: s.verify(workers=0), 1)
    found["verify (two processes)"] = best(lambda: s.verify(workers=1), 1)
print(json.dumps(found))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--build", type=int, default=0, help="build a store of N results there first")
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    a = ap.parse_args()
    if a.build:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import bench_store_scale

        bench_store_scale.build(str(a.store), a.build, {})
    listings = tempfile.mkdtemp(prefix="bench-listings-")
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(a.rounds):
        for label, code in (("before", a.baseline), ("after", ROOT)):
            kept = os.path.join(listings, label)  # apart: another format of kept listing is listed afresh
            env = {**os.environ, "PYTHONPATH": str(code), "PIPELINE_LISTING_CACHE": kept}
            out = subprocess.run([sys.executable, "-c", _CHILD, str(a.store)], env=env, cwd=tempfile.gettempdir(),
                                 capture_output=True, text=True, check=True)  # fmt: skip
            for op, cpu_wall in json.loads(out.stdout.strip().splitlines()[-1]).items():
                found.setdefault((op, label), []).append(tuple(cpu_wall))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [f"`python benchmarks/bench_store_ops.py {' '.join(sys.argv[1:])}`; load at the end: `{load}`", "",
             "| operation | before CPU s (median) | after CPU s (median) | after / before CPU | before wall s "
             "| after wall s | after / before wall |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for op in ("ls page", "gc --dry-run", "verify", "verify (one process)", "verify (two processes)"):
        b, n = found.get((op, "before"), found[("verify", "before")]), found.get((op, "after"))
        if n is None:
            continue
        bc, nc = statistics.median(c for c, _ in b), statistics.median(c for c, _ in n)
        bw, nw = statistics.median(w for _, w in b), statistics.median(w for _, w in n)
        lines.append(f"| `{op}` | {bc:.3f} | {nc:.3f} | {nc / bc:.2f}x | {bw:.2f} | {nw:.2f} | {nw / bw:.2f}x |")
    if ("ls rss", "after") in found and ("ls rss", "before") in found:
        rss = [statistics.median(r for r, _ in found[("ls rss", label)]) for label in ("before", "after")]
        lines += ["", f"Peak RSS of the process after the `ls page` (imports + `Store.newest()`; before gc and "
                      f"verify run): before {rss[0]:.1f} MiB, after {rss[1]:.1f} MiB."]  # fmt: skip
    if ("ls traced", "after") in found and ("ls traced", "before") in found:
        peak = [statistics.median(r for r, _ in found[("ls traced", label)]) for label in ("before", "after")]
        lines += ["", f"Python memory allocated at the peak of one `Store.newest()` with the listings kept "
                      f"(`tracemalloc`): before {peak[0]:.2f} MB, after {peak[1]:.2f} MB."]  # fmt: skip
    results, size = _volume(a.store)
    rates = []
    for op, label in (("verify", "before"), ("verify", "after"), ("verify (one process)", "after"),
                      ("verify (two processes)", "after")):  # fmt: skip
        if (op, label) in found:
            w = statistics.median(w for _, w in found[(op, label)])
            rates.append(f"`{op}` {label}: {results / w:,.0f} results/s, {size / 1e9 / w:.3f} GB/s")
    lines += [
        "",
        f"`verify` reads {results} manifests and their objects, {size / 1e9:.3f} GB (wall medians): "
        + "; ".join(rates)
        + ". CPU counts the process and its worker processes; `verify` decides "
        "by itself how many worker processes pay (none unless a core is idle: load average at most "
        "the cores less one).",
    ]
    print("\n".join(lines))
    if a.markdown is not None:
        a.markdown.write_text("### store operations at scale, before and after (`bench_store_ops.py`)\n\n"
                              + "\n".join(lines) + "\n")  # fmt: skip


def _volume(store: Path) -> tuple[int, int]:
    """(manifests, bytes of manifests + objects) of a local store."""
    n = size = 0
    for top in ("stages", "checkpoints", "objects"):
        for folder, _dirs, files in os.walk(store / top):
            if os.path.basename(folder) == "tmp":
                continue
            n += top != "objects" and sum(f.endswith(".json") for f in files)
            size += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return n, size


if __name__ == "__main__":
    main()
