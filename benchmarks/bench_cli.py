"""Wall time of ``python -m pipeline run`` on the bundled pipeline, per Prefect server mode.

Modes, each with a throwaway PREFECT_HOME and store:
- ``ephemeral``: Prefect's per-process server (``PIPELINE_SERVER=ephemeral``);
- ``auto, first run``: no server yet: the CLI starts a detached one (database migrations
  on a fresh home included) and keeps it;
- ``auto, server up``: the default mode once a server is running (every later run).

For each mode: a cold run, then ``--runs`` fully cached reruns (median and min). Prints a
table; ``--markdown FILE`` also writes it.

Then the warm run against its floor, the imports any such run pays
(``python -c "import prefect, pandas, sklearn"``): in the default mode with the server up,
``--rounds`` interleaved rounds of (floor, warm run), the ratio taken per round
(min / median / max), so the load of a shared machine hits both alike.

    python benchmarks/bench_cli.py --runs 5 --rounds 7 --markdown benchmarks/_cli_results.md
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(env: dict[str, str], store: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--store", store],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    if "0 computed" not in done.stdout and env.get("_EXPECT_CACHED"):
        raise SystemExit(f"expected a fully cached run:\n{done.stdout[-2000:]}")
    return time.perf_counter() - t0


def base_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PIPELINE_"))}
    env.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def measure(mode: str, runs: int) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix=f"bench-cli-{mode}-")
    store = tempfile.mkdtemp(prefix="bench-cli-store-")
    env = base_env(home)
    if mode == "ephemeral":
        env["PIPELINE_SERVER"] = "ephemeral"
    try:
        cold = run(env, store)  # auto: this run also starts the server
        env["_EXPECT_CACHED"] = "1"
        warm = [run(env, store) for _ in range(runs)]
    finally:
        if mode == "auto":
            subprocess.run([sys.executable, "-m", "pipeline", "server", "stop"], cwd=ROOT, env=env,
                           capture_output=True, timeout=60)  # fmt: skip
    return {"cold": cold, "median": statistics.median(warm), "min": min(warm)}


FLOOR = "import prefect, pandas, sklearn"


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], cwd=ROOT, env=env, check=True, timeout=600)
    return time.perf_counter() - t0


def versus_floor(rounds: int) -> dict[str, list[float]]:
    """Interleaved (floor, warm run) rounds in the default mode, server up."""
    home = tempfile.mkdtemp(prefix="bench-cli-floor-")
    store = tempfile.mkdtemp(prefix="bench-cli-store-")
    env = base_env(home)
    out: dict[str, list[float]] = {"floor": [], "warm": [], "ratio": [], "cpu_ratio": []}
    try:
        run(env, store)  # cold: starts the server, computes every stage
        env["_EXPECT_CACHED"] = "1"
        run(env, store)  # the first warm run also writes the distribution-map cache
        for _ in range(rounds):
            c0 = children_cpu()
            f = floor(env)
            c1 = children_cpu()
            w = run(env, store)
            c2 = children_cpu()
            out["floor"].append(f)
            out["warm"].append(w)
            out["ratio"].append(w / f)
            out["cpu_ratio"].append((c2 - c1) / (c1 - c0))  # the CLI process's CPU, not the server's
    finally:
        subprocess.run([sys.executable, "-m", "pipeline", "server", "stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of floor vs warm run")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--floor-only", action="store_true", help="only the warm run vs its floor")
    args = parser.parse_args()
    load = os.getloadavg()
    vs = versus_floor(args.rounds)
    r, c = sorted(vs["ratio"]), sorted(vs["cpu_ratio"])
    floor_lines = [
        f'Warm run vs the import floor (`python -c "{FLOOR}"`), default mode, server up, '
        f"{args.rounds} interleaved rounds, load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}:",
        "",
        "| | min | median | max |",
        "|---|---:|---:|---:|",
        f"| floor s | {min(vs['floor']):.2f} | {statistics.median(vs['floor']):.2f} | {max(vs['floor']):.2f} |",
        f"| warm `python -m pipeline run` s | {min(vs['warm']):.2f} | {statistics.median(vs['warm']):.2f} "
        f"| {max(vs['warm']):.2f} |",
        f"| warm / floor, per round (target <= 1.3x) | {r[0]:.2f}x | {statistics.median(r):.2f}x | {r[-1]:.2f}x |",
        f"| CPU time warm / floor, per round | {c[0]:.2f}x | {statistics.median(c):.2f}x | {c[-1]:.2f}x |",
        "",
        "(CPU time: user + system of the two processes themselves, which a loaded machine distorts less than wall "
        "time; the warm run's waits on the server's answers are not in it.)",
    ]
    floor_text = "\n".join(floor_lines)
    print(floor_text)
    if args.floor_only:
        if args.markdown:
            cmd = "python benchmarks/bench_cli.py " + " ".join(sys.argv[1:])
            args.markdown.write_text(f"# CLI start-up\n\n{floor_text}\n\nCommand: `{cmd}`\n")
        return
    results = {mode: measure(mode, args.runs) for mode in ("ephemeral", "auto")}
    eph = results["ephemeral"]["median"]
    lines = [
        f"`python -m pipeline run`, bundled pipeline, {args.runs} fully cached reruns per mode, {os.cpu_count()} CPUs.",
        "",
        "| mode | cold run s (incl. server start) | cached rerun median s | min s | vs ephemeral |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        label = "auto (default): local server kept between runs" if mode == "auto" else "ephemeral (Prefect default)"
        lines.append(f"| {label} | {r['cold']:.2f} | {r['median']:.2f} | {r['min']:.2f} | {r['median'] / eph:.2f}x |")
    text = floor_text + "\n\n" + "\n".join(lines)
    print(text)
    if args.markdown:
        cmd = "python benchmarks/bench_cli.py " + " ".join(sys.argv[1:])
        args.markdown.write_text(f"# CLI start-up\n\n{text}\n\nCommand: `{cmd}`\n")


if __name__ == "__main__":
    main()
