"""Small real flows the CLI tests run and plan: ``.submit()`` and ``.map()`` of stages."""

from __future__ import annotations

import pandas as pd
from prefect import flow, unmapped

from pipeline import stage


@stage
def square(x: int) -> int:
    return x * x


@stage
def scale(x: int, factor: int = 2) -> int:
    return x * factor


@stage
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n)})


@stage
def total(values: list[int], table: pd.DataFrame) -> int:
    return sum(values) + int(table["x"].sum())


@flow(name="fan-out")
def fan_out(n: int = 4, factor: int = 2) -> int:
    """``.map()`` over a range and over futures, ``.submit()`` with a future argument."""
    squares = square.map(range(n))
    scaled = scale.map(squares, factor=unmapped(factor))
    table = frame.submit(n)
    return total.submit(scaled.result(), table).result()


@stage
def prep(n: int, clip: float) -> pd.DataFrame:
    return pd.DataFrame({"x": [min(float(i), clip) for i in range(n)]})


@stage
def fit(table: pd.DataFrame, epochs: int) -> pd.Series:
    return table["x"] * epochs


@stage
def score(model: pd.Series, split_name: str) -> dict[str, float]:
    return {"split": split_name, "score": float(model.sum())}


@flow(name="chain")
def chain(n: int = 10, clip: float = 5.0, epochs: int = 30) -> list[dict[str, float]]:
    """prep -> fit -> score twice (one stage called twice per run, like `evaluate`)."""
    model = fit(prep(n, clip), epochs)
    return [score(model, "validation"), score(model, "test")]


@stage
def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@flow(name="sleepy")
def sleepy(seconds: float = 120.0) -> float:
    """A flow that runs long enough to be killed in the middle."""
    return nap(seconds)


@flow(name="arithmetic")
def arithmetic(n: int = 3) -> int:
    """Flow code that computes with a stage's output between stages (a dry run can't)."""
    return int(frame(n)["x"].sum())
