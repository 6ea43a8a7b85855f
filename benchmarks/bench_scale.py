"""Search throughput on a Dask cluster of 1 and 2 worker processes, and the per-task overhead
of the Dask path against Prefect's thread pool.

A script, not a test. One real ``prefect server start`` (127.0.0.1, temp PREFECT_HOME); two
LocalClusters (``pipeline.integrations.dask_runner.local_cluster``, as ``--runner dask`` starts
them: glibc's default malloc thresholds, one thread and one BLAS thread per worker) started
once and kept (1 and 2 worker processes), so cluster start-up is reported apart, not inside
each run.

- search: a grid search of ``--trials`` CPU-bound trials (``benchmarks/scale_flows.py:burn``,
  a fixed amount of matrix work, 3 epochs checkpointed each) in a Prefect flow, into a fresh
  store every run, modes interleaved round by round (rotating order): ``in-process`` (the
  default runner; the search one trial at a time in the flow's process), ``dask-1`` and
  ``dask-2`` (trials two at a time through ``prefect_map()``, plain Dask tasks on the 1- or
  2-worker cluster). Throughput = trials per second of the flow run; the speedup is per round,
  dask-1 time / dask-2 time (target >= 1.7x), min/median/max over rounds. CPU s per trial =
  CPU time of the flow's process and of the cluster's worker processes during the run / trials
  (what a trial costs, whatever else loads the machine).
- per-task overhead: a flow submitting ``--tasks`` trivial stages (fresh keys every run), and a
  flow running a search of ``--tasks`` trivial trials (two at a time through ``prefect_map()``),
  under ``ThreadPoolTaskRunner(max_workers=2)`` and on the 2-worker cluster; per task =
  (flow time with N tasks - flow time with 0 stages / 1 trial) / N (N - 1), median over rounds.

    python benchmarks/bench_scale.py [--trials 8] [--work 800] [--tasks 40] [--rounds 3] [--markdown PATH]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy: one BLAS thread here and in the workers

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_pipeline import start_server, stop_server  # noqa: E402

MODES = ("in-process", "dask-1", "dask-2")
TARGET = 1.7


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far."""
    import psutil

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def run(args: argparse.Namespace, tmp: Path) -> dict:
    import scale_flows
    from distributed import Client
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    from pipeline import Store, use_store
    from pipeline.integrations.dask_runner import local_cluster, on_dask

    t0 = time.perf_counter()
    clusters = {
        n: local_cluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) for n in (1, 2)
    }
    cluster_start = time.perf_counter() - t0
    pids = {}
    for n, c in clusters.items():
        with Client(c) as client:
            pids[n] = list(client.run(os.getpid).values())
    flows = {
        "in-process": (scale_flows.search_flow, 1, []),
        "dask-1": (on_dask(scale_flows.search_flow, clusters[1].scheduler_address), 2, pids[1]),
        "dask-2": (on_dask(scale_flows.search_flow, clusters[2].scheduler_address), 2, pids[2]),
    }
    threads = ThreadPoolTaskRunner(max_workers=2)
    tiny = {  # (label, flow, the count subtracted)
        ("stages", "threads"): (scale_flows.tiny_flow.with_options(task_runner=threads), 0),
        ("stages", "dask-2"): (on_dask(scale_flows.tiny_flow, clusters[2].scheduler_address), 0),
        ("trials", "threads"): (scale_flows.tiny_search_flow.with_options(task_runner=threads), 1),
        ("trials", "dask-2"): (on_dask(scale_flows.tiny_search_flow, clusters[2].scheduler_address), 1),
    }
    search: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    per_task: dict[tuple[str, str], list[float]] = {m: [] for m in tiny}
    values = set()
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for mode, (fl, parallel, _) in flows.items():  # warm-up: imports on the workers, not timed
                with use_store(Store(tmp / f"warm-{mode}")):
                    fl(2, 1, parallel)
            for rnd in range(args.rounds):
                for mode in MODES[rnd % 3 :] + MODES[: rnd % 3]:
                    fl, parallel, workers = flows[mode]
                    with use_store(Store(tmp / f"{mode}-{rnd}")):
                        c0, t = _cpu([os.getpid(), *workers]), time.perf_counter()
                        values.add(tuple(fl(args.trials, args.work, parallel)))
                        search[mode].append(time.perf_counter() - t)
                        cpu[mode].append((_cpu([os.getpid(), *workers]) - c0) / args.trials)
                for label, (fl, base) in tiny.items():
                    times = {}
                    for n in (base, args.tasks):
                        with use_store(Store(tmp / f"tiny-{label[0]}-{label[1]}-{rnd}-{n}")):
                            t = time.perf_counter()
                            fl(n, uuid.uuid4().hex)
                            times[n] = time.perf_counter() - t
                    per_task[label].append((times[args.tasks] - times[base]) / (args.tasks - base))
                print(f"round {rnd}: " + ", ".join(f"{m} {search[m][-1]:.1f} s" for m in MODES), flush=True)
    finally:
        for c in clusters.values():
            c.close()
    if len(values) != 1:
        raise SystemExit(f"the modes' searches disagree: {values}")
    return {"search": search, "cpu": cpu, "per_task": per_task, "cluster_start": cluster_start}


