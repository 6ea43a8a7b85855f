"""How the store's commands grow with the number of committed results (1k, 10k, 100k).

A script, not a test. For each size N it builds a store of N stage results through the
public API (``Store.save`` of a small dict + ``Store.commit`` of its manifest, spread over
20 stage names, fsync off to build quickly — the commands measured only read), then times,
interleaved over ``--rounds`` rounds:

- ``python -m pipeline ls``          (a fresh process: wall seconds and its peak RSS)
- ``python -m pipeline gc --dry-run``
- ``python -m pipeline verify``      (also reported as MB/s of object bytes re-hashed)
- one lookup: ``Store.manifest(stage, key)`` of a random committed key, in-process (median of 200)

and prints min/median/max per size and the growth factor from one size to the next
(x10 results: ~10x is linear, less is better than linear).

    python benchmarks/bench_store_scale.py [--sizes 1000 10000 100000] [--rounds 3] [--dir DIR]
                                           [--markdown benchmarks/_store_scale_results.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = 20
COMMANDS = {"ls": ["ls"], "gc --dry-run": ["gc", "--dry-run"], "verify": ["verify"]}

# Runs the CLI in this process and prints its peak RSS (KiB) on stderr's last line.
_CHILD = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv = ['pipeline', *sys.argv[1:]]\n"
    "runpy.run_module('pipeline', run_name='__main__')\n"
)


def _key(i: int) -> str:
    import xxhash

    return "xxh3:" + xxhash.xxh3_128_hexdigest(f"result {i}".encode())


def _build_part(args: tuple[str, int, int]) -> None:
    from pipeline import Manifest, Store

    url, start, stop = args
    store = Store(url, fsync=False)
    now = dt.datetime.now(dt.UTC)
    for i in range(start, stop):
        outputs = store.save({"result": i, "metric": i / 7.0}, what=f"result {i}")
        created = (now - dt.timedelta(seconds=stop - i)).isoformat(timespec="microseconds")
        store.commit(Manifest(stage=f"stage{i % STAGES:02d}", key=_key(i), outputs=outputs, created=created))


def build(url: str, n: int, start: int = 0) -> None:
    """Add results ``start..n`` to the store at ``url`` (two worker processes)."""
    step = max(1, (n - start) // 8)
    parts = [(url, a, min(n, a + step)) for a in range(start, n, step)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_build_part, parts))


def run_command(args: list[str], store: str) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args, "--store", store], capture_output=True, text=True, env=env, cwd=ROOT
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out.stderr.strip().splitlines()[-1:]}")
    rss = next(int(line.split()[1]) for line in reversed(out.stderr.splitlines()) if line.startswith("maxrss"))
    return wall, rss


def lookup_seconds(url: str, n: int) -> float:
    from pipeline import Store

    store = Store(url)
    rng = random.Random(0)
    times = []
    for _ in range(200):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        m = store.manifest(f"stage{i % STAGES:02d}", _key(i))
        times.append(time.perf_counter() - t0)
        assert m is not None and m.key == _key(i)
    return statistics.median(times)


def object_bytes(url: str) -> int:
    from pipeline import Store

    return sum(m.bytes for m in Store(url).manifests())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=a.dir))
    sizes = sorted(a.sizes)
    stores = {}
    try:
        built, previous = base / "store", 0
        for n in sizes:  # one store grown size by size, copied at each size
            t0 = time.perf_counter()
            build(str(built), n, previous)
            previous = n
            stores[n] = base / f"store-{n}"
            shutil.copytree(built, stores[n])
            print(f"built {n} results in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows: dict[tuple[int, str], list[tuple[float, int]]] = {}
        for r in range(a.rounds):
            for n in sizes if r % 2 == 0 else reversed(sizes):
                for name, args in COMMANDS.items():
                    rows.setdefault((n, name), []).append(run_command(args, str(stores[n])))
        lookups = {n: lookup_seconds(str(stores[n]), n) for n in sizes}
        volume = {n: object_bytes(str(stores[n])) for n in sizes}
        text = report(sizes, rows, lookups, volume, a)
        print(text)
        if a.markdown:
            a.markdown.write_text(text + "\n")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(sizes, rows, lookups, volume, a) -> str:
    lines = [
        "## Store scale benchmark results",
        "",
        "Command (from the repository root):",
        "",
        "```",
        "python benchmarks/bench_store_scale.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"{os.cpu_count()} CPUs, load average at end {os.getloadavg()[0]:.1f}, {a.rounds} interleaved rounds; "
        "wall seconds of a fresh `python -m pipeline ...` process (imports included), min / median / max; "
        "growth = median at this size / median at the previous size.",
        "",
        "| results | command | wall s (min / median / max) | growth | peak RSS MiB | note |",
        "|---|---|---|---|---|---|",
    ]
    for name in COMMANDS:
        prev = None
        for n in sizes:
            walls = [w for w, _ in rows[(n, name)]]
            med = statistics.median(walls)
            growth = f"{med / prev:.2f}x" if prev else ""
            rss = max(r for _, r in rows[(n, name)]) / 1024
            note = f"{volume[n] / min(walls) / 1e6:.1f} MB/s re-hashed" if name == "verify" else ""
            spread = f"{min(walls):.2f} / {med:.2f} / {max(walls):.2f}"
            lines.append(f"| {n:,} | `{name}` | {spread} | {growth} | {rss:.0f} | {note} |")
            prev = med
    prev = None
    for n in sizes:
        growth = f"{lookups[n] / prev:.2f}x" if prev else ""
        lines.append(f"| {n:,} | one lookup (in-process) | {lookups[n] * 1e3:.3f} ms median of 200 | {growth} | | |")
        prev = lookups[n]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
