"""The core imports without Prefect, and fingerprinting imports no data library."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import sys

class Block:
    '''Make {names} impossible to import, as if they were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {names!r}:
            raise ImportError(f"blocked: {{name}}")

sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_core_imports_with_prefect_blocked():
    out = run(
        BLOCK.format(names=("prefect",))
        + """
import pipeline, pipeline.cache, pipeline.store, pipeline.fingerprint
from pipeline import fingerprint, code_fingerprint, StageCache, Store
assert fingerprint({"a": 1}).startswith("xxh3:")
assert not [m for m in sys.modules if m.partition(".")[0] == "prefect"]
print("ok")
"""
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_prefect_is_really_blocked():
    out = run(BLOCK.format(names=("prefect",)) + "import prefect\n")
    assert out.returncode != 0 and "blocked: prefect" in out.stderr


def test_importing_fingerprint_does_not_import_pandas():
    out = run(
        """
import sys
import pipeline.fingerprint
from pipeline.fingerprint import fingerprint
fingerprint([1, "a", {2: None}])
print(sorted(m for m in ("pandas", "pyarrow", "sklearn", "prefect") if m in sys.modules))
"""
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_fingerprint_package_alone_needs_no_data_library():
    """The fingerprint modules themselves (without the rest of ``pipeline``) import and hash
    plain values with numpy, pandas, pyarrow, scikit-learn and Prefect all unavailable."""
    out = run(
        BLOCK.format(names=("numpy", "pandas", "pyarrow", "sklearn", "prefect", "pydantic"))
        + f"""
import types
pkg = types.ModuleType("pipeline")
pkg.__path__ = [{str(ROOT / "pipeline")!r}]
sys.modules["pipeline"] = pkg  # skip pipeline/__init__ (store, cache): only errors + fingerprint
from pipeline.fingerprint import fingerprint, code_fingerprint
assert fingerprint({{"a": [1, 2.0, "x"]}}) == fingerprint({{"a": [1, 2.0, "x"]}})
code_fingerprint(fingerprint)
print("ok")
"""
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
