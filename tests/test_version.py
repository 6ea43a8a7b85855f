"""Our own version is part of every key whose code calls into the library, so a release that
changes what the library writes (a checkpoint manifest carrying its small pickled entries since
0.2) never shares trial results or checkpoints with a release that would misread them: an older
reader, finding no model leaf in a manifest that carries its model, would resume training from
the initial model and commit that result under the trial's key."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pipeline
from pipeline.fingerprint.code import code_components
from pipeline.fingerprint.locality import package_version
from pipeline.trial_run import run_trial

ROOT = Path(__file__).resolve().parents[1]


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_package_and_the_distribution_say_the_same_version():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pipeline.__version__ == declared


def test_a_trial_key_carries_the_library_major_minor():
    packages = {c.name: c.digest for c in code_components(run_trial) if c.kind == "package"}
    assert packages["pipeline"] == package_version("pipeline")
    # What keys carry is the installed distribution's major.minor (a stale editable install's
    # metadata would key new code as the old release): it must be this source's version.
    assert packages["pipeline"] == _major_minor(pipeline.__version__)


def test_training_code_that_uses_the_library_is_keyed_by_its_version():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_tuning
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    packages = {c.name: c.digest for c in code_components(bench_tuning.train) if c.kind == "package"}
    assert packages.get("pipeline") == _major_minor(pipeline.__version__)
