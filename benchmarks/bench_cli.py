"""Wall time of ``python -m pipeline run`` on the bundled pipeline, per Prefect server mode.

Modes, each with a throwaway PREFECT_HOME and store:
- ``ephemeral``: Prefect's per-process server (``PIPELINE_SERVER=ephemeral``);
- ``auto, first run``: no server yet: the CLI starts a detached one (database migrations
  on a fresh home included) and keeps it;
- ``auto, server up``: the default mode once a server is running (every later run).

For each mode: a cold run, then ``--runs`` fully cached reruns (median and min). Prints a
table; ``--markdown FILE`` also writes it.

    python benchmarks/bench_cli.py --runs 5 --markdown benchmarks/_cli_results.md
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
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
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        cmd = "python benchmarks/bench_cli.py " + " ".join(sys.argv[1:])
        args.markdown.write_text(f"# CLI start-up\n\n{text}\n\nCommand: `{cmd}`\n")


if __name__ == "__main__":
    main()
