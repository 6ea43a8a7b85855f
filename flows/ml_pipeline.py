"""The bundled pipeline: preprocess -> tune -> train -> validate, each step a cached @stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from pipeline.params import ParamSchema, load_params

from .preprocess import clean, engineer, load_csv, make_synthetic, raw_path, split
from .train import train
from .tune import search
from .validate import evaluate, git_commit, package_model

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "params.toml"
PARAMS_SCHEMA = ParamSchema.from_file(DEFAULT_PARAMS)
"""Every section and key of the shipped params.toml, typed by its value there."""


def check_params(p: dict[str, Any]) -> None:
    """ConfigError naming the first bad parameter (schema, then the data source) before any
    stage runs, so that the CLI can say it in one line."""
    PARAMS_SCHEMA.check(p, "parameters")
    if p["data"]["source"] != "synthetic":
        raw_path(p["data"]["source"])


@flow(name="ml-pipeline", log_prints=False)
def ml_pipeline(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole pipeline on ``params`` (default: params.toml)."""
    p = params if params is not None else load_params(DEFAULT_PARAMS)
    check_params(p)
    data, pre, tr, tn = p["data"], p["preprocess"], p["train"], p["tune"]

    if data["source"] == "synthetic":
        raw = make_synthetic(rows=data["rows"], seed=data["seed"])
    else:
        raw = load_csv(raw_path(data["source"]))
    cleaned = clean(raw, clip_z=pre["clip_z"])
    features = engineer(cleaned)
    train_df, val_df, test_df = split(
        features, test_size=data["test_size"], val_size=data["val_size"], seed=data["seed"]
    )

    best = search(
        train_df, val_df, n_trials=tn["n_trials"], sampler=tn["sampler"], seed=tn["seed"], epochs=tn["epochs"]
    )["best"]
    fitted = train(
        train_df,
        val_df,
        alpha=best["alpha"],
        epochs=tr["epochs"],
        seed=tr["seed"],
        learning_rate=best["learning_rate"],
        eta0=best["eta0"],
        patience=tr.get("patience") or None,
    )
    val_metrics = evaluate(fitted["model"], val_df, "validation")
    test_metrics = evaluate(fitted["model"], test_df, "test")
    final = package_model(fitted["model"], val_metrics, test_metrics, p, raw, git=git_commit())
    return {"best": best, "metrics": final["metadata"]["metrics"]}
