"""[tool.pipeline.tracking] in pyproject.toml, PIPELINE_TRACKING_* variables, overrides."""

from __future__ import annotations

import pytest

from pipeline import ConfigError
from pipeline.config import Settings
from pipeline.tracking import TrackingSettings

PYPROJECT = """
[tool.pipeline]
store = "elsewhere"

[tool.pipeline.tracking]
sinks = ["mlflow", "tensorboard"]
mlflow_uri = "sqlite:///data/mlflow.db"
tensorboard-dir = "logs/tb"
"""


def test_pyproject_then_environment_then_overrides(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "sub").mkdir()
    s = TrackingSettings.load(start=tmp_path / "sub", env={})
    assert s.sinks == ("mlflow", "tensorboard") and s.root == str(tmp_path.resolve())
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/data/mlflow.db"
    assert s.tensorboard_path == str(tmp_path.resolve() / "logs" / "tb")
    env = {"PIPELINE_TRACKING_SINKS": "tensorboard", "PIPELINE_TRACKING_MLFLOW_URI": "http://127.0.0.1:5000"}
    s = TrackingSettings.load(start=tmp_path, env=env)
    assert s.sinks == ("tensorboard",) and s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert TrackingSettings.load(start=tmp_path, env={"PIPELINE_TRACKING_SINKS": ""}).sinks == ()
    assert TrackingSettings.load(start=tmp_path, env={}, sinks=["prefect"]).sinks == ("prefect",)
    # the store settings still load with a tracking sub-table beside them (relative to the project root)
    assert Settings.load(start=tmp_path, env={}).store == str(tmp_path.resolve() / "elsewhere")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('sinks = "mlflow"', "'sinks' .* must be a list of sink names, got 'mlflow'"),
        ('sinks = ["mlflow", "wandb"]', "unknown tracking sink\\(s\\) \\['wandb'\\]"),
        ("mlflow_uri = 5", "'mlflow_uri' .* must be a string, got 5"),
        ('tensorbord_dir = "x"', "unknown setting 'tensorbord_dir' in \\[tool.pipeline.tracking\\]"),
    ],
)
def test_bad_settings_name_the_value(tmp_path, table, message):
    (tmp_path / "pyproject.toml").write_text(f"[tool.pipeline.tracking]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        TrackingSettings.load(start=tmp_path, env={})


def test_defaults_without_a_pyproject(tmp_path):
    s = TrackingSettings.load(start=tmp_path, env={})
    assert s.sinks == () and s.mlflow_experiment == "pipeline" and s.mlflow_tracking_uri == ""
