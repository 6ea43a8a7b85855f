"""Retention, table-driven: entries (steps, metrics, times, sizes, tags, runs) -> the kept set.

First the policies alone over records, then ``lifecycle.plan`` / ``gc`` over a real store:
stage results, checkpoints, run records and tags, including the never-delete list."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from pipeline import ConfigError, Manifest, Store
from pipeline.store import retention
from pipeline.store.keep import (
    BestK,
    FailedRuns,
    KeepAll,
    LatestN,
    MaxBytes,
    OlderThan,
    Pinned,
    Record,
)
from pipeline.store.lifecycle import Retention, plan, policy_of

NOW = 1_800_000_000.0
DAY = 86400.0


def recs(*specs):
    """(step, metrics, age in days, bytes, tags, failed) -> Records."""
    return [Record(s, m, NOW - age * DAY, b, frozenset(t), f) for s, m, age, b, t, f in specs]


SIX = recs(
    (1, {"loss": 0.5}, 40, 100, (), True),
    (2, {"loss": 0.2}, 20, 100, ("prod",), False),
    (3, {"loss": 0.9}, 10, 100, (), True),
    (4, {"loss": float("nan")}, 5, 100, ("old",), False),
    (5, {}, 2, 100, (), False),
    (6, {"loss": 0.3}, 0.5, 300, (), False),
)


@pytest.mark.parametrize(
    "policy, kept",
    [
        (KeepAll(), {1, 2, 3, 4, 5, 6}),
        (LatestN(2), {5, 6}),
        (BestK(2, "loss"), {2, 6}),  # NaN and missing never count
        (BestK(1, "loss", mode="max"), {3}),
        (OlderThan(7), {4, 5, 6}),
        (OlderThan(0), set()),
        (MaxBytes(500), {4, 5, 6}),  # the newest while they fit: 300 + 100 + 100
        (MaxBytes(499), {5, 6}),
        (MaxBytes("1KB"), {1, 2, 3, 4, 5, 6}),
        (Pinned("prod"), {2}),
        (Pinned(("prod", "old")), {2, 4}),
        (Pinned(), {2, 4}),  # any tag
        (FailedRuns(), {2, 4, 5, 6}),
        (LatestN(1) | Pinned("prod"), {2, 6}),
        (LatestN(1) | BestK(1, "loss") | OlderThan(3), {2, 5, 6}),
        (FailedRuns() | LatestN(5), {2, 3, 4, 5, 6}),  # keep if any keeps: step 3 is among the latest 5
    ],
)
def test_policies_keep(policy, kept):
    assert policy.should_keep(SIX, now=NOW) == kept


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LatestN(0), "LatestN: n must be a number >= 1"),
        (lambda: BestK(1, ""), "BestK: the monitored metric"),
        (lambda: BestK(1, "x", "low"), "mode must be 'min' or 'max'"),
        (lambda: OlderThan(-1), "OlderThan: days"),
        (lambda: MaxBytes("lots"), "MaxBytes: size must be a byte count"),
        (lambda: Pinned(("prod", 3)), "Pinned: tags must be tag names"),
        (lambda: LatestN(1) | "prod", "cannot combine keep policy"),
        (lambda: policy_of({"keep_latest": 0}, "[x]"), "retention option keep_latest = 0 in [x]"),
        (lambda: policy_of({"keep_best": "val_loss"}, "[x]"), "K:METRIC[:min|max]"),
        (lambda: policy_of({"failed": "yes"}, "[x]"), "failed takes true"),
        (lambda: policy_of({"keep_lastest": 3}, "[x]"), "unknown retention option 'keep_lastest' in [x]"),
        (lambda: Retention.from_table({"stages": {"train": 3}}), "one table per stage"),
    ],
)
def test_bad_policies_name_the_value(make, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("|", r"\|")):
        make()


def test_the_training_policies_are_the_same_classes():
    import pipeline
    from pipeline import training

    assert training.LatestN is LatestN and pipeline.BestK is BestK and training.Record is Record
    assert pipeline.Pinned is Pinned and training.FailedRuns is FailedRuns


def test_config_table_default_and_per_stage_overrides(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pipeline]\nstore = "s"\n[tool.pipeline.retention]\nkeep_latest = 3\nfailed = true\n'
        '[tool.pipeline.retention.stages.train]\nkeep_best = "2:val_loss:min"\nmax-bytes = "1GB"\n'
    )
    r = Retention.configured(str(tmp_path))
    assert r.policy("clean") == LatestN(3) | FailedRuns()
    assert r.policy("train") == BestK(2, "val_loss", "min") | MaxBytes(1 << 30)
    (tmp_path / "pyproject.toml").write_text("[tool.pipeline.retention]\nolder_than = 'old'\n")
    with pytest.raises(ConfigError, match=r"older_than = 'old' in \[tool.pipeline.retention\] in .*pyproject.toml"):
        Retention.configured(str(tmp_path))


# -- over a real store ---------------------------------------------------------------------
def iso(age_days: float) -> str:
    return dt.datetime.fromtimestamp(time.time() - age_days * DAY, dt.UTC).isoformat()


def commit(store, stage, key, value, *, age=1.0, run="r-ok", step=None, kind="stage", metrics=None):
    outputs = store.put(value)
    extra = {"metrics": metrics} if metrics else {}
    m = Manifest(stage, key, outputs, created=iso(age), run_id=run, kind=kind, step=step, extra=extra)
    return store.commit(m)


def summary(store, run_id, status, stages=(), flow="flows:f", finished=None):
    store.runs.write_summary(run_id, {"run_id": run_id, "flow": flow, "status": status,
                                      "finished": finished or time.time(),
                                      "stages": [{"stage": s, "key": k} for s, k in stages]})  # fmt: skip


def key(n: int) -> str:
    return f"xxh3:{n:032x}"


def kept_of(store, retention_, **kw) -> set[tuple[str, str, int | None]]:
    p = plan(store, retention_, **kw)
    return {(e.manifest.stage, e.manifest.key[-2:], e.manifest.step) for e in p.entries if e.keep}


def test_plan_over_results_checkpoints_runs_and_tags(tmp_path):
    store = Store(tmp_path / "s")
    for i in range(5):  # results of `clean`, oldest first
        commit(store, "clean", key(i), np.arange(100) + i, age=10 - i, run=f"r-c{i}")
    commit(store, "train", key(10), np.zeros(3), run="r-ok")
    for step in (1, 2, 3):  # a finished training: result committed
        commit(store, "train", key(10), np.full(10, step), step=step, metrics={"loss": 1 / step}, run="r-ok")
    for step in (1, 2):  # a training in flight: no result, its run has no final record
        commit(store, "train", key(11), np.full(20, step), step=step, run="r-live")
    for step in (1, 2):  # a training whose run failed: no result
        commit(store, "train", key(12), np.full(30, step), step=step, run="r-bad")
    commit(store, "tune.best", key(20), {"value": 1.0}, kind="best", age=99)
    commit(store, "split", key(30), [1, 2], run="r-plain")  # written by a flow's latest successful run
    summary(store, "r-plain", "completed", [], flow="flows:plain")  # (a plain-function flow records no stages)
    summary(store, "r-old", "completed", [("clean", key(0))], finished=1.0)
    summary(store, "r-ok", "completed", [("clean", key(1)), ("train", key(10))])
    summary(store, "r-bad", "failed", [])
    store.tags.add("prod", "clean", key(2))

    assert kept_of(store, Retention()) == kept_of(store, Retention(KeepAll()))  # no policy: everything
    assert len(kept_of(store, Retention())) == 15

    nothing = Retention(OlderThan(0))  # keeps nothing by itself: what stays is the never-delete list
    assert kept_of(store, nothing) == {
        ("clean", "01", None),  # used by the latest successful run of flows:f (r-old's key 0 is not)
        ("clean", "02", None),  # pinned
        ("train", "0a", None),  # used by the latest successful run
        ("train", "0b", 2),  # the checkpoint a live run resumes from
        ("tune.best", "14", None),  # the best so far of a search
        ("split", "1e", None),  # written by the latest successful run of flows:plain
    }
    rows = {(r.stage, r.what): (r.kept, r.dropped) for r in plan(store, nothing).by_stage()}
    assert rows == {("clean", "results"): (2, 3), ("train", "results"): (1, 0), ("train", "checkpoints"): (1, 6),
                    ("tune.best", "best"): (1, 0), ("split", "results"): (1, 0)}  # fmt: skip
    assert kept_of(store, Retention(LatestN(1))) == {
        ("clean", "01", None), ("clean", "02", None), ("clean", "04", None), ("train", "0a", None),
        ("train", "0a", 3), ("train", "0b", 2), ("train", "0c", 2), ("tune.best", "14", None), ("split", "1e", None),
    }  # fmt: skip
    assert kept_of(store, Retention(FailedRuns())) == kept_of(store, Retention()) - {("train", "0c", 1),
                                                                                      ("train", "0c", 2)}  # fmt: skip
    per_stage = Retention(KeepAll(), (("train", BestK(1, "loss")),))
    assert {k for k in kept_of(store, per_stage) if k[0] == "train"} == {
        ("train", "0a", None),
        ("train", "0a", 3),
        ("train", "0b", 2),
    }  # fmt: skip  (BestK over each key's checkpoints; 0b and 0c report no loss: only 0b's live one stays)


@pytest.mark.parametrize("where", ["local", "memory", pytest.param("s3", marks=pytest.mark.slow)])
def test_gc_drops_then_frees_only_what_no_survivor_references(tmp_path, where, request):
    import uuid

    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        store = Store(s3.new_url(), **s3.storage_options)
    else:
        store = Store(tmp_path / "s" if where == "local" else f"memory://retention-{uuid.uuid4().hex}")
    shared = np.arange(1000)
    for i in range(4):
        commit(store, "clean", key(i), (np.arange(50) + i) if i % 2 else shared, age=4 - i)
    dry = retention.gc(store, Retention(LatestN(1)), dry_run=True)
    assert (dry.dropped_manifests, dry.deleted_objects) == (3, 2)  # keys 0 and 2 share one object
    assert len(list(store.manifests())) == 4  # a dry run frees nothing
    (row,) = dry.plan.by_stage()
    assert (row.stage, row.what, row.kept, row.dropped, row.freed_bytes) == ("clean", "results", 1, 3,
                                                                             dry.deleted_bytes)  # fmt: skip
    done = retention.gc(store, Retention(LatestN(1)))
    assert (done.dropped_manifests, done.deleted_objects, done.deleted_bytes) == (3, 2, dry.deleted_bytes)
    (m,) = store.manifests()
    assert m.key == key(3) and store.load(m.outputs)[0] == 3
    store.tags.add("prod", "clean", key(3))
    assert retention.gc(store, Retention(OlderThan(0))).dropped_manifests == 0  # pinned
    assert store.tags.remove("prod", "clean", key(3)) and not store.tags.all()
    assert retention.gc(store, Retention(OlderThan(0))).dropped_manifests == 1


def test_gc_keeps_an_object_a_dropped_entry_shares_with_a_kept_one(tmp_path):
    store = Store(tmp_path / "s")
    shared = np.arange(5000)
    commit(store, "a", key(1), shared, age=3)
    commit(store, "a", key(2), np.zeros(10), age=2)
    commit(store, "b", key(3), shared, age=1)  # another stage, the same bytes: one object
    report = retention.gc(store, Retention(LatestN(1)), grace_seconds=0)
    assert report.dropped_manifests == 1 and report.deleted_objects == 0
    np.testing.assert_array_equal(store.load(store.manifest("b", key(3)).outputs), shared)


def test_an_unreadable_tag_stops_gc(tmp_path):
    from pipeline import StoreError

    store = Store(tmp_path / "s")
    commit(store, "a", key(1), 1)
    store.tags.add("prod", "a", key(1))
    (tag_file,) = (tmp_path / "s" / "tags").rglob("*.json")
    tag_file.write_text("{torn")
    with pytest.raises(StoreError, match="tag file .* is unreadable"):
        retention.gc(store, Retention(OlderThan(0)))
    assert store.manifest("a", key(1)) is not None
