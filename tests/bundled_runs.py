"""Real runs of the bundled flow (flows.ml_pipeline) through ``python -m pipeline run``, on a
copy of the project so a helper can be edited between runs. Small parameters; four runs:

1. ``cold``: every stage computes;
2. ``warm``: every stage a hit;
3. ``changed_param``: ``train.seed=8`` (train and what follows rerun);
4. ``changed_helper``: ``flows.preprocess.clip_outliers`` edited (clean and what follows rerun).

Built once per test session (several test modules share them): ``bundled_runs(tmp_path_factory)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline import Store

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["tune.n_trials=4", "tune.epochs=5", "train.epochs=40", "train.patience=2"]
HELPER_BEFORE = "return col.clip(mean - z * std, mean + z * std)"
HELPER_AFTER = "return col.clip(mean - 0.5 * z * std, mean + 0.5 * z * std)"
_built: dict[str, BundledRuns] = {}


@dataclass(frozen=True)
class BundledRuns:
    project: Path
    store: Store
    cold: str
    warm: str
    changed_param: str
    changed_helper: str

    @property
    def ids(self) -> list[str]:
        return [self.cold, self.warm, self.changed_param, self.changed_helper]


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ...`` in the project copy (its flows/, this checkout's pipeline/)."""
    env = {**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{ROOT}", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def _run(project: Path, store: Path, *sets: str) -> str:
    before = {p.name for p in store.glob("runs/*.json")} if store.exists() else set()
    done = cli(project, "run", "--store", str(store), *(a for s in [*SMALL, *sets] for a in ("--set", s)))
    assert done.returncode == 0, done.stdout + done.stderr
    (new,) = {p.name for p in store.glob("runs/*.json")} - before
    return json.loads((store / "runs" / new).read_text())["run_id"]


def bundled_runs(tmp_path_factory) -> BundledRuns:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _built:
        project = tmp_path_factory.mktemp("project")
        shutil.copytree(ROOT / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "data" / "raw", project / "data" / "raw")
        shutil.copy(ROOT / "params.toml", project / "params.toml")
        shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
        store = project / "store"
        cold = _run(project, store)
        warm = _run(project, store)
        changed_param = _run(project, store, "train.seed=8")
        helper = project / "flows" / "preprocess.py"
        source = helper.read_text()
        assert HELPER_BEFORE in source
        helper.write_text(source.replace(HELPER_BEFORE, HELPER_AFTER))
        changed_helper = _run(project, store, "train.seed=8")
        _built[key] = BundledRuns(project, Store(store), cold, warm, changed_param, changed_helper)
    return _built[key]
