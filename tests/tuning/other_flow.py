"""A flow without a search, for `show tune` after a run that used none."""

from __future__ import annotations

from prefect import flow

from pipeline import stage


@stage
def double(x: int) -> int:
    return 2 * x


@flow(name="no-search")
def no_search(x: int = 21) -> int:
    return double(x)
