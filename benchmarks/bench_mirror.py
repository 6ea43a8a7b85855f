"""Mirror push throughput vs a plain ``s3fs.put`` of the same files, on a real S3 server.

A script, not a test. It starts SeaweedFS on 127.0.0.1 (tests/s3server.py), builds a local
store of committed results through the public API (fsync off: only the copy is measured),
then, interleaved over ``--rounds`` rounds (the order alternates), copies it to a fresh
``s3://`` prefix twice:

- ``push``: ``pipeline.store.mirror.push`` (what ``python -m pipeline mirror push`` runs):
  catalogue both stores, re-hash every object on the way, objects first, manifests last;
- ``s3fs.put``: ``S3FileSystem.put(local_files, remote_paths)`` of the same files (every
  object and manifest, and store.json): s3fs's own batched, concurrent upload, no checks.

Two workloads: many small results (a few KB each) and fewer large ones (1 MB each). It
prints MB/s per round, the per-round ratio push/put (>= 0.8 is the target) and
min/median/max.

    python benchmarks/bench_mirror.py [--rounds 5] [--small 1000] [--large 64]
                                      [--markdown benchmarks/_mirror_results.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import Manifest, Store  # noqa: E402
from pipeline.store.mirror import Mirrors  # noqa: E402
from pipeline.store.mirror_sync import push  # noqa: E402
from tests import s3server  # noqa: E402


def build(path: Path, n: int, size: int) -> int:
    """A local store of ``n`` results of ``size`` bytes of random floats each; its file bytes."""
    store = Store(path, fsync=False)
    rng = np.random.default_rng(n)
    for i in range(n):
        tree = store.save(rng.standard_normal(max(1, size // 8)))
        store.commit(Manifest(stage=f"stage{i % 20:02d}", key=f"xxh3:{i:032x}", outputs=tree))
    return sum(f.stat().st_size for f in files(path))


def files(path: Path) -> list[Path]:
    """Every file of a store but temp files: what either way copies."""
    return sorted(p for p in path.rglob("*") if p.is_file() and "tmp" not in p.relative_to(path).parts)


def run_push(server: s3server.S3Server, local: Path) -> float:
    primary = Store(local, fsync=False)
    target = Store(server.new_url(), **server.storage_options)
    t0 = time.perf_counter()
    [report] = push(primary, Mirrors([target]))
    seconds = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"push failed: {report.failed[:3]}")
    return seconds


def run_put(server: s3server.S3Server, local: Path) -> float:
    fs = server.filesystem()
    root = server.new_url().removeprefix("s3://")
    found = files(local)
    remote = [f"{root}/{p.relative_to(local).as_posix()}" for p in found]
    t0 = time.perf_counter()
    fs.put([str(p) for p in found], remote)
    return time.perf_counter() - t0


def measure(server: s3server.S3Server, local: Path, nbytes: int, rounds: int) -> list[tuple[float, float]]:
    out = []
    for r in range(rounds):
        order = (run_push, run_put) if r % 2 == 0 else (run_put, run_push)
        t = {fn.__name__: fn(server, local) for fn in order}
        out.append((nbytes / t["run_push"] / 1e6, nbytes / t["run_put"] / 1e6))
    return out


def report(results: dict[str, tuple[int, int, list[tuple[float, float]]]], a: argparse.Namespace) -> str:
    load = os.getloadavg()
    lines = [
        "# Mirror push vs s3fs.put (SeaweedFS S3 on 127.0.0.1)",
        "",
        f"Command: `python benchmarks/bench_mirror.py --rounds {a.rounds} --small {a.small} --large {a.large}"
        " --markdown benchmarks/_mirror_results.md`",
        f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 shared cores).",
        "`push` re-hashes every object it copies and writes manifests only after their objects; "
        "`s3fs.put` uploads the same files unchecked. Throughput = store bytes / wall seconds.",
        "",
        "| workload | files | MB | push MB/s (min / median / max) | put MB/s (min / median / max) "
        "| push/put per round | median ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (n_files, nbytes, rows) in results.items():
        pushes, puts = [p for p, _ in rows], [q for _, q in rows]
        ratios = [p / q for p, q in rows]
        lines.append(
            f"| {name} | {n_files} | {nbytes / 1e6:.1f} | {_mmm(pushes)} | {_mmm(puts)} | "
            f"{', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f}x |"
        )
    return "\n".join(lines)


def _mmm(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", type=int, default=1000, help="results of 4 KB")
    ap.add_argument("--large", type=int, default=64, help="results of 1 MB")
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    server = s3server.start(base / f"weed-{uuid.uuid4().hex[:6]}")
    try:
        results = {}
        for name, n, size in (("small results (4 KB)", a.small, 4096), ("large results (1 MB)", a.large, 1 << 20)):
            local = base / name.split()[0]
            nbytes = build(local, n, size)
            results[name] = (len(files(local)), nbytes, measure(server, local, nbytes, a.rounds))
            print(f"{name}: done", file=sys.stderr)
        text = report(results, a)
        print(text)
        if a.markdown:
            a.markdown.write_text(text + "\n")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
