"""A two-stage flow for the serve tests (imported by the served runs as a module path)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pipeline import stage


@stage
def square(x: int) -> dict[str, int]:
    return {"y": x * x}


@stage
def plus(d: dict[str, int], k: int = 1) -> dict[str, int]:
    return {"z": d["y"] + k}


@flow(name="served-tiny")
def tiny(params: dict[str, Any] | None = None) -> dict[str, int]:
    p = {"x": 2, "k": 1, **(params or {})}
    return plus(square(p["x"]), k=p["k"])
