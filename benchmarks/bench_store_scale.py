"""How the store's commands grow with the number of committed results (1k, 10k, 100k).

A script, not a test. For each size N it builds a store of N stage results through the
public API (``Store.put`` of a small dict + ``Store.commit`` of a manifest shaped like the
ones ``StageCache`` writes: code components, params, inputs, versions, run id; spread over
20 stage names; fsync off to build quickly, the commands measured only read), on local disk
and on a SeaweedFS S3 server on 127.0.0.1 (``tests/s3server.py``), then times, interleaved
over ``--rounds`` rounds (sizes in alternating order):

- ``python -m pipeline ls`` (newest 50), ``ls --stage NAME``, ``ls --all``: a fresh process,
  wall seconds and its peak RSS; ``python -m pipeline --help`` is the import floor. The commands
  keep directory listings in one place for the whole run (``PIPELINE_LISTING_CACHE``, see
  ``pipeline.store.dir_times``); ``ls (listing not kept)`` is ``ls`` with none kept from before,
  as the first ``ls`` after a run that wrote to every stage
- ``python -m pipeline gc --dry-run``
- ``python -m pipeline verify``      (with manifests/s and MB/s of object bytes re-hashed)
- one lookup: ``Store.manifest(stage, key)`` of a random committed key, in-process (median of
  200), and the same with the result loaded

It prints min/median/max per size and the growth factor from one size to the next (x10
results: ~10x is linear, less is better than linear). A last table checks that ``verify`` is
bound by hashing on large objects: ``Store.verify()`` of a store of a few 64 MB objects vs
xxh3_128 alone over the same bytes in memory.

    python benchmarks/bench_store_scale.py [--sizes 1000 10000 100000] [--s3-sizes 1000 10000]
        [--rounds 3] [--s3-rounds 2] [--baseline DIR] [--dir DIR] [--markdown benchmarks/_store_scale_results.md]
        [--s3-keep DIR] [--commands ls "gc --dry-run" ...]

``--s3-keep DIR``: the SeaweedFS server keeps its data in DIR, and the S3 stores built there are
remembered (``DIR/stores.json``): a later run with the same DIR reuses them instead of building
again (100k results take minutes to build).

``--baseline DIR``: a source tree of the code before (``git archive main | tar -x -C DIR``); its
``ls``, ``gc --dry-run`` and ``verify`` run side by side in the same rounds (local disk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.store.manifest_index import WINDOW_MS  # noqa: E402

STAGES = 20
COMMANDS = {
    "--help (import floor)": ["--help"],
    "ls": ["ls"],
    "ls (listing not kept)": ["ls"],
    "ls --stage stage07": ["ls", "--stage", "stage07"],
    "ls --all": ["ls", "--all"],
    "gc --dry-run": ["gc", "--dry-run"],
    "verify": ["verify"],
}
BEFORE = ("ls", "gc --dry-run", "verify")
"""Commands run side by side with ``--baseline`` code too."""
ONLY: list[str] = []
"""The commands to run (``--commands``; empty: all)."""
COLD = ("ls", "ls --stage stage07", "ls --all", "gc --dry-run", "verify")
"""On S3 also run with an empty manifest cache (``pipeline.store.manifest_cache``): the first time."""

# Runs the CLI in this process; prints its peak RSS (KiB) and CPU seconds on stderr's last line.
_CHILD = (
    "import atexit, resource, runpy, sys\n"
    "def _end(u=resource.getrusage):\n"
    "    r = u(resource.RUSAGE_SELF)\n"
    "    print('maxrss', r.ru_maxrss, r.ru_utime + r.ru_stime, file=sys.stderr)\n"
    "atexit.register(_end)\n"
    "sys.argv = ['pipeline', *sys.argv[1:]]\n"
    "runpy.run_module('pipeline', run_name='__main__')\n"
)


def _key(i: int) -> str:
    import xxhash

    return "xxh3:" + xxhash.xxh3_128_hexdigest(f"result {i}".encode())


def _fp(text: str) -> str:
    import xxhash

    return "xxh3:" + xxhash.xxh3_128_hexdigest(text.encode())


def _manifest(i: int, outputs: Any, run_id: str) -> Any:
    """A manifest shaped like StageCache's (about 1.7 KB on disk)."""
    from pipeline import Manifest
    from pipeline.fingerprint import Component
    from pipeline.store.manifest import library_versions

    stage = f"stage{i % STAGES:02d}"
    components = tuple(
        Component(kind, f"flows.bench.{stage}.{name}", _fp(f"{kind} {name} {i % 7}"))
        for kind, name in [("code", "body"), ("defaults", "body"), ("code", "helper"), ("global", "CONSTANT"),
                           ("package", "numpy"), ("package", "pandas")]
    )  # fmt: skip
    params = {p: {"fingerprint": _fp(f"{p}={i % 11}"), "repr": repr(i % 11)} for p in ("lr", "depth", "seed")}
    return Manifest(
        stage=stage,
        key=_key(i),
        outputs=outputs,
        code=_fp(f"code {i % 7}"),
        code_components=components,
        params=params,
        inputs={"frame": _fp(f"frame {i}"), "labels": _fp(f"labels {i}")},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        run_id=run_id,
        compute_seconds=round(random.random(), 6),
        save_seconds=0.001,
        versions=library_versions(),
        extra={"classes": {outputs.object: "builtins:dict"}},
    )


