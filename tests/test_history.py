"""runs / show RUN / history STAGE / diff A B / show KEY --curves on a store made by real runs
of the bundled flow, including a changed param and a changed helper."""

from __future__ import annotations

import json

import pytest

from pipeline import PipelineError
from pipeline.diff import diff, resolve
from pipeline.history import find_run, runs, versions
from pipeline.tracking import training_record
from pipeline.units import size

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, prefect_api):
    from tests.bundled_runs import bundled_runs

    return bundled_runs(tmp_path_factory)


def summary(bundled, run_id):
    return json.loads((bundled.project / "store" / "runs" / f"{run_id}.json").read_text())


def cli(bundled, *args):
    from tests.bundled_runs import cli as run_cli

    return run_cli(bundled.project, *args, "--store", str(bundled.project / "store"))


def stage_key(bundled, run_id, stage):
    return next(e["key"] for e in summary(bundled, run_id)["stages"] if e["stage"] == stage)


def test_runs_newest_first_with_hits_and_time_saved(bundled):
    records = runs(bundled.store)
    assert [r.run_id for r in records] == bundled.ids[::-1]
    for r in records:
        s = summary(bundled, r.run_id)
        assert (r.status, r.hits, r.misses) == (s["status"], s["hits"], s["misses"])
        assert r.seconds_saved == s["seconds_saved"]
    assert records[2].misses == 0 and records[2].hits == 9  # the warm run
    done = cli(bundled, "runs")
    assert done.returncode == 0, done.stderr
    lines = [[c.strip() for c in line.strip("│").split("│")] for line in done.stdout.splitlines() if "complete" in line]
    assert [cells[0] for cells in lines] == bundled.ids[::-1]
    assert {cells[1] for cells in lines} == {"flows.ml_pipeline:ml_pipeline"} == {r.flow for r in records}
    warm = next(cells for cells in lines if cells[0] == bundled.warm)
    assert warm[4:8] == ["9", "9", "0", f"{summary(bundled, bundled.warm)['seconds_saved']:.2f}"]


def test_show_run_lists_its_stages_keys_and_params(bundled):
    done = cli(bundled, "show", bundled.changed_param[:8])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"run {bundled.changed_param} (completed" in out
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("│").split("│")]
                                          for line in out.splitlines() if line.startswith("│ "))}  # fmt: skip
    train = rows["train"]
    assert train[1] == stage_key(bundled, bundled.changed_param, "train")[5:17] and train[2] == "miss"
    assert "seed=8" in train[5] and rows["clean"][2] == "hit" and rows["clean"][5] == "clip_z=4.0"
    s = summary(bundled, bundled.changed_param)
    assert f"{s['hits']} cached, {s['misses']} computed" in out
    (ran_with,) = [line for line in out.splitlines() if line.startswith("flow flows.ml_pipeline:ml_pipeline ran with:")]
    assert "train.seed=8" in ran_with and "tune.n_trials=4" in ran_with and "train.epochs=40" in ran_with
    assert find_run(bundled.store, bundled.changed_param[:8]).run_id == bundled.changed_param


def test_history_says_what_changed_param_and_helper(bundled):
    clean = versions(bundled.store, "clean")
    assert len(clean) == 2 and clean[1].base is None
    assert clean[0].changes == ("code of flows.preprocess.clip_outliers changed",)
    train = versions(bundled.store, "train")
    assert len(train) == 3
    assert train[1].changes == ("param seed: 7 -> 8",) and train[1].base == 3
    assert any(c.startswith("input train_df: content changed") for c in train[0].changes)
    done = cli(bundled, "history", "clean")
    assert done.returncode == 0, done.stderr
    assert "clean@1" in done.stdout and "code of flows.preprocess.clip_outliers changed" in done.stdout
    assert "first version" in done.stdout


