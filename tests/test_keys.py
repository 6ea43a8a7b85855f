"""Keys end to end through StageCache: each family of stale hit that the issue found serves
the right value; keys don't depend on state a stage mutates; the module-constant rule;
manifests of the old key shape still read."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import StageCache
from pipeline.fingerprint import Component
from pipeline.keys import STAGE, code_key, derive, stage_key
from pipeline.store import Manifest
from tests.helpers.loader import load_project


def served(store, func, *calls):
    """What a cached ``func`` returns for each call in turn, on one store."""
    stage = StageCache(store).wrap(func)
    return [stage(*args) for args in calls]


def test_ordered_dict_order_is_part_of_the_key(store):
    def first_key(d):
        return next(iter(d))

    ab = collections.OrderedDict([("a", 1), ("b", 2)])
    ba = collections.OrderedDict([("b", 2), ("a", 1)])
    assert served(store, first_key, (ab,), (ba,)) == ["a", "b"]


def test_category_order_is_part_of_the_key(store):
    def codes(c):
        return [int(x) for x in c.codes]

    ab = pd.Categorical(["a", "b"], categories=["a", "b"])
    ba = pd.Categorical(["a", "b"], categories=["b", "a"])
    assert served(store, codes, (ab,), (ba,)) == [[0, 1], [1, 0]]


class Tagged(dict):
    def __init__(self, *args, tag, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


class Rows(list):
    __slots__ = ("unit",)


class Meters(np.ndarray):
    pass


class Frame(pd.DataFrame):
    _metadata = ["unit"]

    @property
    def _constructor(self):
        return Frame


def test_a_subclass_hashes_its_type_and_the_state_it_adds(store):
    def tag(d):
        return d.tag

    assert served(store, tag, (Tagged(a=1, tag="x"),), (Tagged(a=1, tag="y"),)) == ["x", "y"]

    def unit(rows):
        return rows.unit

    r1, r2 = Rows([1]), Rows([1])
    r1.unit, r2.unit = "m", "cm"
    assert served(store, unit, (r1,), (r2,)) == ["m", "cm"]

    def kind(a):
        return type(a).__name__

    assert served(store, kind, (np.zeros(2),), (np.zeros(2).view(Meters),)) == ["ndarray", "Meters"]

    f1, f2 = Frame({"a": [1.0]}), Frame({"a": [1.0]})
    f1.unit, f2.unit = "m", "cm"
    assert served(store, unit, (f1,), (f2,)) == ["m", "cm"]
    assert served(store, kind, (pd.DataFrame({"a": [1.0]}),), (Frame({"a": [1.0]}),)) == ["DataFrame", "Frame"]

    def factory(d):
        return d["missing"]

    lists, ints = collections.defaultdict(list), collections.defaultdict(int)
    assert served(store, factory, (lists,), (ints,)) == [[], 0]


def test_a_wrapped_callable_hashes_what_it_wraps(store):
    def apply(f, x):
        return f(x)

    plus1, plus2 = np.frompyfunc(lambda x: x + 1, 1, 1), np.frompyfunc(lambda x: x + 2, 1, 1)
    assert served(store, apply, (plus1, 1), (plus2, 1)) == [2, 3]
    v1, v2 = np.vectorize(lambda x: x * 2), np.vectorize(lambda x: x * 3)
    assert [list(r) for r in served(store, apply, (v1, [1]), (v2, [1]))] == [[2], [3]]

    def cached(k):
        @functools.lru_cache
        def f(x):
            return x + k

        return f

    assert served(store, apply, (cached(1), 1), (cached(2), 1)) == [2, 3]


def test_argument_names_and_calling_convention_are_part_of_a_function_key(store):
    def call(f):
        return f(1, 2)

    # one line, no source of their own: argument names and calling convention
    swapped = [lambda x, y: x - y, lambda y, x: x - y]
    conventions = [lambda x, *a: a, lambda x, a: a]
    assert served(store, call, (swapped[0],), (swapped[1],)) == [-1, 1]
    assert served(store, call, (conventions[0],), (conventions[1],)) == [(2,), 2]


def call(f):
    return f(1, 2)


def test_default_values_are_part_of_a_function_key(store):
    def make(k):
        def add(x, y, k=k):  # a default bound from a variable: same source, other value
            return x + y + k

        return add

    def make_kw(k):
        def add(x, y, *, k=k):
            return x + y + k

        return add

    assert served(store, call, (make(10),), (make(20),)) == [13, 23]
    assert served(store, call, (make_kw(10),), (make_kw(20),)) == [13, 23]


def test_closure_cell_values_are_part_of_a_function_key(store):
    class Scale:
        def __init__(self, k):
            self.k = k

    def closing(s):
        def f(x, y):
            return (x + y) * s.k

        return f

    assert served(store, call, (closing(Scale(2)),), (closing(Scale(3)),)) == [6, 9]


def test_stateless_local_instances_and_unset_fields_have_keys(store):
    def name(obj):
        return type(obj).__name__

    class Local:
        pass

    @dataclasses.dataclass
    class Lazy:
        a: int
        cache: int = dataclasses.field(init=False)

    late = Lazy(1)
    set_later = Lazy(1)
    set_later.cache = 5
    assert served(store, name, (Local(),), (Local(),)) == ["Local", "Local"]

    def cache(x):
        return getattr(x, "cache", "unset")

    assert served(store, cache, (late,), (set_later,)) == ["unset", 5]


MUTATES = """
calls = []
memo = {}
THRESHOLD = 0.5
LABELS = {"a": 1}


def score(x):
    calls.append(x)
    if x not in memo:
        memo[x] = x * 2
    return (memo[x] > THRESHOLD, LABELS["a"])