def _build_part(args: tuple[str, dict[str, Any], int, int, int]) -> None:
    from pipeline import Store

    url, options, start, stop, threads = args
    store = Store(url, fsync=False, **options)
    run_id = str(uuid.uuid4())

    def one(i: int) -> None:
        outputs = store.put({"result": i, "metric": i / 7.0}, what=f"result {i}")
        store.commit(_manifest(i, outputs, run_id))

    if threads == 1:
        for i in range(start, stop):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(start, stop)))


def build(url: str, n: int, options: dict[str, Any], threads: int = 1) -> float:
    """Write results ``0..n`` into the store at ``url`` (two worker processes); seconds taken."""
    t0 = time.perf_counter()
    step = max(1, n // 8)
    parts = [(url, options, a, min(n, a + step), threads) for a in range(0, n, step)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_build_part, parts))
    return time.perf_counter() - t0


def build_s3(url: str, n: int, options: dict[str, Any], base: Path) -> float:
    """Write results ``0..n`` into the S3 store at ``url``: the same builder into a local
    store, its objects uploaded by 32 parallel PUTs, then each manifest committed through
    ``Store.commit`` (32 threads), ``created`` taken at that commit (as a writer's would be:
    the listing's ``LastModified`` follows it, which ``ls`` relies on); seconds taken."""
    from pipeline.store.s3 import S3Reader

    t0 = time.perf_counter()
    local = base / f"s3-build-{n}"
    build(str(local), n, {})
    reader = S3Reader.open(url.removeprefix("s3://"), options)
    objects = [p for p in (local / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp"]

    def put(p: Path) -> None:
        key = reader.prefix + p.relative_to(local).as_posix()
        reader.client.put_object(Bucket=reader.bucket, Key=key, Body=p.read_bytes())

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, objects))
    made = sorted(str(p) for p in (local / "stages").rglob("*.json"))
    parts = [(url, options, str(local), made[i::2]) for i in range(2)]
    with ProcessPoolExecutor(2) as pool:  # two processes of 16 committers each (one is GIL-bound)
        list(pool.map(_commit_part, parts))
    shutil.rmtree(local, ignore_errors=True)
    return time.perf_counter() - t0


def _commit_part(args: tuple[str, dict[str, Any], str, list[str]]) -> None:
    """Commit the local store's manifests at ``paths`` into the S3 store, ``created`` taken now."""
    import dataclasses

    from pipeline import Store

    url, options, local, paths = args
    store, source = Store(url, fsync=False, **options), Store(local, create=False)

    def commit(path: str) -> None:
        rel = Path(path).relative_to(local).as_posix()
        m = source._parse_manifest(rel)
        store.commit(dataclasses.replace(m, created=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(commit, paths))


class Run(NamedTuple):
    wall: float
    cpu: float
    rss_kib: int


LISTINGS = Path(tempfile.gettempdir())
"""Where the commands keep directory listings (``PIPELINE_LISTING_CACHE``); set in ``main``."""


def run_command(args: list[str], store: str, env: dict[str, str], code: Path = ROOT, kept: bool = True) -> Run:
    """One fresh ``python -m pipeline ...`` process of the code at ``code``. ``kept=False``: with
    no directory listing kept from before (as the first ``ls`` after a run changed every stage)."""
    # The code before keeps its listings apart: another format of kept listing is listed afresh.
    listings = LISTINGS / ("kept" if code == ROOT else "kept-before") if kept else Path(tempfile.mkdtemp(dir=LISTINGS))
    env = {**os.environ, **env, "PYTHONPATH": str(code), "COLUMNS": "200", "PIPELINE_LISTING_CACHE": str(listings)}
    where = [] if args == ["--help"] else ["--store", store]
    cmd = [sys.executable, "-c", _CHILD, *args, *where]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out.stderr.strip().splitlines()[-3:]}")
    end = next(line.split() for line in reversed(out.stderr.splitlines()) if line.startswith("maxrss"))
    return Run(wall, float(end[2]), int(end[1]))


