"""StageCache: hits, misses, explain, multi-outputs, bad input — on real stores."""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import FingerprintError, PipelineError, StageCache, materialize


class Counter:
    def __init__(self) -> None:
        self.n = 0


def write_module(folder: Path, source: str) -> object:
    """Write a real module to disk and import it (fresh each time)."""
    name = f"stagemod_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def reload_with(module: object, source: str) -> object:
    """Rewrite a module's file and re-import it as a new module object."""
    path = Path(module.__file__)
    path.write_text(textwrap.dedent(source))
    sys.modules.pop(module.__name__, None)
    importlib.invalidate_caches()
    sys.path.insert(0, str(path.parent))
    try:
        return importlib.import_module(module.__name__)
    finally:
        sys.path.remove(str(path.parent))


MODULE = """
import pandas as pd

SCALE = 2.0

def clean(df):
    return df.dropna()

def features(df, lr=0.1):
    out = clean(df) * SCALE
    out["lr"] = lr
    return out
"""


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, None, 4.0], "b": [5.0, 6.0, 7.0, 8.0]})


def test_second_call_is_served_from_the_store(store, frame):
    runs = Counter()

    def double(df, factor=2):
        runs.n += 1
        return df * factor

    stage = StageCache(store).wrap(double)
    first = stage(frame)
    second = stage(frame)
    assert runs.n == 1
    # a hit is lazy (pipeline.lazy); assert_frame_equal checks isinstance(first, type(second))
    pd.testing.assert_frame_equal(first, materialize(second))
    outcome = stage.call(frame)
    assert outcome.hit and outcome.manifest.key == stage.key(frame).key


def test_a_new_stagecache_on_the_same_store_hits(store, frame):
    runs = Counter()

    def double(df):
        runs.n += 1
        return df * 2

    StageCache(store).wrap(double)(frame)
    StageCache(store.url if "://" in store.url else store).wrap(double)(frame)
    assert runs.n == 1


def test_multi_output_parts_use_their_own_codecs(store, frame):
    def split(df):
        return df.iloc[:2], np.arange(3), {"rows": len(df), "cols": list(df.columns)}

    stage = StageCache(store).wrap(split)
    stage(frame)
    outcome = stage.call(frame)
    assert outcome.hit
    parts = outcome.manifest.outputs.items
    assert [p.codec for p in parts] == ["arrow-pandas", "joblib", "json"]  # a numeric frame: Arrow IPC
    head, arr, meta = outcome.value
    pd.testing.assert_frame_equal(head, frame.iloc[:2])
    np.testing.assert_array_equal(arr, np.arange(3))
    assert meta == {"rows": 4, "cols": ["a", "b"]}


def test_input_by_content_not_identity(store, frame):
    runs = Counter()

    def total(df):
        runs.n += 1
        return float(df.sum().sum())

    stage = StageCache(store).wrap(total)
    stage(frame)
    stage(frame.copy())  # equal content, a different object
    assert runs.n == 1
    stage(frame.assign(b=frame["b"] + 1))
    assert runs.n == 2


def test_explain_param_change(store, frame, tmp_path):
    mod = write_module(tmp_path, MODULE)
    stage = StageCache(store).wrap(mod.features)
    stage(frame, lr=0.1)
    assert stage.explain(frame, lr=0.1).hit
    why = stage.explain(frame, lr=0.01)
    assert not why.hit
    assert why.reasons == ("param lr: 0.1 -> 0.01",)


def test_explain_helper_code_change_and_comment_only_change(store, frame, tmp_path):
    mod = write_module(tmp_path, MODULE)
    cache = StageCache(store)
    cache.wrap(mod.features)(frame)

    commented = MODULE.replace("def clean(df):", "def clean(df):  # a comment\n    # and another\n")
    mod = reload_with(mod, commented)
    assert cache.wrap(mod.features).explain(frame).hit

    edited = MODULE.replace("return df.dropna()", "return df.fillna(0)")
    mod = reload_with(mod, edited)
    why = cache.wrap(mod.features).explain(frame)
    assert not why.hit
    assert why.reasons == (f"code of {mod.__name__}.clean changed",)


def test_explain_constant_change(store, frame, tmp_path):
    mod = write_module(tmp_path, MODULE)
    cache = StageCache(store)
    cache.wrap(mod.features)(frame)
    mod = reload_with(mod, MODULE.replace("SCALE = 2.0", "SCALE = 3.0"))
    why = cache.wrap(mod.features).explain(frame)
    assert why.reasons == (f"global {mod.__name__}.SCALE changed",)


def test_explain_input_content_change(store, frame):
    def total(df, scale=1.0):
        return df.sum() * scale

    stage = StageCache(store).wrap(total)
    stage(frame)
    why = stage.explain(frame.assign(a=0.0))
    assert why.reasons == ("input df: content changed",)
    assert str(why).startswith("total: stale: input df")


def test_explain_before_any_run(store, frame):
    def total(df):
        return df.sum()

    why = StageCache(store).wrap(total).explain(frame)
    assert not why.hit and "no result" in why.reasons[0]


def test_version_pins_the_code_part(store, frame, tmp_path):
    mod = write_module(tmp_path, MODULE)
    cache = StageCache(store)
    cache.wrap(mod.features, version="1")(frame)
    mod = reload_with(mod, MODULE.replace("return df.dropna()", "return df.fillna(0)"))
    assert cache.wrap(mod.features, version="1").explain(frame).hit
    assert cache.wrap(mod.features, version="2").explain(frame).reasons == ("version: 1 -> 2",)


def test_unhashable_argument_is_one_clear_error(store):
    def use(lock, n=1):
        return n

    stage = StageCache(store).wrap(use)
    with pytest.raises(FingerprintError, match=r"argument 'lock' of stage 'use'.*_thread.lock"):
        stage(threading.Lock())


def test_ignore_leaves_an_argument_out_of_the_key(store):
    runs = Counter()

    def use(n, lock=None):
        runs.n += 1
        return n

    stage = StageCache(store).wrap(use, ignore=["lock"])
    stage(1, lock=threading.Lock())
    stage(1, lock=threading.Lock())
    assert runs.n == 1
    with pytest.raises(PipelineError, match="ignore=\\['nope'\\]"):
        StageCache(store).wrap(use, ignore=["nope"])


def test_a_failing_stage_commits_nothing(store):
    def boom(n):
        raise ValueError("no")

    stage = StageCache(store).wrap(boom)
    with pytest.raises(ValueError):
        stage(1)
    assert list(store.manifests()) == []


def test_manifest_records_components_timings_and_versions(store, frame):
    def total(df, scale=2):
        return df.sum() * scale

    cache = StageCache(store, run_id="run-1")
    manifest = cache.wrap(total, name="sum").call(frame).manifest
    assert manifest.stage == "sum" and manifest.run_id == "run-1"
    assert manifest.params["scale"]["repr"] == "2"
    assert set(manifest.inputs) == {"df"}
    assert manifest.compute_seconds >= 0 and manifest.bytes > 0
    assert "pandas" in manifest.versions and manifest.created
    assert manifest.outputs.fingerprint.startswith("xxh3:")
    assert any(c.kind == "code" and c.name.endswith("total") for c in manifest.code_components)
