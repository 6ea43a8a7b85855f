"""Prefect artifacts of training stages: what the Prefect UI shows for a training run.

When a Checkpointer finishes inside a Prefect task run, :class:`PrefectArtifactSink` publishes
on that task run (and its flow run)

- a **table** ``<stage>-epochs``: one row per epoch with every metric, whether a checkpoint
  of it survives, and the best epoch marked;
- a **markdown note** ``<stage>-checkpoints``: the stage key, the surviving checkpoints
  (step, metrics, size, URI), the best and newest, early stop, hyperparameters.

Artifact keys are per stage name, so the UI's Artifacts page shows each stage's latest
version and its history across runs. Outside a Prefect run the sink stays quiet (nothing to
attach to). ``sinks = ["prefect"]`` in ``[tool.pipeline.tracking]`` enables it for CLI runs.
"""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from ..tracking import Sink, TrackingSettings, TrainingResult, configured_tracking, register_sink
from ..units import size

_KEY = re.compile(r"[^a-z0-9-]+")


def artifact_key(stage: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a stage's artifact."""
    slug = _KEY.sub("-", stage.lower()).strip("-") or "stage"
    return f"{slug}-{what}"


def epoch_rows(result: TrainingResult) -> list[dict[str, Any]]:
    """The per-epoch table: epoch, every metric, the surviving checkpoint, the best epoch."""
    kept = {c.step for c in result.checkpoints}
    names = list(dict.fromkeys(k for h in result.history for k in h if k != "epoch"))
    rows = []
    for h in result.history:
        epoch = int(h["epoch"])
        row: dict[str, Any] = {"epoch": epoch}
        row.update({n: round(h[n], 6) if n in h else None for n in names})
        row["checkpoint"] = "kept" if epoch in kept else ""
        row["best"] = "best" if epoch == result.best_step else ""
        rows.append(row)
    return rows


def checkpoint_note(result: TrainingResult) -> str:
    """The markdown note of a training run's checkpoints."""
    run = result.run
    lines = [
        f"# Checkpoints of `{run.stage}`",
        "",
        f"- stage key: `{run.key}`",
        f"- epochs: {result.epochs}" + (" (stopped early)" if result.stopped else ""),
    ]
    if run.resumed_from:
        lines.append(f"- resumed from checkpoint {run.resumed_from}")
    if result.best_step is not None:
        lines.append(f"- best epoch: {result.best_step}")
    if result.newest is not None:
        lines.append(f"- newest checkpoint: {result.newest.step}")
    if result.hyperparameters:
        hp = ", ".join(f"`{k}={v!r}`" for k, v in result.hyperparameters.items())
        lines.append(f"- hyperparameters: {hp}")
    lines += ["", "| step | metrics | size | URI |", "|---:|---|---:|---|"]
    for c in result.checkpoints:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items())
        mark = " (best)" if c.step == result.best_step else ""
        lines.append(f"| {c.step}{mark} | {metrics} | {size(c.bytes)} | `{c.uri}` |")
    if not result.checkpoints:
        lines.append("| – | no checkpoint survives | | |")
    return "\n".join(lines) + "\n"


class PrefectArtifactSink(Sink):
    """Publishes a finished training run's epochs table and checkpoint note (see the module)."""

    name = "prefect"

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []
        """(table key, markdown key) of each run published."""

    @classmethod
    def from_settings(cls, settings: TrackingSettings) -> PrefectArtifactSink:
        return cls()

    def finish(self, result: TrainingResult) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return  # no Prefect run to attach artifacts to
        stage, key = result.run.stage, result.run.short_key
        table, note = artifact_key(stage, "epochs"), artifact_key(stage, "checkpoints")
        create_table_artifact(
            epoch_rows(result), key=table, description=f"Per-epoch metrics of stage `{stage}` (key {key})"
        )
        create_markdown_artifact(
            checkpoint_note(result), key=note, description=f"Checkpoints of stage `{stage}` (key {key})"
        )
        self.published.append((table, note))


register_sink("prefect", PrefectArtifactSink.from_settings)  # configured_tracking() can build it now


__all__ = ["PrefectArtifactSink", "artifact_key", "epoch_rows", "checkpoint_note", "configured_tracking"]
