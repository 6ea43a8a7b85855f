"""Lazy hits under @stage in real Prefect flows (real server), threads and a process pool."""

from __future__ import annotations

import pytest

from pipeline import use_store

FLOW = """
import os

import numpy as np
import pandas as pd
from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner

from pipeline import stage
from pipeline.lazy import is_unread


def log(line):
    with open(os.environ["STAGE_LOG"], "a") as f:
        f.write(line + "\\n")


@stage
def make(n: int):
    log("make")
    return pd.DataFrame(np.arange(n * 3, dtype=float).reshape(n, 3), columns=list("abc"))


@stage
def scale(df):
    log(f"scale pid={os.getpid()} unread={is_unread(df)}")
    return df * 2


@stage
def shift(df):
    log("shift")
    return df + 1


@stage
def summary(df):
    log("summary")
    return {"rows": len(df), "total": float(df.to_numpy().sum())}


@flow
def chain(n: int = 100):
    a = make(n)
    b = scale(a)
    c = shift(b)
    s = summary(c)
    unread = [is_unread(a), is_unread(b), is_unread(c)]  # Prefect's parameter walk read none
    return {"unread": unread, "summary": s, "shape": list(c.shape)}


@flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
def pooled(n: int = 100):
    a = make(n)
    futures = [scale.submit(a), shift.submit(a)]
    out = [f.result() for f in futures]
    return {"a_unread": is_unread(a), "out_unread": [is_unread(x) for x in out], "total": float(out[0].sum().sum())}
"""


@pytest.fixture
def flows(flow_module):
    m = flow_module(FLOW)
    mod = m.module()
    mod.log_file = m
    return mod


def test_warm_flow_keys_the_chain_without_reading(flows, tmp_path):
    with use_store(tmp_path / "store"):
        cold = flows.chain(n=100)
        flows.log_file.executed()
        warm = flows.chain(n=100)
    assert flows.log_file.executed() == []  # all four served
    assert warm["summary"] == cold["summary"]
    assert warm["unread"] == [True, True, True]  # keyed through the recorded fingerprints
    assert warm["shape"] == [100, 3]  # and read when flow code used it


def test_changed_stage_reads_only_its_input_and_computes_on_real_values(flows, tmp_path):
    with use_store(tmp_path / "store"):
        flows.chain(n=100)
        flows.log_file.executed()
        from pipeline.cache import forcing

        with forcing(["scale"]):
            warm = flows.chain(n=100)
    ran = flows.log_file.executed()
    assert ran[0] == "scale" and "unread=False" in ran  # the forced body got the real frame
    assert warm["unread"][0] is False  # scale's input was read for it (it computed)


def test_process_pool_ships_references_not_data(flows, tmp_path):
    with use_store(tmp_path / "store"):
        cold = flows.pooled(n=100)
        flows.log_file.executed()
        warm = flows.pooled(n=100)
    assert flows.log_file.executed() == []
    assert warm["total"] == cold["total"]
    assert warm["a_unread"] is True  # shipped to two workers, still not read here
