"""Validation: metrics on the validation and test sets, and the final model with its metadata."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import stage

from .train import xy


@stage
def evaluate(model: Any, df: pd.DataFrame, split_name: str) -> dict[str, float]:
    """Classification metrics of ``model`` on one split (saved as a JSON checkpoint)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    x, y = xy(df)
    proba = model.predict_proba(x)[:, 1]
    pred = (proba >= 0.5).astype(int)
    return {
        "split": split_name,
        "rows": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, proba)),
        "log_loss": float(log_loss(y, np.column_stack([1 - proba, proba]))),
    }


def git_commit() -> str | None:
    """The repository's HEAD commit, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@stage(ignore=["git"])
def package_model(
    model: Any,
    val_metrics: dict[str, float],
    test_metrics: dict[str, float],
    config: dict[str, Any],
    data: pd.DataFrame,
    git: str | None = None,
) -> dict[str, Any]:
    """The final model with its metrics and full metadata (config, seeds, versions, data, commit)."""
    from pipeline import fingerprint
    from pipeline.store.manifest import library_versions

    return {
        "model": model,
        "metadata": {
            "metrics": {"validation": val_metrics, "test": test_metrics},
            "config": config,
            "data_fingerprint": fingerprint(data),
            "git_commit": git,
            "python": platform.python_version(),
            "versions": library_versions(),
        },
    }