"""


def test_a_stage_that_mutates_module_state_still_hits(store, tmp_path):
    mod = load_project(tmp_path / "v1", "mutating", {"m": MUTATES})["m"]
    stage = StageCache(store).wrap(mod.score)
    assert stage.call(1).hit is False
    assert mod.calls == [1] and mod.memo == {1: 2}
    assert stage.call(1).hit  # the list and dict it appended to are not part of its key
    assert mod.calls == [1]


@pytest.mark.parametrize(
    ("edit", "named"),
    [(("THRESHOLD = 0.5", "THRESHOLD = 0.6"), "THRESHOLD"), (('LABELS = {"a": 1}', 'LABELS = {"a": 2}'), "LABELS")],
)
def test_a_changed_module_constant_changes_the_key_and_explain_names_it(store, tmp_path, edit, named):
    mod = load_project(tmp_path / "v1", "constants", {"m": MUTATES})["m"]
    StageCache(store).wrap(mod.score)(1)
    edited = load_project(tmp_path / "v2", "constants", {"m": MUTATES.replace(*edit)})["m"]
    why = StageCache(store).wrap(edited.score).explain(1)
    assert not why.hit
    assert why.reasons == (f"global constants.m.{named} changed",)


def test_an_upper_case_constant_mutated_in_place_changes_the_key(store, tmp_path):
    mod = load_project(tmp_path / "v1", "inplace", {"m": MUTATES})["m"]
    stage = StageCache(store).wrap(mod.score)
    stage(1)
    mod.LABELS["a"] = 7  # a constant is what it is now: a notebook edit is seen
    assert stage.call(1).value == (True, 7)


def test_a_global_the_code_rebinds_is_state_by_name(store, tmp_path):
    src = "n = 0\n\n\ndef bump(x):\n    global n\n    n += 1\n    return x\n"
    mod = load_project(tmp_path / "v1", "rebinds", {"m": src})["m"]
    stage = StageCache(store).wrap(mod.bump)
    stage(1)
    assert stage.call(1).hit and mod.n == 1
    assert Component("state", "rebinds.m.n", "rebound by the code") in code_key(mod.bump).components


def test_one_recipe_and_its_version():
    assert STAGE == "stage/3"
    assert stage_key("s", "xxh3:1", {"a": "x", "b": "y"}) == stage_key("s", "xxh3:1", {"b": "y", "a": "x"})
    assert stage_key("s", "xxh3:1", {"a": "x"}) == derive(STAGE, "s", "xxh3:1", {"a": "x"})
    assert stage_key("s", "xxh3:1", {"a": "x"}) != derive("prefect-task/3", "s", "xxh3:1", {"a": "x"})


def test_manifest_stores_typed_components_and_reads_the_old_dict_shape(store, tmp_path):
    def total(xs):
        return sum(xs)

    manifest = StageCache(store).wrap(total).call([1, 2]).manifest
    assert all(isinstance(c, Component) for c in manifest.code_components)
    body = json.loads(manifest.to_json())
    assert all(isinstance(c, list) and len(c) == 3 for c in body["code_components"])
    assert Manifest.from_json(manifest.to_json()).code_components == manifest.code_components

    # the first key format's {name: digest} dict (a sealed manifest can't be edited to hold
    # one, so the reader the manifest uses is fed it directly)
    from pipeline.fingerprint.component import read_components

    old = read_components({"tests.test_keys.total": "xxh3:0", "pkg:numpy": "2.4", "global:m.X": "xxh3:1"})
    assert set(old) == {
        Component("code", "tests.test_keys.total", "xxh3:0"),
        Component("package", "numpy", "2.4"),
        Component("global", "m.X", "xxh3:1"),
    }


def test_what_a_library_holds_is_not_part_of_the_key(tmp_path, monkeypatch):
    src = "import os\n\n\ndef where(x):\n    return os.environ.get('HOME_OF_X', x)\n"
    mod = load_project(tmp_path / "v1", "libstate", {"m": src})["m"]
    before = code_key(mod.where)
    monkeypatch.setenv("SOMETHING_ELSE", "1")  # the environment is os's state, not this code
    assert code_key(mod.where) == before
    assert not any("environ" in c.name for c in before.components)


def test_a_module_level_ufunc_is_keyed_by_the_function_it_wraps(tmp_path):
    src = "import numpy as np\n\nINC = np.frompyfunc(lambda x: x + 1, 1, 1)\n\n\ndef stage(x):\n    return INC(x)\n"
    one = load_project(tmp_path / "v1", "ufuncs", {"m": src})["m"]
    same = load_project(tmp_path / "v2", "ufuncs", {"m": src})["m"]
    two = load_project(tmp_path / "v3", "ufuncs", {"m": src.replace("x + 1", "x + 2")})["m"]
    assert code_key(one.stage).digest == code_key(same.stage).digest
    assert code_key(one.stage).digest != code_key(two.stage).digest


def test_a_search_over_other_bound_data_has_another_key():
    """The data a partial binds to the training function is part of the search's key (the
    best-so-far record and the search index are keyed by it): a search over other data must
    never be answered by this one's best."""
    import functools

    from pipeline.keys import search_key

    def objective(train, params, checkpointer):
        return sum(train) * params["lr"]

    settings = {"space": {"lr": "Float(0.1, 1)"}, "sampler": "tpe", "seed": 0}
    a = search_key("tune", functools.partial(objective, [1, 2, 3]), **settings)
    b = search_key("tune", functools.partial(objective, [1, 2, 4]), **settings)
    assert a != b
    assert a == search_key("tune", functools.partial(objective, [1, 2, 3]), **settings)