def lookup_seconds(url: str, n: int, options: dict[str, Any]) -> tuple[float, float]:
    """Median seconds of ``Store.manifest`` of a random key, and of that plus loading its result."""
    from pipeline import Store

    store = Store(url, create=False, **options)
    rng = random.Random(0)
    bare, loaded = [], []
    for _ in range(200):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        m = store.manifest(f"stage{i % STAGES:02d}", _key(i))
        t1 = time.perf_counter()
        value = store.load(m.outputs)
        t2 = time.perf_counter()
        assert m is not None and m.key == _key(i) and value["result"] == i
        bare.append(t1 - t0)
        loaded.append(t2 - t0)
    return statistics.median(bare), statistics.median(loaded)


def hashing_bound(base: Path, n_objects: int = 6, mb: int = 64) -> dict[str, float]:
    """``Store.verify()`` of large objects (warm page cache) vs xxh3_128 alone over the same
    bytes already in memory (the hashing bound), best of 3 each."""
    import numpy as np
    import xxhash

    from pipeline import Store

    store = Store(base / "big", fsync=False)
    rng = np.random.default_rng(0)
    for i in range(n_objects):
        leaf = store.put(rng.random(mb * (1 << 20) // 8), what=f"array {i}")
        store.commit(_manifest(i, leaf, "big"))
    held = [p.read_bytes() for p in (base / "big" / "objects").rglob("*.joblib")]
    verify, raw = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        report = store.verify()
        verify.append(time.perf_counter() - t0)
        assert report.clean and report.ok == n_objects
        t0 = time.perf_counter()
        for data in held:
            xxhash.xxh3_128_hexdigest(data)
        raw.append(time.perf_counter() - t0)
    shutil.rmtree(base / "big", ignore_errors=True)
    return {"bytes": sum(map(len, held)), "verify": min(verify), "raw": min(raw)}


class Target:
    """One place the stores live: local disk, or the S3 server."""

    def __init__(self, name: str, base: Path, server: Any = None, keep: Path | None = None) -> None:
        self.name, self.base, self.server, self.keep = name, base, server, keep
        self.options: dict[str, Any] = server.storage_options if server else {}
        self.env: dict[str, str] = {}
        if server:
            self.env = {"AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret,
                        "AWS_ENDPOINT_URL": server.endpoint,
                        "PIPELINE_MANIFEST_CACHE": str(base / "manifest-cache")}  # fmt: skip

    def url(self, n: int) -> str:
        if self.server:
            return self.server.new_url()
        return str(self.base / f"store-{n}")

    def kept(self, n: int) -> str | None:
        """The URL of a store of ``n`` results an earlier run built and kept (``--s3-keep``)."""
        if self.keep is None or not (self.keep / "stores.json").exists():
            return None
        return json.loads((self.keep / "stores.json").read_text()).get(str(n))

    def remember(self, n: int, url: str) -> None:
        if self.keep is not None:
            path = self.keep / "stores.json"
            stores = json.loads(path.read_text()) if path.exists() else {}
            path.write_text(json.dumps({**stores, str(n): url}))


def measure(target: Target, sizes: list[int], rounds: int, baseline: Path | None) -> dict[str, Any]:
    urls, built = {}, {}
    for n in sizes:
        kept = target.kept(n)
        if kept is not None:
            urls[n], built[n] = kept, 0.0
            print(f"{target.name}: reusing the store of {n} results at {kept}", file=sys.stderr)
            continue
        urls[n] = target.url(n)
        if target.server:
            built[n] = build_s3(urls[n], n, target.options, target.base)
            target.remember(n, urls[n])
        else:
            built[n] = build(urls[n], n, target.options)
        print(f"{target.name}: built {n} results in {built[n]:.1f} s", file=sys.stderr)
    if target.server:  # let the deltas of the build settle past the index's re-read window
        time.sleep(2 * WINDOW_MS / 1000)
    else:  # a directory listed within a second of its last change is not kept (``dir_times.SETTLED``)
        time.sleep(1.5)
    for n in sizes:  # an earlier ls: what "ls" finds kept (untimed; "ls (listing not kept)" has none)
        t0 = time.perf_counter()
        run_command(COMMANDS["ls"], urls[n], target.env)
        if baseline is not None and not target.server:
            run_command(COMMANDS["ls"], urls[n], target.env, baseline)
        if target.server:  # the first reader of a store builds its manifest index from a listing
            print(f"{target.name}: first ls of {n} results {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if target.server:  # a gc has run once (as in a store in use), untimed: the index knows its leftovers
            t0 = time.perf_counter()
            run_command(["gc"], urls[n], target.env)
            print(f"{target.name}: gc of {n} results {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    runs: dict[tuple[int, str], list[Run]] = {}
    before: dict[tuple[int, str], list[Run]] = {}
    cache = target.env.get("PIPELINE_MANIFEST_CACHE")
    for r in range(rounds):
        for n in sizes if r % 2 == 0 else list(reversed(sizes)):
            for name, args in COMMANDS.items():
                if ONLY and name not in ONLY:
                    continue
                kept = name != "ls (listing not kept)"
                if cache and name in COLD:  # first with no cache at all, then (below) warm
                    shutil.rmtree(cache, ignore_errors=True)
                    runs.setdefault((n, f"{name} (cold cache)"), []).append(
                        run_command(args, urls[n], target.env, kept=kept)
                    )
                runs.setdefault((n, name), []).append(run_command(args, urls[n], target.env, kept=kept))
                if baseline is not None and name in BEFORE:  # the same command, the code before: side by side
                    before.setdefault((n, name), []).append(run_command(args, urls[n], target.env, baseline))
        print(f"{target.name}: round {r + 1} done", file=sys.stderr)
    lookups = {n: lookup_seconds(urls[n], n, target.options) for n in sizes}
    volume = {n: object_bytes(urls[n], target.options) for n in sizes}
    manifest_bytes = {n: manifests_bytes(urls[n], target.options) for n in sizes}
    return {"runs": runs, "before": before, "lookups": lookups, "volume": volume, "built": built, "uptime": uptime(),
            "manifest_bytes": manifest_bytes}  # fmt: skip


def manifests_bytes(url: str, options: dict[str, Any]) -> int:
    """Bytes of the stage manifests (local disk; 0 elsewhere)."""
    if "://" in url:
        return 0
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(Path(url) / "stages") for f in files)


def object_bytes(url: str, options: dict[str, Any]) -> int:
    from pipeline import Store

    return sum(m.bytes for m in Store(url, create=False, **options).manifests())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--s3-sizes", type=int, nargs="*", default=[1_000, 10_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--s3-rounds", type=int, default=2)
    ap.add_argument("--baseline", type=Path, default=None, help="the code before (a source tree): run side by side")
    ap.add_argument("--s3-baseline", action="store_true", help="run --baseline side by side on S3 too")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--s3-keep", type=Path, default=None,
                    help="keep the SeaweedFS data and the S3 stores built in DIR; a later run reuses them")  # fmt: skip
    ap.add_argument("--commands", nargs="*", default=[], help="only these of the commands (names as in the table)")
    a = ap.parse_args()
    ONLY[:] = a.commands
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=a.dir))
    global LISTINGS
    LISTINGS = Path(tempfile.mkdtemp(prefix="bench-listings-", dir=a.dir))
    results, server = {}, None
    try:
        if a.sizes:
            results["local disk"] = measure(Target("local disk", base), sorted(a.sizes), a.rounds, a.baseline)
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
        if a.s3_sizes:
            from tests import s3server

            server = s3server.start(a.s3_keep or base / "seaweedfs")
            s3 = Target("S3 (SeaweedFS)", base, server, a.s3_keep)
            s3_baseline = a.baseline if a.s3_baseline else None
            results["S3 (SeaweedFS on 127.0.0.1)"] = measure(s3, sorted(a.s3_sizes), a.s3_rounds, s3_baseline)
        bound = hashing_bound(base) if a.sizes else None
        text = report(results, bound, a)
        print(text)
        if a.markdown:
            a.markdown.write_text(text + "\n")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(LISTINGS, ignore_errors=True)


