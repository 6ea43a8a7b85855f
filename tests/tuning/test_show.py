"""`show tune` and `load_best` answer for the search the latest run used (or the one named by
key), and say which: the bundled pipeline through the CLI, on a real Prefect server."""

from __future__ import annotations

import re

import pytest

from pipeline import ConfigError, Store
from pipeline.cli import app
from pipeline.tuning import load_best, search_indexes

FAST = ["--set", "tune.n_trials=2", "--set", "train.epochs=3", "--set", "tune.epochs=2"]


def invoke(*args: str):
    from typer.testing import CliRunner

    done = CliRunner().invoke(app, list(args), terminal_width=250)
    assert done.exit_code == 0, done.output
    return done.output


def best_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("best: "))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_after_runs_a_b_a_show_and_load_best_name_the_a_search(tmp_path):
    store = str(tmp_path / "store")
    invoke("run", "--store", store, *FAST)  # A: default parameters
    (a,) = search_indexes(Store(store), "tune")
    a_best = load_best(store, "tune", key=a["key"])
    invoke("run", "--store", store, *FAST, "--set", "preprocess.clip_z=3.5")  # B: other data, another search
    (b,) = [d for d in search_indexes(Store(store), "tune") if d["key"] != a["key"]]
    b_best = load_best(store, "tune", key=b["key"])
    assert (a_best.params, a_best.value) != (b_best.params, b_best.value)  # the two searches can be told apart
    shown_b = invoke("show", "tune", "--store", store)
    assert b["key"] in shown_b and a["key"] not in shown_b

    again = invoke("run", "--store", store, *FAST)  # A again: every stage served from the store
    assert "9 cached, 0 computed" in again
    run_id = re.search(r"run ([0-9a-f-]{32,36})", again).group(1)
    shown = invoke("show", "tune", "--store", store)
    assert f"search tune {a['key']} (used by the latest run {run_id})" in shown
    assert best_line(shown) == f"best: {a_best.params} value {a_best.value!r} (trial {a_best.trial})"
    best = load_best(store, "tune")
    assert best.search.key == a["key"] and best.search.run_id == run_id
    assert (best.params, best.value, best.trial) == (a_best.params, a_best.value, a_best.trial)
    assert best.model.predict_proba is not None

    invoke("run", "--store", store, "--flow", "tests.tuning.other_flow:no_search")  # a later run with no search
    shown = invoke("show", "tune", "--store", store)
    assert f"search tune {a['key']} (used by run {run_id}, the latest using one)" in shown

    by_key = invoke("show", "tune", "--store", store, "--key", b["key"][5:15])  # a prefix of the digest
    assert f"search tune {b['key']} (named by key)" in by_key
    assert best_line(by_key) == f"best: {b_best.params} value {b_best.value!r} (trial {b_best.trial})"
    with pytest.raises(ConfigError, match="no search 'tune' with key 'ffff'"):
        load_best(store, "tune", key="ffff")
