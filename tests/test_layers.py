"""The import direction of shared/DESIGN.md, read statically from every module of ``pipeline/``.

``errors`` <- ``fingerprint`` <- ``store`` <- ``cache`` <- ``training``, ``tuning`` <-
``integrations`` <- ``cli``: a module imports only those to its left (function-level,
lazy imports included — a lazy import still runs). Only ``pipeline/integrations/`` imports
Prefect. A new module must be given its place in ``RANK`` below: that is a design decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"

# Lower ranks are further left. Equal ranks may import each other only inside one unit.
RANK: dict[str, float] = {
    "errors": 0,
    "config": 0.5,
    "params": 0.5,
    "units": 0.5,
    "progress_bar": 0.5,
    "fingerprint": 1,
    "store": 2,
    "keys": 2.5,
    "context": 2.8,
    "lazy": 2.9,
    "cache": 3,
    "plan": 3.5,
    "runs": 3.5,
    "training": 4,
    "samplers": 4.2,
    "trials": 4.3,
    "search_records": 4.4,
    "trial_commits": 4.45,
    "trial_run": 4.47,
    "tuning": 4.5,
    "tracking": 4.6,
    "history": 4.65,
    "diff": 4.68,
    "describe": 4.69,
    "report": 4.7,
    "integrations": 5,
    "cli": 6,
}
EXEMPT = {"__init__", "__main__"}  # the public re-exports and the entry point
# Command modules registered on cli.app are part of the cli unit (they import the app, cli.py imports them).
PART_OF = {"cli_history": "cli", "cli_ls": "cli", "cli_serve": "cli", "cli_lifecycle": "cli", "cli_mirror": "cli"}


def unit_of(module: str) -> str:
    """``pipeline.store.manifest`` -> ``store``; ``pipeline.cache`` -> ``cache``."""
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else "__init__"
    return PART_OF.get(unit, unit)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imports_of(path: Path, here: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (module ``here``), at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None and node.level:  # from . import x: each x is a module
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, target))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_unit_has_a_place():
    units = {unit_of(module_name(p)) for p in MODULES} - EXEMPT
    assert units - set(RANK) == set(), "give new modules a rank in tests/test_layers.py (DESIGN.md's direction)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_point_left(path):
    here = unit_of(module_name(path))
    if here in EXEMPT:
        return
    wrong = []
    for line, target in imports_of(path):
        top = target.partition(".")[0]
        if top == "prefect" and here != "integrations":
            wrong.append(f"line {line}: imports prefect outside pipeline/integrations/")
        if top != "pipeline" or target == "pipeline":
            continue
        there = unit_of(target)
        if there == here:
            continue
        if there in EXEMPT or RANK.get(there, 99) >= RANK[here]:
            wrong.append(f"line {line}: {here} (rank {RANK[here]}) imports {target} (rank {RANK.get(there)})")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The walk resolves relative and lazy imports (so the test above can fail)."""
    src = tmp_path / "probe.py"
    src.write_text("import os\n\n\ndef f():\n    from ..cache import StageCache\n    from . import objects\n")
    found = imports_of(src, "pipeline.store.probe")
    assert found == [(1, "os"), (5, "pipeline.cache"), (6, "pipeline.store.objects")]
    assert RANK[unit_of("pipeline.cache")] > RANK[unit_of("pipeline.store.probe")]
