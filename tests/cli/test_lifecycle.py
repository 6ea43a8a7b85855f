"""gc with retention flags (dry-run table, then for real), tag/untag, tags in diff/show/history."""

from __future__ import annotations

import re

import numpy as np

from pipeline import StageCache, Store
from pipeline.cli import app


def invoke(*args: str):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, list(args), terminal_width=250)


def filled(path, n=4) -> tuple[Store, list[str]]:
    store = Store(path)

    def clean(i):
        return np.arange(2000) * i, {"acc": i / 10}

    stage = StageCache(store).wrap(clean)
    keys = [stage.call(i).manifest.key for i in range(n)]  # oldest first
    return store, keys


def test_dry_run_table_then_gc_then_tags(tmp_path):
    path = str(tmp_path / "s")
    store, keys = filled(tmp_path / "s")
    tagged = invoke("tag", keys[0][5:14], "prod", "--store", path)
    assert tagged.exit_code == 0 and f"tagged clean {keys[0]} 'prod'" in tagged.output

    dry = invoke("gc", "--dry-run", "--keep-latest", "1", "--store", path)
    assert dry.exit_code == 0, dry.output
    row = next(line for line in dry.output.splitlines() if line.startswith("│ clean"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:4] == ["clean", "results", "2", "2"] and cells[4].endswith("KB"), cells
    assert "1 pinned (prod)" in cells[5] and "2 not kept by LatestN(1)" in cells[5]
    assert "would drop 2 manifests" in dry.output
    assert len(list(store.manifests())) == 4  # nothing freed

    done = invoke("gc", "--keep-latest", "1", "--store", path)
    assert done.exit_code == 0 and "dropped 2 manifests; deleted 4 unreferenced objects" in done.output, done.output
    assert {m.key for m in store.manifests()} == {keys[0], keys[3]}

    shown = invoke("show", keys[0][5:14], "--store", path)
    assert re.search(r"tags\s*│\s*prod", shown.output), shown.output
    history = invoke("history", "clean", "--store", path)
    assert "prod" in next(line for line in history.output.splitlines() if keys[0][5:17] in line)
    compared = invoke("diff", "prod", keys[3][5:14], "--store", path, "--json")
    assert compared.exit_code == 0 and f"prod = clean {keys[0]}" in compared.output, compared.output

    assert invoke("untag", keys[0][5:14], "prod", "--store", path).exit_code == 0
    again = invoke("untag", keys[0][5:14], "prod", "--store", path)
    assert again.exit_code == 1 and "has no tag 'prod' (its tags: none)" in again.output
    invoke("gc", "--keep-latest", "1", "--store", path)
    assert {m.key for m in store.manifests()} == {keys[3]}  # unpinned: retention may drop it now


def test_keep_best_and_bad_flags(tmp_path):
    path = str(tmp_path / "s")
    store, keys = filled(tmp_path / "s")
    done = invoke("gc", "--keep-best", "1:acc:min", "--grace", "0", "--store", path)
    assert done.exit_code == 0, done.output
    assert [m.key for m in store.manifests()] == [keys[0]]
    bad = invoke("gc", "--keep-best", "acc", "--store", path)
    assert bad.exit_code == 1 and "keep-best takes K:METRIC[:min|max]" in bad.output
    unknown = invoke("tag", "ffff", "prod", "--store", path)
    assert unknown.exit_code == 1 and "no result with key 'ffff'" in unknown.output


def test_configured_retention_is_used_without_flags(tmp_path, monkeypatch):
    store, keys = filled(tmp_path / "s")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pipeline]\nstore = "s"\n[tool.pipeline.retention]\nkeep_latest = 3\n'
        "[tool.pipeline.retention.stages.clean]\nkeep_latest = 2\n"
    )
    monkeypatch.chdir(tmp_path)
    done = invoke("gc")
    assert done.exit_code == 0 and "dropped 2 manifests" in done.output, done.output
    assert {m.key for m in store.manifests()} == set(keys[2:])


FLAKY = """
from pipeline import stage


@stage
def half(x: int) -> float:
    return x / 2


def good() -> float:
    return half(2)


def bad() -> float:
    half(7)
    raise RuntimeError("boom")
"""


def test_failed_runs_drops_what_only_a_failed_run_wrote(tmp_path, monkeypatch):
    import pytest

    from pipeline.integrations.runner import run_flow
    from pipeline.store.keep import FailedRuns
    from pipeline.store.lifecycle import Retention
    from pipeline.store.retention import gc

    (tmp_path / "flaky_flow.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    store = Store(tmp_path / "s")
    run_flow("flaky_flow:good", None, store)
    with pytest.raises(RuntimeError, match="boom"):
        run_flow("flaky_flow:bad", None, store)
    assert sorted(doc["status"] for doc in store.runs.summaries()) == ["completed", "failed"]
    report = gc(store, Retention(FailedRuns()), grace_seconds=0)
    assert report.dropped_manifests == 1
    (kept,) = store.manifests("half")
    assert kept.params["x"]["repr"] == "2"


def test_gc_removes_old_drop_records_only_with_the_mirrors_that_applied_them(tmp_path, monkeypatch):
    import json
    import os
    import time

    from pipeline.store import drops

    path, mirror = str(tmp_path / "s"), str(tmp_path / "m")
    monkeypatch.setenv("PIPELINE_MIRRORS", mirror)
    filled(tmp_path / "s")
    primary = Store(path, mirrors=[mirror])

    def small(i):
        return {"i": i}

    for i in range(3):  # committed to both (the store of ``filled`` has no mirrors)
        StageCache(primary).wrap(small).call(i)
    assert invoke("gc", "--keep-latest", "1", "--store", path).exit_code == 0
    week_ago = time.time() - 8 * 86400
    for where in (path, mirror):  # as if that gc ran a week ago
        for _, rel in drops.records(Store(where)._backend):
            f = os.path.join(where, rel)
            doc = json.loads(open(f).read())
            open(f, "w").write(json.dumps({**doc, "time": week_ago}))
            os.utime(f, (week_ago, week_ago))
    monkeypatch.delenv("PIPELINE_MIRRORS")
    alone = invoke("gc", "--store", path)  # the mirror not configured: it might still hold them
    assert alone.exit_code == 0 and "kept 5 old drop records" in alone.output, alone.output
    monkeypatch.setenv("PIPELINE_MIRRORS", mirror)
    done = invoke("gc", "--store", path)
    assert done.exit_code == 0 and "drop record" not in done.output, done.output
    assert not list(drops.records(Store(path)._backend)) and not list(drops.records(Store(mirror)._backend))
