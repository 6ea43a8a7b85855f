"""Where the CLI finds the store: a relative ``store`` in pyproject.toml is relative to the
project root, wherever the command runs (it used to be relative to the working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline import StageCache, Store

ROOT = Path(__file__).resolve().parents[2]


def test_ls_from_a_subdirectory_reads_the_project_store(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nstore = "ckpt"\n')
    StageCache(Store(tmp_path / "ckpt")).wrap(lambda x: x + 1, name="increment")(1)
    sub = tmp_path / "notebooks" / "week1"
    sub.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "ls"],
        cwd=sub,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "increment" in done.stdout
    assert not (sub / "ckpt").exists()
