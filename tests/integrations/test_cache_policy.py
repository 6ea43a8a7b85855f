"""StageCachePolicy behaves as Prefect users expect: cases ported from Prefect's
``tests/test_cache_policies.py`` (subtraction, composition with ``+``, ``NO_CACHE``,
``key_storage``, ``isolation_level``, ``configure``), then a real flow on a real server."""

from __future__ import annotations

import itertools
import threading

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE, RUN_ID, TASK_SOURCE, CompoundCachePolicy, Inputs
from prefect.context import TaskRunContext

from pipeline.integrations.prefect import StageCachePolicy


def add(x, y=0, logger=None):
    return x + y


def sub(x, y=0, logger=None):
    return x - y


def ctx(fn=add):
    return TaskRunContext.model_construct(task=task(fn, name="op"))


def key(policy, inputs, fn=add, **kwargs):
    return policy.compute_key(task_ctx=ctx(fn), inputs=inputs, flow_parameters=kwargs.pop("flow_parameters", None))


def test_key_varies_on_inputs_and_code():
    policy = StageCachePolicy()
    x, y = key(policy, {"x": 42}), key(policy, {"y": 42})
    none = key(policy, {})
    assert len({x, y, none, key(policy, {"z": "foo"})}) == 4
    assert key(policy, {"x": 42}, fn=sub) != x  # another task body
    assert key(policy, {"x": 42}) == x


def test_key_does_not_vary_on_flow_parameters_or_other_kwargs():
    policy = StageCachePolicy()
    base = key(policy, {"x": 42})
    for values in itertools.permutations([None, 1, "foo", {}]):
        kwargs = dict(zip(["flow_parameters", "other"], values))
        assert policy.compute_key(task_ctx=ctx(), inputs={"x": 42}, **kwargs) == base


def test_subtraction_excludes_an_argument_from_the_key():
    policy = StageCachePolicy()
    without = policy - "y"
    assert without != policy and without.exclude == ["y"] and policy.exclude == []
    base = key(without, {"x": 42})
    for value in [42, "foo", None, threading.Lock()]:  # even one that could not be hashed
        assert key(without, {"x": 42, "y": value}) == base
    assert key(policy, {"x": 42, "y": 1}) != key(policy, {"x": 42, "y": 2})
    assert (policy - "y" - "logger").exclude == ["y", "logger"]
    with pytest.raises(TypeError, match="Can only subtract strings"):
        policy - 1  # noqa: B018


def test_composition_with_plus_and_subtraction_through_the_compound():
    policy = StageCachePolicy() + TASK_SOURCE
    assert isinstance(policy, CompoundCachePolicy) and len(policy.policies) == 2
    without = policy - "y"
    assert isinstance(without, CompoundCachePolicy)
    assert key(without, {"x": 1, "y": 1}) == key(without, {"x": 1, "y": 2})
    assert key(policy, {"x": 1, "y": 1}) != key(policy, {"x": 1, "y": 2})
    # composed further, flattened as Prefect does, subtraction still reaches our policy
    three = policy + (Inputs() + RUN_ID)
    assert len(three.policies) == 4
    assert [p.exclude for p in (three - "y").policies if isinstance(p, (StageCachePolicy, Inputs))] == [["y"], ["y"]]


def test_adding_no_cache_is_a_no_op():
    policy = StageCachePolicy(version="1")
    assert policy + NO_CACHE == policy
    assert NO_CACHE + policy == policy
    assert NO_CACHE.compute_key(task_ctx=None, inputs=None, flow_parameters=None) is None


def test_key_storage_and_isolation_level_follow_prefect():
    a = StageCachePolicy(key_storage="/path/a")
    with pytest.raises(ValueError, match="different storage locations"):
        a + StageCachePolicy(key_storage="/path/b")  # noqa: B018
    assert (a + RUN_ID).key_storage == "/path/a"
    s = StageCachePolicy(isolation_level="SERIALIZABLE")
    with pytest.raises(ValueError, match="different isolation levels"):
        s + StageCachePolicy(isolation_level="READ_COMMITTED")  # noqa: B018
    assert (RUN_ID + s).isolation_level == "SERIALIZABLE"
    configured = StageCachePolicy().configure(key_storage="/k", isolation_level="SERIALIZABLE", lock_manager="/l")
    assert (configured.key_storage, configured.isolation_level, configured.lock_manager) == (
        "/k",
        "SERIALIZABLE",
        "/l",
    )
    assert isinstance(configured, StageCachePolicy)


def test_version_pins_the_code_part():
    assert key(StageCachePolicy(version="1"), {"x": 1}) == key(StageCachePolicy(version="1"), {"x": 1}, fn=sub)
    assert key(StageCachePolicy(version="1"), {"x": 1}) != key(StageCachePolicy(version="2"), {"x": 1})


calls: list[int] = []


@task(cache_policy=StageCachePolicy() - "logger", persist_result=True)
def scaled(x, logger=None):
    calls.append(x)
    return x * 10


@flow
def scaled_flow(x: int):
    return scaled(x, logger=threading.Lock())  # a fresh, unhashable logger stand-in per run


@pytest.mark.usefixtures("prefect_api")
def test_a_real_flow_caches_by_content_and_ignores_the_subtracted_argument():
    calls.clear()
    assert scaled_flow(3) == 30
    assert scaled_flow(3) == 30
    assert calls == [3]  # the second run was Cached although its logger differs
    assert scaled_flow(4) == 40
    assert calls == [3, 4]