UPLOADED = " (a local build, its objects uploaded by 32 parallel PUTs, then its manifests committed anew, 32 at once)"


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def report(results: dict[str, Any], bound: dict[str, float] | None, a: Any) -> str:
    lines = [
        "## Store scale benchmark results",
        "",
        "Command (from the repository root):",
        "",
        "```",
        "python benchmarks/bench_store_scale.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"{os.cpu_count()} CPUs shared with other sessions; "
        + (f"{a.rounds} interleaved rounds on local disk, " if a.sizes else "")
        + (f"{a.s3_rounds} on S3 " if a.s3_sizes else "")
        + "(sizes in alternating order); a fresh `python -m pipeline ...` process each time (imports "
        "included; `--help` is that import floor): wall seconds min / median / max, and its CPU seconds "
        "(user + sys, median), which the load disturbs less; growth = median wall at this size / at the "
        "previous size (x10 results: 10x is linear). "
        "Manifests shaped like StageCache's (~1.8 KB), one small JSON object each, 20 stages.",
    ]
    for where, res in results.items():
        sizes = sorted(res["built"])
        built = ", ".join(f"{n:,} in {res['built'][n]:.0f} s" for n in sizes)
        lines += [
            "",
            f"### {where}",
            "",
            f"Built {built}{UPLOADED if 'S3' in where else ''}. Load at the end: `{res['uptime']}`.",
            "",
            "| results | command | wall s (min / median / max) | growth | CPU s | peak RSS MiB | note |",
            "|---|---|---|---|---|---|---|",
        ]
        runs = res["runs"]
        names = [name for name in COMMANDS for name in (name, f"{name} (cold cache)") if (sizes[0], name) in runs]
        if len(names) > len(COMMANDS):
            lines[-2:-2] = [
                "Each `(cold cache)` run starts with no manifest cache (the first time this machine reads the "
                "store: every manifest read by a GET); the run after it, warm, reads only the listing and "
                "the manifests whose ETag changed.",
                "",
            ]
        for name in names:
            prev = None
            for n in sizes:
                walls = [r.wall for r in runs[(n, name)]]
                med = statistics.median(walls)
                growth = f"{med / prev:.2f}x" if prev else ""
                cpu = statistics.median(r.cpu for r in runs[(n, name)])
                rss = max(r.rss_kib for r in runs[(n, name)]) / 1024
                note = ""
                if name.startswith("verify"):
                    best = min(walls)
                    read = res["volume"][n] + res["manifest_bytes"][n]
                    note = (f"{n / best:,.0f} manifests/s, {read / best / 1e9:.3f} GB/s read and checked "
                            f"({res['manifest_bytes'][n] / 1e6:.0f} MB of manifests, {res['volume'][n] / 1e6:.1f} MB "
                            "of objects)")  # fmt: skip
                lines.append(f"| {n:,} | `{name}` | {_spread(walls)} | {growth} | {cpu:.2f} | {rss:.0f} | {note} |")
                prev = med
        for label, index in (("one lookup (`Store.manifest`, in-process)", 0), ("one lookup + load of its result", 1)):
            prev = None
            for n in sizes:
                t = res["lookups"][n][index]
                growth = f"{t / prev:.2f}x" if prev else ""
                lines.append(f"| {n:,} | {label} | {t * 1e3:.3f} ms median of 200 | {growth} | | | |")
                prev = t
        if res["before"]:
            lines += [
                "",
                f"Before / after, side by side in the same rounds (the code before: `{a.baseline}`; "
                "its `ls` lists every result):",
                "",
                "| results | command | before wall s (median) | after wall s (median) | after / before per round "
                "(min / median / max) | before peak RSS MiB | after |",
                "|---|---|---|---|---|---|---|",
            ]
            for name in BEFORE:
                for n in sizes:
                    if (n, name) not in res["before"]:  # not run (--commands)
                        continue
                    old, new = res["before"][(n, name)], runs[(n, name)]
                    ratios = [b.wall / o.wall for o, b in zip(old, new)]
                    lines.append(
                        f"| {n:,} | `{name}` | {statistics.median(r.wall for r in old):.2f} | "
                        f"{statistics.median(r.wall for r in new):.2f} | {_spread(ratios)} | "
                        f"{max(r.rss_kib for r in old) / 1024:.0f} | {max(r.rss_kib for r in new) / 1024:.0f} |"
                    )
    if bound is None:
        return "\n".join(lines)
    gb, v, raw = bound["bytes"] / 1e9, bound["verify"], bound["raw"]
    lines += [
        "",
        "### verify on large objects (is it bound by hashing?)",
        "",
        f"`Store.verify()` of a local store of {bound['bytes'] / 1e6:.0f} MB in 64 MB objects, warm page cache, "
        "vs xxh3_128 alone over the same bytes already in memory (the bound), best of 3 each:",
        "",
        "| | seconds | GB/s | ratio |",
        "|---|---|---|---|",
        f"| `Store.verify()` | {v:.3f} | {gb / v:.2f} | {v / raw:.2f}x |",
        f"| xxh3_128 of the bytes in memory | {raw:.3f} | {gb / raw:.2f} | 1.00x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
