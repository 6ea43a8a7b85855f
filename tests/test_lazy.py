"""Lazy hits (pipeline.lazy): keys chain through recorded fingerprints, bytes are read on use."""

from __future__ import annotations

import copy
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import IntegrityError, StageCache, Store, materialize
from pipeline.lazy import is_lazy, is_unread
from pipeline.store.tree import Leaf, leaves


class CountingStore(Store):
    """A real store that counts the objects it reads (``reads``: all but small JSON)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.reads = self.json_reads = 0

    def load(self, tree):
        if isinstance(tree, Leaf) and tree.codec == "json":
            self.json_reads += 1
        elif isinstance(tree, Leaf):
            self.reads += 1
        return super().load(tree)


@pytest.fixture
def cstore(tmp_path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def make(n):
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.random((n, 4)), columns=list("abcd"))


def scale(df, k=2.0):
    return df * k


def shift(df, by=1.0):
    return df + by


def summary(df):
    return {"rows": len(df), "mean": float(df.to_numpy().mean())}


def chain(cache, n=1000):
    a = cache.wrap(make)(n)
    b = cache.wrap(scale)(a)
    c = cache.wrap(shift)(b)
    return a, b, c, cache.wrap(summary)(c)


def test_warm_chain_reads_nothing_until_used(cstore):
    cache = StageCache(cstore)
    cold = chain(cache)
    cstore.reads = 0
    a, b, c, s = chain(cache)
    assert cstore.reads == 0  # three frames keyed through their recorded fingerprints
    assert cstore.json_reads == 1 and s == cold[3]  # a small JSON result is read at once
    assert all(is_unread(v) for v in (a, b, c))
    assert c.shape == (1000, 4)  # first use reads it
    assert cstore.reads == 1 and not is_unread(c) and is_unread(b)
    pd.testing.assert_frame_equal(materialize(c), cold[2])


def test_lazy_value_is_transparent(cstore):
    cache = StageCache(cstore)
    chain(cache)
    a, b, c, _ = chain(cache)
    assert isinstance(a, pd.DataFrame) and is_unread(a)  # answered from the codec, not read
    assert float((b / 2 - a).abs().to_numpy().max()) == 0.0
    assert np.asarray(c).shape == (1000, 4)
    arr = cache.wrap(lambda df: df.to_numpy(), name="to_numpy")
    arr(a)
    x = arr(a)
    assert is_lazy(x) and isinstance(x, np.ndarray)  # joblib leaf: isinstance reads it
    assert np.mean(x) == pytest.approx(float(a.to_numpy().mean()))
    from sklearn.linear_model import LinearRegression

    coef = LinearRegression().fit(c[["a"]], b["a"]).coef_
    assert coef[0] == pytest.approx(1.0)
    assert repr(b) == repr(materialize(b))


def test_miss_downstream_reads_only_its_input(cstore):
    cache = StageCache(cstore)
    chain(cache)

    def summary(df):  # the last stage's code changed
        return {"rows": len(df), "max": float(df.to_numpy().max())}

    a = cache.wrap(make)(1000)
    b = cache.wrap(scale)(a)
    c = cache.wrap(shift)(b)
    cstore.reads = 0
    out = cache.wrap(summary)(c)
    assert cstore.reads == 1  # exactly the one input the changed stage needs
    assert out["rows"] == 1000 and is_unread(a) and is_unread(b) and not is_unread(c)


def test_changed_in_place_keys_by_new_content(cstore):
    cache = StageCache(cstore)
    chain(cache)
    a = cache.wrap(make)(1000)
    a["a"] = 0.0  # flow code mutates the served frame
    b = cache.wrap(scale)(a)
    assert float(b["a"].abs().max()) == 0.0  # a miss on the new content, not the stale hit


def test_pickle_ships_the_reference(cstore):
    cache = StageCache(cstore)
    chain(cache, n=100_000)
    a = chain(cache, n=100_000)[0]
    blob = pickle.dumps(a)
    assert len(blob) < 10_000 and is_unread(a)
    back = pickle.loads(blob)
    assert is_unread(back) and back.__pipeline_fingerprint__ == a.__pipeline_fingerprint__
    pd.testing.assert_frame_equal(materialize(back), make(100_000))
    a["a"] = 1.0  # once read (and maybe changed), pickling and copying take the value itself
    assert (pickle.loads(pickle.dumps(a))["a"] == 1.0).all()
    assert (copy.copy(a)["a"] == 1.0).all() and (copy.deepcopy(a)["a"] == 1.0).all()


def _corrupt(store: Store, stage: str) -> None:
    """Overwrite every object of the stage's result on disk (wherever the layout puts it)."""
    m = next(store.manifests(stage))
    for leaf in leaves(m.outputs):
        hits = [p for p in Path(store.url).rglob("*") if p.is_file() and leaf.object[2:] in p.name]
        assert hits
        for p in hits:
            p.write_bytes(b"garbage")


