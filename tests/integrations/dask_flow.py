"""A fan-out flow for the Dask test: six independent stages, then one that joins them."""

from __future__ import annotations

import os
import time

from prefect import flow

from pipeline import stage


def _log(what: str) -> None:
    with open(os.environ["DASK_STAGE_LOG"], "a") as f:
        f.write(f"{what} {os.getpid()}\n")


@stage
def slow_square(x: int) -> int:
    _log(f"square{x}")
    time.sleep(0.3)
    return x * x


@stage
def total(values: list[int]) -> int:
    _log("total")
    return sum(values)


@flow(name="fan-out")
def fan(n: int = 6) -> int:
    futures = [slow_square.submit(i) for i in range(n)]
    return total([f.result() for f in futures])
