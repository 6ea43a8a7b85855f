"""Code fingerprints over real modules: written to tmp_path and imported, or tests/helpers."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fingerprint import Component, code_components, code_fingerprint, fingerprint
from tests.helpers import closures, cycle, mutual, thirdparty
from tests.helpers.loader import load_project

ROOT = Path(__file__).resolve().parents[2]

HELPERS = """
FACTOR = 2
THRESHOLD = 0.5


def clean(rows):
    return [r for r in rows if r is not None]


def scale(rows):
    return [r * FACTOR for r in rows]


def unrelated():
    return "not called by the stage"
"""

STAGES = '''
from . import helpers
from .helpers import THRESHOLD, scale


def prepare(rows):
    """Clean, then scale."""
    rows = helpers.clean(rows)
    return [r for r in scale(rows) if r > THRESHOLD]
'''


def names(parts, kind="code"):
    """The names of the components of one kind."""
    return {c.name for c in parts if c.kind == kind}


def key(tmp_path, version: str, helpers: str = HELPERS, stages: str = STAGES, package: str = "proj") -> str:
    """Fingerprint of ``stages.prepare`` in one version of a little project."""
    mods = load_project(tmp_path / version, package, {"helpers": helpers, "stages": stages})
    return code_fingerprint(mods["stages"].prepare)


def test_same_code_same_key_in_a_fresh_import(tmp_path):
    assert key(tmp_path, "v1") == key(tmp_path, "v2")


def test_editing_a_helper_changes_the_key(tmp_path):
    edited = HELPERS.replace("return [r for r in rows if r is not None]", "return [r for r in rows if r]")
    assert key(tmp_path, "v1") != key(tmp_path, "v2", helpers=edited)
    edited = HELPERS.replace("return [r * FACTOR for r in rows]", "return [FACTOR * r for r in rows]")
    assert key(tmp_path, "v3") != key(tmp_path, "v4", helpers=edited)


def test_comments_blank_lines_and_docstrings_do_not_change_the_key(tmp_path):
    doc = 'def clean(rows):\n    """Drop missing rows."""\n\n    # keep the rest\n'
    helpers = HELPERS.replace("def clean(rows):\n", doc)
    helpers = "# a comment at the top\n\n\n" + helpers.replace("FACTOR = 2", "FACTOR = 2  # the factor")
    stages = STAGES.replace('    """Clean, then scale."""\n', "").replace(
        "    rows = helpers.clean(rows)", "\n    rows = helpers.clean(  # one per line\n        rows,\n    )\n"
    )
    assert key(tmp_path, "v1") == key(tmp_path, "v2", helpers=helpers, stages=stages)


def test_editing_a_function_the_stage_does_not_reach_keeps_the_key(tmp_path):
    edited = HELPERS.replace('return "not called by the stage"', "return 42")
    assert key(tmp_path, "v1") == key(tmp_path, "v2", helpers=edited)


def test_editing_a_module_constant_it_reads_changes_the_key(tmp_path):
    base = key(tmp_path, "v1")
    assert base != key(tmp_path, "v2", helpers=HELPERS.replace("FACTOR = 2", "FACTOR = 3"))  # read by a helper
    assert base != key(tmp_path, "v3", helpers=HELPERS.replace("THRESHOLD = 0.5", "THRESHOLD = 0.25"))  # imported


def test_changes_reach_through_a_chain_of_helpers_and_classes(tmp_path):
    inner = "def inner(x):\n    return x + 1\n"
    model = "from .inner import inner\n\n\nclass Model:\n    def predict(self, x):\n        return inner(x) * 2\n"
    stages = "from .model import Model\n\n\ndef prepare(x):\n    return Model().predict(x)\n"

    def k(version, inner_src=inner, model_src=model):
        mods = load_project(tmp_path / version, "chain", {"inner": inner_src, "model": model_src, "stages": stages})
        return code_fingerprint(mods["stages"].prepare)

    base = k("v1")
    assert base == k("v2")
    assert base != k("v3", inner_src=inner.replace("x + 1", "x + 2"))  # two modules away
    assert base != k("v4", model_src=model.replace("* 2", "* 3"))  # a method of a class it uses


def test_a_module_level_instance_brings_its_class_code_and_its_state_as_first_seen(tmp_path):
    src = (
        "class Scaler:\n    def __init__(self, k):\n        self.k = k\n        self.calls = 0\n\n"
        "    def apply(self, x):\n        self.calls += 1\n        return x * self.k\n\n\n"
        "SCALER = Scaler(2)\nscaler = Scaler(2)\n\n\n"
        "def prepare(x):\n    return SCALER.apply(x)\n\n\n"
        "def counted(x):\n    return scaler.apply(x)\n"
    )

    def mods(version, s):
        return load_project(tmp_path / version, "inst", {"stages": s})["stages"]

    base = code_fingerprint(mods("v1", src).prepare)
    assert base == code_fingerprint(mods("v2", src).prepare)
    assert base != code_fingerprint(mods("v3", src.replace("x * self.k", "x + self.k")).prepare)
    # a constant object's state is behaviour: Scaler(3) computes something else
    assert base != code_fingerprint(mods("v4", src.replace("SCALER = Scaler(2)", "SCALER = Scaler(3)")).prepare)
    # a lowercase object the stage mutates as it runs is taken as this process first saw it
    m = mods("v5", src)
    before = code_fingerprint(m.counted)
    m.counted(1)
    assert m.scaler.calls == 1 and code_fingerprint(m.counted) == before
    assert before != code_fingerprint(mods("v6", src.replace("scaler = Scaler(2)", "scaler = Scaler(5)")).counted)


def test_a_module_never_put_in_sys_modules_is_still_project_code(tmp_path):
    def k(version, body):
        path = tmp_path / version / "loose.py"
        path.parent.mkdir()
        path.write_text(f"def helper(x):\n    return {body}\n\n\ndef prepare(x):\n    return helper(x)\n")
        spec = importlib.util.spec_from_file_location("loose_module", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert "loose_module" not in sys.modules
        return code_fingerprint(module.prepare)

    assert k("v1", "x + 1") == k("v2", "x + 1")
    assert k("v3", "x + 1") != k("v4", "x - 1")


def test_closures_contribute_their_cells():
    parts = code_components(closures.both)
    scales = [k for k in names(parts) if k.startswith("tests.helpers.closures.make_scaler.<locals>.scale")]
    cells = [k for k in names(parts, "closure") if "<closure factor>" in k]
    assert len(scales) == 2 and len(cells) == 2  # two closures of one factory, both counted
    assert "tests.helpers.closures.double" in names(parts)  # the helper the closure calls
    assert code_fingerprint(closures.by_two) != code_fingerprint(closures.by_three)
    assert code_fingerprint(closures.make_scaler(2)) == code_fingerprint(closures.by_two)


def test_two_lambdas_of_one_module_are_both_counted():
    parts = code_components(closures.both_lambdas)
    assert {"tests.helpers.closures.<lambda>", "tests.helpers.closures.<lambda>#2"} <= names(parts)


def test_closure_over_an_edited_helper(tmp_path):
    src = (
        "def helper(x):\n    return x + 1\n\n\n"
        "def make(k):\n    def stage(x):\n        return helper(x) * k\n\n    return stage\n"
    )

    def k(version, s, factor=2):
        return code_fingerprint(load_project(tmp_path / version, "clos", {"m": s})["m"].make(factor))

    assert k("v1", src) == k("v2", src)
    assert k("v1b", src) != k("v3", src, factor=3)
    assert k("v3b", src) != k("v4", src.replace("x + 1", "x + 5"))


def test_mutual_recursion_terminates():
    parts = code_components(mutual.stage)
    assert {"tests.helpers.mutual.is_even", "tests.helpers.mutual.is_odd", "tests.helpers.mutual.stage"} <= names(parts)
    assert code_fingerprint(mutual.is_even) == code_fingerprint(mutual.is_even)


def test_a_constant_holding_the_function_itself_terminates():
    parts = code_components(cycle.handle)
    assert "tests.helpers.cycle.HANDLERS" in names(parts, "global")
    assert fingerprint(cycle.HANDLERS) == fingerprint(cycle.HANDLERS)


def test_version_pins_the_code_part(tmp_path):
    edited = HELPERS.replace("FACTOR = 2", "FACTOR = 7")
    m1 = load_project(tmp_path / "v1", "pinned", {"helpers": HELPERS, "stages": STAGES})
    pinned = code_fingerprint(m1["stages"].prepare, version="1")
    m2 = load_project(tmp_path / "v2", "pinned", {"helpers": edited, "stages": STAGES})
    assert code_fingerprint(m2["stages"].prepare, version="1") == pinned
    assert code_fingerprint(m2["stages"].prepare, version="2") != pinned
    assert code_fingerprint(m2["stages"].prepare) != code_fingerprint(m1["stages"].prepare)


def test_third_party_package_contributes_its_major_minor_version():
    parts = code_components(thirdparty.stage)
    major_minor = ".".join(importlib.metadata.version("numpy").split(".")[:2])
    assert Component("package", "numpy", major_minor) in parts
    assert not any(c.name.startswith("numpy.") for c in parts)  # its code is not walked


def test_decorators_and_wrappers_are_not_code(tmp_path):
    plain = "def prepare(x):\n    return x + 1\n"
    wrapped = (
        "import functools\n\n\ndef deco(**kw):\n    def wrap(f):\n        @functools.wraps(f)\n"
        "        def inner(*a):\n            return f(*a)\n\n        return inner\n\n    return wrap\n\n\n"
        "@deco(retries=3)\ndef prepare(x):\n    return x + 1\n"
    )
    p1 = code_components(load_project(tmp_path / "v1", "deco", {"m": plain})["m"].prepare)
    p2 = code_components(load_project(tmp_path / "v2", "deco", {"m": wrapped})["m"].prepare)
    assert [c for c in p1 if c.name == "deco.m.prepare"] == [c for c in p2 if c.name == "deco.m.prepare"]


SUBPROCESS = """
import sys
sys.path.insert(0, {root!r})
from pipeline.fingerprint import code_fingerprint
from tests.helpers import closures, mutual, thirdparty
print(code_fingerprint(closures.both_lambdas), code_fingerprint(closures.both),
      code_fingerprint(mutual.stage), code_fingerprint(thirdparty.stage), code_fingerprint(closures.second))
