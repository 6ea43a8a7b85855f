"""What serving the Prefect UI costs the local server: start-up time, and the wall time of a
fully cached ``python -m pipeline run`` against it, with ``--ui`` vs ``--no-ui``.

Interleaved start-up rounds (ui, no-ui, ui, …), each with a throwaway PREFECT_HOME: on a
fresh home (database migrations; with the UI, its static files are also copied into the
home once) and on that same home again. Then a server of each kind runs at once and
``--runs`` cached reruns of the bundled pipeline alternate between them. Prints a markdown
table; ``--markdown FILE`` writes it too.

    python benchmarks/bench_server_ui.py --rounds 3 --runs 8 --markdown benchmarks/_server_ui_results.md
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cli import base_env, run  # noqa: E402
from pipeline.integrations.server import free_port, healthy, spawn_server  # noqa: E402


def start(ui: bool, home: str) -> tuple[float, object, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    t0 = time.perf_counter()
    proc = spawn_server(port, home, os.path.join(home, "server.log"), ui=ui)
    while not healthy(url):
        if proc.poll() is not None:
            raise SystemExit(f"server did not start: see {home}/server.log")
        time.sleep(0.05)
    return time.perf_counter() - t0, proc, url


def stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()


def measure(rounds: int, runs: int) -> dict[bool, dict[str, list[float]]]:
    """Start-ups interleaved (ui, no-ui, ui, …); then one server of each kind up at once and
    cached reruns alternating between them, so that load drift on a shared machine hits both."""
    res: dict[bool, dict[str, list[float]]] = {ui: {"fresh": [], "again": [], "warm": []} for ui in (True, False)}
    homes: dict[bool, str] = {}
    for _ in range(rounds):
        for ui in (True, False):
            homes[ui] = tempfile.mkdtemp(prefix="bench-ui-")
            fresh, proc, _ = start(ui, homes[ui])
            stop(proc)
            again, proc, _ = start(ui, homes[ui])
            stop(proc)
            res[ui]["fresh"].append(fresh)
            res[ui]["again"].append(again)
    servers = {ui: start(ui, homes[ui]) for ui in (True, False)}
    try:
        envs = {ui: dict(base_env(homes[ui]), PREFECT_API_URL=servers[ui][2]) for ui in (True, False)}
        stores = {ui: tempfile.mkdtemp(prefix="bench-ui-store-") for ui in (True, False)}
        for ui in (True, False):
            run(envs[ui], stores[ui])  # cold
            envs[ui]["_EXPECT_CACHED"] = "1"
        for _ in range(runs):
            for ui in (True, False):
                res[ui]["warm"].append(run(envs[ui], stores[ui]))
    finally:
        for _, proc, _ in servers.values():
            stop(proc)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    results = measure(args.rounds, args.runs)
    lines = [
        f"Local `prefect server start`, {args.rounds} interleaved start-up rounds, {args.runs} cached reruns "
        f"alternating between a server of each kind, {os.cpu_count()} CPUs (medians).",
        "",
        "| server | start-up, fresh home s | start-up, existing home s | cached rerun s | min s |",
        "|---|---:|---:|---:|---:|",
    ]
    for ui in (True, False):
        med = {k: statistics.median(v) for k, v in results[ui].items()}
        label = "`--ui` (default)" if ui else "`--no-ui`"
        lines.append(f"| {label} | {med['fresh']:.2f} | {med['again']:.2f} | {med['warm']:.2f} | "
                     f"{min(results[ui]['warm']):.2f} |")  # fmt: skip
    lines += ["", f"Command: `python benchmarks/bench_server_ui.py --rounds {args.rounds} --runs {args.runs}`"]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text("# Server UI cost\n\n" + text + "\n")


if __name__ == "__main__":
    main()
