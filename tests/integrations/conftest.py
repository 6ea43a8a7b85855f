"""Fixtures of the Prefect integration tests: flow modules on disk, run on a real Prefect server."""

from __future__ import annotations

import os

import pytest

from .flow_module import FlowModule


@pytest.fixture
def flow_module(tmp_path, prefect_api):
    """``flow_module(source)``: ``source`` written as a real flow module in ``tmp_path`` (a
    :class:`FlowModule`), with the session's Prefect server up. After the test the modules
    are forgotten and ``PIPELINE_STORE`` is as it was (``use_store`` may have set it)."""
    store_before = os.environ.get("PIPELINE_STORE")
    made: list[FlowModule] = []

    def make(source: str) -> FlowModule:
        made.append(FlowModule(tmp_path, source))
        return made[-1]

    yield make
    for mod in made:
        mod.forget()
    if store_before is None:
        os.environ.pop("PIPELINE_STORE", None)
    else:
        os.environ["PIPELINE_STORE"] = store_before
