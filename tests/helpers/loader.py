"""Write a little project of modules to a directory and import it for real."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from types import ModuleType


def load_project(root: Path, package: str, files: dict[str, str]) -> dict[str, ModuleType]:
    """Write ``files`` (module name -> source) as package ``package`` under ``root`` and
    import them. Any earlier version of the package is dropped from ``sys.modules`` first,
    so two versions of one project (in two roots) get the same module names."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    pkg = root / package
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name, source in files.items():
        (pkg / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        return {name: importlib.import_module(f"{package}.{name}") for name in files}
    finally:
        sys.path.remove(str(root))