def report(res: dict, args: argparse.Namespace, env: str) -> tuple[str, bool]:
    s, trials = res["search"], args.trials
    speedups = [one / two for one, two in zip(s["dask-1"], s["dask-2"])]
    vs_in_process = [a / b for a, b in zip(s["in-process"], s["dask-2"])]
    lines = [
        "| mode | search s (min, median, max) | trials / s (median) | CPU s per trial (median) |",
        "|---|---:|---:|---:|",
    ]
    for m in MODES:
        lo, med, hi = _stats(s[m])
        cpu = statistics.median(res["cpu"][m])
        lines.append(f"| {m} | {lo:.2f}, {med:.2f}, {hi:.2f} | {trials / med:.2f} | {cpu:.2f} |")
    lo, med, hi = _stats(speedups)
    met = med >= TARGET
    lines += [
        "",
        f"2 workers vs 1 worker, per round: **{med:.2f}x** median (min {lo:.2f}x, max {hi:.2f}x; target >= "
        f"{TARGET}x: {'met' if met else 'MISSED'}); dask-2 vs in-process: "
        + ", ".join(f"{x:.2f}x" for x in _stats(vs_in_process))
        + " (min, median, max).",
        "",
        "| tasks | runner | overhead ms per task (min, median, max) |",
        "|---|---|---:|",
    ]
    for (what, m), xs in res["per_task"].items():
        lines.append(f"| {what} | {m} | " + ", ".join(f"{x * 1e3:.1f}" for x in _stats(xs)) + " |")
    med = {k: statistics.median(xs) for k, xs in res["per_task"].items()}
    lines += [
        "",
        f"Dask path vs thread pool, per task (medians): submitted stages (a Prefect task run each, on the workers) "
        f"{med['stages', 'dask-2'] / med['stages', 'threads']:.1f}x; search trials (plain Dask tasks vs a Prefect "
        f"task run each in threads) {med['trials', 'dask-2'] / med['trials', 'threads']:.1f}x. "
        "Starting the two LocalClusters: "
        f"{res['cluster_start']:.1f} s (paid once per run by `--runner dask` without `--dask-address`).",
    ]
    return "\n".join(lines), met


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--work", type=int, default=800, help="matrix products per epoch of a trial")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", default=None, help="also write the results section to this file")
    args = ap.parse_args()
    up0, t0 = _uptime(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        proc, _ = start_server(Path(tmp) / "prefect-home")
        try:
            res = run(args, Path(tmp))
        finally:
            stop_server(proc)
    import distributed
    import prefect_dask

    env = (
        f"python {platform.python_version()}, distributed {distributed.__version__}, prefect-dask "
        f"{prefect_dask.__version__}, {os.cpu_count()} CPUs, {time.perf_counter() - t0:.0f} s; "
        f"`uptime` at start: `{up0}`; at end: `{_uptime()}`"
    )
    text, met = report(res, args, env)
    print(text)
    if args.markdown:
        cmd = (
            f"python benchmarks/bench_scale.py --trials {args.trials} --work {args.work} --tasks {args.tasks} "
            f"--rounds {args.rounds} --markdown {args.markdown}"
        )
        Path(args.markdown).write_text(
            "# Scale-out benchmark results (Dask)\n\n"
            f"Command (from the repository root):\n\n```\n{cmd}\n```\n\n"
            f"Environment: {env}.\n\n"
            f"A grid search of {args.trials} CPU-bound trials ({args.work} 200x200 matrix products per epoch, 3 "
            "epochs, a checkpoint each) per run into a fresh store, modes interleaved over "
            f"{args.rounds} rounds; flows of {args.tasks} trivial submitted stages and of a search of {args.tasks} "
            "trivial trials for the per-task overhead. "
            "See the script's docstring for what each figure is.\n\n"
            f"{text}\n"
        )


if __name__ == "__main__":
    main()