def test_corrupt_when_read_recomputes_the_stage(tmp_path):
    store = Store(tmp_path / "s")
    runs = []

    def scale2(df):
        runs.append(1)
        return df * 2

    cache = StageCache(store)
    a = cache.wrap(make)(1000)
    cache.wrap(scale2, name="scale2")(a)
    _corrupt(store, "scale2")
    b = cache.wrap(scale2, name="scale2")(cache.wrap(make)(1000))
    assert is_unread(b) and len(runs) == 1
    with pytest.warns(UserWarning, match="recomputing"):
        value = materialize(b)
    assert len(runs) == 2  # recomputed, never the garbage
    pd.testing.assert_frame_equal(value, make(1000) * 2)
    assert store.verify().quarantined >= 1  # the garbage was moved aside
    c = cache.wrap(scale2, name="scale2")(a)
    pd.testing.assert_frame_equal(materialize(c), make(1000) * 2)  # the store healed
    assert len(runs) == 2


def test_corrupt_and_recomputed_other_content_is_an_error(tmp_path):
    store = Store(tmp_path / "s")
    seed = [0]

    def noisy(n):
        seed[0] += 1
        return pd.DataFrame(np.random.default_rng(seed[0]).random((n, 2)))

    cache = StageCache(store)
    cache.wrap(noisy)(10)
    _corrupt(store, "noisy")
    x = cache.wrap(noisy)(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(IntegrityError, match="other content than recorded"):
            materialize(x)


def test_shipped_reference_found_corrupt_is_a_clear_error(tmp_path):
    store = Store(tmp_path / "s")
    cache = StageCache(store)
    chain(cache)
    a = pickle.loads(pickle.dumps(chain(cache)[0]))  # as a worker process receives it
    _corrupt(store, "make")
    with pytest.raises(IntegrityError, match="can't be recomputed here"):
        materialize(a)


def test_threads_read_once(cstore):
    cache = StageCache(cstore)
    chain(cache)
    a = chain(cache)[0]
    cstore.reads = 0
    out = []
    threads = [threading.Thread(target=lambda: out.append(a.shape)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [(1000, 4)] * 8 and cstore.reads == 1


def test_materialize_containers_and_plain_values(cstore):
    cache = StageCache(cstore)
    chain(cache)
    a, b, _, s = chain(cache)
    got = materialize([a, {"b": b}, 3])
    assert type(got[0]) is pd.DataFrame and type(got[1]["b"]) is pd.DataFrame and got[2] == 3
    assert materialize(s) is s


def test_tuple_outputs_unpack_without_reading(cstore):
    def split(df):
        return df[["a", "b"]], df["c"]

    cache = StageCache(cstore)
    a = cache.wrap(make)(1000)
    cache.wrap(split)(a)
    cstore.reads = 0
    x, y = cache.wrap(split)(cache.wrap(make)(1000))
    assert cstore.reads == 0 and isinstance(y, pd.Series)
    assert len(x) == 1000 and cstore.reads == 1


def test_isinstance_of_a_joblib_leaf_needs_no_read(cstore):
    from sklearn.linear_model import LinearRegression

    def fit(df):
        return LinearRegression().fit(df[["a"]].to_numpy(), df["b"].to_numpy())

    cache = StageCache(cstore)
    cache.wrap(fit)(cache.wrap(make)(1000))
    cstore.reads = 0
    model = cache.wrap(fit)(cache.wrap(make)(1000))
    assert isinstance(model, LinearRegression) and not isinstance(model, int)  # as Prefect's result walk asks
    assert cstore.reads == 0 and is_unread(model)
    assert model.predict(np.zeros((1, 1))).shape == (1,) and cstore.reads == 1


def test_documented_non_transparent_cases_work_through_materialize(cstore):
    import pyarrow as pa

    cache = StageCache(cstore)
    to_array = cache.wrap(lambda df: df["a"].to_numpy(), name="column")
    a = cache.wrap(make)(1000)
    to_array(a)
    col = to_array(cache.wrap(make)(1000))
    assert type(col) is not np.ndarray and isinstance(col, np.ndarray)  # type() shows the proxy
    with pytest.raises(pa.ArrowTypeError):
        pa.array(col)  # a C-level exact-type check
    assert len(pa.array(materialize(col))) == 1000


def test_cached_search_reads_no_trial_model_until_the_best_is_used(tmp_path, monkeypatch):
    from pipeline.tuning import tune
    from tests.tuning import search

    monkeypatch.setenv("TUNE_LOG", str(tmp_path / "l.log"))
    store = CountingStore(tmp_path / "s")
    kwargs = dict(n_trials=3, sampler="random", seed=1, store=store, name="lz", checkpointing=search.CHECKPOINTING)
    first = tune(search.train, search.SPACE, **kwargs)
    store.reads = 0
    again = tune(search.train, search.SPACE, **kwargs)
    assert [r.source for r in again.trials] == ["cached"] * 3
    assert store.reads == 0 and is_unread(again.best_model)  # trial records are JSON; models stay unread
    x, y, xv, yv = search.data()
    np.testing.assert_array_equal(again.best_model.predict(xv), first.best_model.predict(xv))
    assert store.reads == 1


def test_a_stage_returning_an_inner_hit_saves_the_value_not_a_reference(cstore):
    cache = StageCache(cstore)
    inner = cache.wrap(make)
    inner(1000)

    def outer(n):
        return inner(n)  # a lazy hit of another stage

    got = cache.wrap(outer)(1000)
    assert type(got) is pd.DataFrame
    m = next(cstore.manifests("outer"))
    assert m.outputs.codec == "arrow-pandas"  # stored as the frame itself


SHAPES = """
class Thing:
    def __init__(self, n):
        self.n = n

    def __call__(self):
        return self.n


class Box(dict):
    pass


def make_thing(n):
    return Thing(n)


def make_box(n):
    return Box(n=n)
"""
STAGES = """
def thing(n):
    import shapes

    return shapes.make_thing(n)


def box(n):
    import shapes

    return shapes.make_box(n)
"""


def _in_a_fresh_process(tmp_path: Path, code: str) -> list:
    """Run ``code`` (which prints one JSON line) in a new interpreter with ``shapes`` on its path."""
    import json
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{root}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_isinstance_of_an_unread_leaf_whose_module_is_not_imported_imports_nothing(tmp_path):
    """A fresh process serves a hit whose class (and every class it derives from) is not
    imported: Prefect's ``isinstance(obj, int)`` walk imports nothing and reads nothing; a
    check that needs the class (an ABC by its methods, the class itself once imported, a
    builtin base) gets the real answer."""
    (tmp_path / "shapes.py").write_text(SHAPES)
    (tmp_path / "stages.py").write_text(STAGES)
    store = tmp_path / "store"
    prelude = f"""
        import collections.abc, json, sys
        from pipeline import StageCache, Store
        from pipeline.lazy import is_unread
        cache = StageCache(Store({str(store)!r}))
        from stages import box, thing
    """
    assert _in_a_fresh_process(tmp_path, prelude + """
        print(json.dumps([cache.wrap(thing)(3)(), cache.wrap(box)(4)["n"]]))
    """) == [3, 4]  # fmt: skip
    out = _in_a_fresh_process(tmp_path, prelude + """
        t = cache.wrap(thing)(3)
        facts = [isinstance(t, int), isinstance(t, (str, bytes, dict)), isinstance(t, object), "shapes" in sys.modules,
                 is_unread(t), isinstance(t, collections.abc.Callable), is_unread(t)]
        import shapes
        b = cache.wrap(box)(4)
        facts += [isinstance(t, shapes.Thing), is_unread(t), isinstance(b, dict), isinstance(b, shapes.Box), t.n]
        print(json.dumps(facts))
    """)  # fmt: skip
    assert out == [False, False, True, False, True, True, True, True, True, True, True, 3]


def test_a_builtin_base_is_answered_by_the_real_class(tmp_path):
    """A leaf whose class derives from a builtin (always imported) gets the real class: its
    module is imported for the check, the value is still not read."""
    (tmp_path / "shapes.py").write_text(SHAPES)
    (tmp_path / "stages.py").write_text(STAGES)
    store = tmp_path / "store"
    prelude = f"""
        import json, sys
        from pipeline import StageCache, Store
        from pipeline.lazy import is_unread
        cache = StageCache(Store({str(store)!r}))
        from stages import box, thing
    """
    _in_a_fresh_process(tmp_path, prelude + """
        print(json.dumps(cache.wrap(box)(4)["n"]))
    """)  # fmt: skip
    out = _in_a_fresh_process(tmp_path, prelude + """
        b = cache.wrap(box)(4)
        print(json.dumps([isinstance(b, dict), "shapes" in sys.modules, is_unread(b), b["n"]]))
    """)  # fmt: skip
    assert out == [True, True, True, 4]
