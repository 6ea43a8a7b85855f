"""The README's Checkpointer and search snippets run as shown (in a fresh directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def snippet(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    part = text[text.index(f"## {section}") :]
    part = part[: part.index("\n## ", 4)]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


def run(code: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_the_checkpointer_snippet_trains_and_resumes(tmp_path):
    call = """
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import scale
x, y = load_breast_cancer(return_X_y=True)
x = scale(x)
model = train(x[:400], y[:400], x[400:], y[400:], epochs=6)
print("SCORE", model.score(x[400:], y[400:]))
"""
    first = run(snippet("Training checkpoints") + call, tmp_path)
    assert "SCORE" in first and list(tmp_path.rglob("checkpoints/train/*/*.json"))
    assert run(snippet("Training checkpoints") + call, tmp_path).splitlines()[-1] == first.splitlines()[-1]


@pytest.mark.slow
def test_the_search_snippet_runs_and_load_best_names_its_search(tmp_path):
    code = snippet("Hyperparameter search") + "\nprint('BEST', load_best(store, 'tune').search.key == result.key)\n"
    assert "BEST True" in run(code, tmp_path)
