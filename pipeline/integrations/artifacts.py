"""Prefect artifacts of pipeline work, so the UI tells more than "9 task runs".

:func:`publish_trials` turns a search's trials into a Prefect table artifact (one row per
trial: number, parameters, value, state, source) attached to the running task and flow run,
under the key ``search-<name>``: the UI's Artifacts page keeps one version per search run.
"""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext


def artifact_key(kind: str, name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for ``kind`` ``name``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{kind}-{slug or 'unnamed'}"


def _cell(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)


def publish_trials(name: str, result: Any) -> str | None:
    """Publish a search's trial table (a ``TuneResult``) as a Prefect table artifact; returns
    its key (None outside a Prefect run: there is nowhere to attach it)."""
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    rows = [{k: _cell(v) for k, v in row.items()} for row in result.table()]
    best = ", ".join(f"{k}={_cell(v)}" for k, v in result.best_params.items())
    key = artifact_key("search", name)
    create_table_artifact(
        rows,
        key=key,
        description=f"search **{name}**: {len(rows)} trials; best value {result.best_value:.5g} ({best})",
    )
    return key