"""


def test_code_keys_are_the_same_in_every_process():
    here = " ".join(
        code_fingerprint(f)
        for f in (closures.both_lambdas, closures.both, mutual.stage, thirdparty.stage, closures.second)
    )  # closures.second: a lambda without own source line, hashed by bytecode with a frozenset constant
    for seed in ("0", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", SUBPROCESS.format(root=str(ROOT))],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        assert out.stdout.strip() == here


@pytest.mark.parametrize(("bad", "other"), [(None, 0), (3, 4), ("text", "texts"), (3, 3.0)])
def test_a_value_that_is_not_code_is_hashed_as_a_value(bad, other):
    """Not code: it counts by its value — equal values agree, different ones differ."""
    assert code_fingerprint(bad) == code_fingerprint(copy.copy(bad))
    assert code_fingerprint(bad) != code_fingerprint(other)


def test_cython_callee_counts_as_its_package_not_as_project_code():
    """numpy's Cython functions carry a code object with a relative .pyx path."""
    import numpy as np

    from pipeline.fingerprint import code_components

    def draw(seed):
        return np.random.default_rng(seed).random()

    parts = code_components(draw)
    assert "numpy" in names(parts, "package")
    assert not any("default_rng" in c.name for c in parts)


def test_values_never_imports_code_and_code_registers_into_its_registry():
    import ast
    import types

    from pipeline.fingerprint import code, values

    tree = ast.parse(Path(values.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and (m == "code" or m.endswith(".code")) for m in imported)
    assert values.encode.dispatch(types.FunctionType) is code._function
    assert values.encode.dispatch(type) is code._type


_LAZY_IMPORT = """
import json, sys
from pipeline.fingerprint import code_components

def body():
    from optuna.distributions import FloatDistribution
    import markdown_it
    return FloatDistribution, markdown_it

assert "optuna" not in sys.modules and "markdown_it" not in sys.modules
print(json.dumps(sorted([c.name, c.digest] for c in code_components(body) if c.kind == "package")))
assert "optuna" not in sys.modules  # versioned without importing it
"""


def _run(code: str, cache: Path) -> str:
    env = {**__import__("os").environ, "PIPELINE_DIST_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _major_minor(dist: str) -> str:
    return ".".join(importlib.metadata.version(dist).split(".")[:2])


def test_a_library_imported_lazily_in_a_body_is_versioned_before_it_is_imported(tmp_path):
    got = _run(_LAZY_IMPORT, tmp_path / "dists.json")
    assert got == f'[["markdown_it", "{_major_minor("markdown-it-py")}"], ["optuna", "{_major_minor("optuna")}"]]'


def test_the_distribution_map_is_cached_across_runs_and_a_stale_one_is_never_believed(tmp_path):
    import json

    cache = tmp_path / "dists.json"
    first = _run(_LAZY_IMPORT, cache)
    doc = json.loads(cache.read_text())
    assert doc["map"]["optuna"] == ["optuna"]
    assert _run(_LAZY_IMPORT, cache) == first  # read from the file (same key)
    doc["map"]["optuna"] = ["no-such-distribution"]  # stale: a dist since uninstalled
    del doc["map"]["markdown_it"]  # stale: installed after the map was made
    cache.write_text(json.dumps(doc))
    assert _run(_LAZY_IMPORT, cache) == first
    doc = json.loads(cache.read_text())
    assert doc["map"]["optuna"] == ["optuna"]  # and rewritten
    assert doc["versions"]["optuna"][1] == importlib.metadata.version("optuna")
    doc["versions"]["optuna"] = [str(tmp_path / "optuna-9.9.dist-info"), "9.9"]  # a version since replaced
    cache.write_text(json.dumps(doc))
    assert _run(_LAZY_IMPORT, cache) == first
    doc["key"][0] = "another interpreter"
    cache.write_text(json.dumps(doc))
    assert _run(_LAZY_IMPORT, cache) == first


@pytest.mark.slow
def test_two_checkouts_on_one_environment_keep_a_distribution_map_each(tmp_path):
    """Runs alternating between two projects (different sys.path) each read their own map
    instead of recomputing over the other's every time."""
    import os

    code = "from pipeline.fingerprint import _dists\n_dists.distributions_map()\nprint(_dists._fresh)"
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_DIST_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    root = Path(__file__).resolve().parents[2]

    def fresh_in(project: Path) -> bool:
        project.mkdir(exist_ok=True)
        run_env = {**env, "PYTHONPATH": os.pathsep.join([str(root), str(project)])}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, cwd=project)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"

    a, b = tmp_path / "a", tmp_path / "b"
    assert fresh_in(a) and fresh_in(b)  # the first run of each computes its map
    assert not fresh_in(a) and not fresh_in(b)  # later runs read their own
    assert len(list((tmp_path / "cache" / "pipeline").glob("distributions-*.json"))) == 2
