"""Which tracking sinks a run feeds: ``[tool.pipeline.tracking]`` of the project's
pyproject.toml, then ``PIPELINE_TRACKING_*`` environment variables, then overrides.

::

    [tool.pipeline.tracking]
    sinks = ["mlflow", "tensorboard"]          # and/or "prefect" (artifacts in the Prefect UI)
    mlflow_uri = "sqlite:///data/mlflow.db"     # empty: MLflow's own default (MLFLOW_TRACKING_URI…)
    mlflow_experiment = "pipeline"
    tensorboard_dir = "data/tensorboard"        # relative to the project root

``PIPELINE_TRACKING_SINKS=mlflow,tensorboard`` (comma-separated; empty: none) and
``PIPELINE_TRACKING_MLFLOW_URI`` & co. override the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import find_pyproject
from ..errors import ConfigError

SINK_NAMES = ("prefect", "mlflow", "tensorboard")
_PREFIX = "PIPELINE_TRACKING_"


@dataclass(frozen=True)
class TrackingSettings:
    """The configured tracking sinks and where they write. Every field has a default."""

    sinks: tuple[str, ...] = ()
    """Sinks fed by every training stage of a run: "prefect", "mlflow", "tensorboard"."""
    mlflow_uri: str = ""
    """MLflow tracking URI (``sqlite:///…``, ``http://…``, a directory); empty: MLflow's default."""
    mlflow_experiment: str = "pipeline"
    tensorboard_dir: str = "data/tensorboard"
    """Where TensorBoard event files go, one folder per training stage key."""
    root: str = ""
    """The project root relative paths are taken from (the pyproject's folder, else the cwd)."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.sinks if s not in SINK_NAMES]
        if unknown:
            raise ConfigError(f"unknown tracking sink(s) {unknown} (known: {', '.join(SINK_NAMES)})")

    @classmethod
    def load(
        cls, *, start: str | os.PathLike | None = None, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> TrackingSettings:
        """The settings of the project around ``start`` (default: the working directory)."""
        here = Path(start or os.getcwd())
        pyproject = find_pyproject(here)
        values: dict[str, Any] = {"root": str((pyproject.parent if pyproject else here).resolve())}
        if pyproject is not None:
            values.update(_from_pyproject(pyproject))
        env = os.environ if env is None else env
        for name in _fields():
            raw = env.get(_PREFIX + name.upper())
            if raw is not None:
                values[name] = _sinks(raw) if name == "sinks" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check(values, "tracking settings")
        values["sinks"] = tuple(values.get("sinks", ()))
        return cls(**values)

    def path(self, value: str) -> str:
        """``value`` as an absolute path (relative ones are taken from the project root)."""
        return value if os.path.isabs(value) else os.path.join(self.root or os.getcwd(), value)

    @property
    def tensorboard_path(self) -> str:
        return self.path(self.tensorboard_dir)

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow URI; a plain relative path or ``sqlite:///relative.db`` from the project root."""
        uri = self.mlflow_uri
        if not uri or "://" not in uri:
            return self.path(uri) if uri else ""
        scheme, _, rest = uri.partition(":///")
        if scheme == "sqlite" and rest and not rest.startswith("/"):
            return f"sqlite:///{self.path(rest)}"
        return uri


def _fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TrackingSettings) if f.name != "root"]


def _sinks(raw: str) -> list[str]:
    return [s.strip() for s in raw.split(",") if s.strip()]


def _from_pyproject(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    section = data.get("tool", {}).get("pipeline", {}).get("tracking", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.pipeline.tracking] in {path} must be a table")
    values = {k.replace("-", "_"): v for k, v in section.items()}
    _check(values, f"[tool.pipeline.tracking] in {path}")
    return values


def _check(values: dict[str, Any], where: str) -> None:
    known = set(_fields()) | {"root"}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r} in {where} (known: {', '.join(sorted(_fields()))})")
        if name == "sinks":
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
                raise ConfigError(f"setting 'sinks' in {where} must be a list of sink names, got {value!r}")
        elif not isinstance(value, str):
            raise ConfigError(f"setting {name!r} in {where} must be a string, got {value!r}")


__all__ = ["TrackingSettings", "SINK_NAMES"]