def test_diff_two_versions_changed_lines_first_and_json(bundled):
    d = diff(bundled.store, "train@2", "train@3")
    changed = {(r.section, r.name): (r.a, r.b) for r in d.changed}
    assert changed[("param", "seed")] == ("8", "7")
    assert ("stage", "key") in changed and all(r.changed for r in d.ordered()[: len(d.changed)])
    assert any(section == "metric" for section, _ in changed)  # a different seed: other losses
    assert not any(section in ("code", "input", "version") for section, _ in changed)
    done = cli(bundled, "diff", "train@2", "train@3", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["changed"] == len(d.changed) and [r["changed"] for r in doc["rows"]] == sorted(
        [r["changed"] for r in doc["rows"]], reverse=True
    )
    by_name = {(r["section"], r["name"]): r for r in doc["rows"]}
    a_key, b_key = resolve(bundled.store, "train@2").key, resolve(bundled.store, "train@3").key
    assert by_name[("stage", "key")]["a"] == a_key and by_name[("stage", "key")]["b"] == b_key
    assert by_name[("param", "seed")] == {"section": "param", "name": "seed", "a": "8", "b": "7", "changed": True}
    assert by_name[("version", "python")]["changed"] is False


def test_diff_of_a_changed_helper_names_the_function(bundled):
    d = diff(bundled.store, "clean@1", "clean@2")
    assert [(r.section, r.name) for r in d.changed if r.section == "code"] == [
        ("code", "flows.preprocess.clip_outliers")
    ]
    assert not [r for r in d.changed if r.section in ("param", "input")]
    done = cli(bundled, "diff", "clean@1", "clean@2")
    assert done.returncode == 0 and "flows.preprocess.clip_outliers" in done.stdout
    assert f"{len(d.changed)} of {len(d.rows)} rows differ" in done.stdout


def test_diff_of_runs_pairs_their_stages(bundled):
    same = diff(bundled.store, bundled.cold, bundled.warm)
    assert same.changed == []  # every key equal: hits and timings are not changes
    d = diff(bundled.store, bundled.warm, bundled.changed_param)
    assert [(r.section, r.name, r.a, r.b) for r in d.changed if r.section == "param" and "." in r.name] == [
        ("param", "train.seed", "7", "8")
    ]  # the runs' own parameters first: what the user changed
    changed = [(r.section, r.name) for r in d.changed]
    assert ("stage", "train") in changed and ("param", "train: seed") in changed
    assert ("stage", "clean") not in changed and ("stage", "search") not in changed
    assert ("stage", "evaluate") in changed and ("stage", "package_model") in changed  # downstream of train


def test_show_key_curves_is_the_per_epoch_table(bundled):
    key = stage_key(bundled, bundled.cold, "train")
    done = cli(bundled, "show", key[5:15], "--curves")
    assert done.returncode == 0, done.stderr
    checkpoint = sorted((bundled.project / "store" / "checkpoints" / "train" / key[5:]).glob("*.json"),
                        key=lambda p: int(p.stem))[-1]  # fmt: skip
    history = json.loads(checkpoint.read_text())["extra"]["history"]
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == len(history)
    for row, h in zip(rows, history):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert int(cells[0]) == h["epoch"] and float(cells[3]) == pytest.approx(h["val_loss"], rel=1e-4)


def facts(stdout: str) -> dict[tuple[str, str], str]:
    """``show KEY``'s table as (section, name) -> value (a section is named on its first row)."""
    out, section = {}, ""
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            section = cells[0] or section
            out[section, cells[1]] = cells[2]
    return out


def test_show_key_prints_metrics_and_training_metadata_readably(bundled):
    package = stage_key(bundled, bundled.changed_param, "package_model")
    done = cli(bundled, "show", package[5:15])
    assert done.returncode == 0, done.stderr
    rows = facts(done.stdout)
    metadata = bundled.store.load(bundled.store.manifest("package_model", package).outputs["metadata"])
    assert rows["value", "metadata.config.train.seed"] == "8" == str(metadata["config"]["train"]["seed"])
    accuracy = float(rows["metric", "metadata.metrics.test.accuracy"])
    assert accuracy == pytest.approx(metadata["metrics"]["test"]["accuracy"], rel=1e-5)
    assert rows["value", "metadata.versions.numpy"] == metadata["versions"]["numpy"]
    assert rows["result", "key"] == package and '"seal"' not in done.stdout  # readable, not the manifest's JSON

    train = stage_key(bundled, bundled.changed_param, "train")
    shown = cli(bundled, "show", f"{train[5:15]}")
    rows = facts(shown.stdout)
    record = training_record(bundled.store, "train", train)
    assert rows["hyperparameter", "seed"] == "8" == rows["param", "seed"]
    assert rows["training", "epochs"] == f"{record.epochs}" + (" (stopped early)" if record.stopped else "")
    assert rows["training", "best epoch"].startswith(f"{record.best_step} (")
    assert rows["training", "checkpoints"] == ", ".join(f"{c.step} ({size(c.bytes)})" for c in record.checkpoints)
    assert float(rows["metric", "val_loss"]) == pytest.approx(record.final_metrics["val_loss"], rel=1e-5)
    same = cli(bundled, "show", "train@2")  # STAGE@N names a result too
    assert same.returncode == 0 and resolve(bundled.store, "train@2").key in same.stdout
    raw = cli(bundled, "show", train[5:15], "--json")
    assert json.loads(raw.stdout)["key"] == train


def test_errors_are_one_line(bundled):
    for args, message in [
        (["history", "nope"], "no results of stage 'nope'"),
        (["diff", "train@0", "train@1"], "STAGE@N takes N >= 1"),
        (["diff", "train@9", "train@1"], "stage 'train' has 3 result(s)"),
        (["diff", "zzzz", "train"], "no result key, STAGE@N, stage, tag or run 'zzzz'"),
        (["show", "clean", "--curves"], "has no training checkpoints"),
    ]:
        done = cli(bundled, *args)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
    with pytest.raises(PipelineError, match="ambiguous"):
        find_run(bundled.store, "")
