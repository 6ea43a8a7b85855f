"""Search stages for the Dask liveness tests: a submitted stage whose body runs a search with
``prefect_map()``, so the stage is a task on a Dask worker whose trials go to the same cluster.

    python -m tests.integrations.dask_search_stage FLOW STORE WORKERS OUT

runs flow ``one`` (one search stage, asking two trials at a time), ``two`` (two search
stages submitted at once), ``threaded`` (a search stage's search run in a thread of its) or
``nested`` (a stage submitting stages) on a new LocalCluster
of WORKERS one-thread worker processes, and writes the flow's result as JSON to OUT (a test
runs it in a subprocess with a timeout: a deadlock fails the test instead of hanging it).
Trials log as in :mod:`dask_search`.
"""

from __future__ import annotations

import contextvars
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow

from pipeline import stage
from pipeline.integrations.prefect import prefect_map
from pipeline.training import EveryNEpochs, LatestN, Sync
from pipeline.tuning import Search, TrialCheckpointing
from tests.integrations.dask_search import ALPHAS, objective, table

SPACES = {"left": ALPHAS, "right": [a * 3 for a in ALPHAS]}


def search(name: str) -> Search:
    return Search(
        name, {"alpha": SPACES[name]}, objective, n_trials=len(SPACES[name]), sampler="grid", seed=0,
        checkpointing=TrialCheckpointing(save=EveryNEpochs(1), keep=LatestN(1), writer=Sync()),
    )  # fmt: skip


def searched(name: str, parallel: int) -> list[Any]:
    return table(search(name).run(parallel=parallel, map_fn=prefect_map()))


@stage
def search_stage(name: str, parallel: int) -> list[Any]:
    return searched(name, parallel)


@flow(name="dask-one-search-stage")
def one() -> list[Any]:
    return search_stage.submit("left", 2).result()


@flow(name="dask-two-search-stages")
def two() -> list[Any]:
    futures = [search_stage.submit(name, 2) for name in ("left", "right")]
    return [f.result() for f in futures]


@stage
def search_in_a_thread(name: str, parallel: int) -> list[Any]:
    """The search from a thread of the stage's that shares its context (not the worker's task
    thread, which waits for it and cannot leave the worker's pool for the trials)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, searched, name, parallel).result()


@flow(name="dask-search-in-a-thread")
def threaded() -> list[Any]:
    return search_in_a_thread.submit("left", 2).result()


@stage
def double(x: int) -> int:
    return 2 * x


@stage
def fan_in(n: int) -> int:
    """A stage that submits stages and waits for them: on a worker, like a search stage."""
    return sum(f.result() for f in [double.submit(i) for i in range(n)])


@flow(name="dask-nested-stages")
def nested() -> list[Any]:
    return [fan_in.submit(3).result()]


def in_process(names: list[str]) -> list[Any]:
    """The same searches run here, one trial after another (what the stages must equal)."""
    return [table(search(name).run(parallel=1)) for name in names]


def main(which: str, store: str, workers: int, out: str) -> None:
    from pipeline.context import run_context
    from pipeline.integrations.dask_runner import on_dask

    flows = {"one": one, "two": two, "nested": nested, "threaded": threaded}
    with run_context(store=store, parallel=workers):
        result = on_dask(flows[which], workers=workers)()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
