"""Resumable search on real Optuna, real processes killed with SIGKILL, a real store."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from pipeline import ConfigError, Store
from pipeline.training import Background, EarlyStopping, EveryNEpochs, LatestN, Light, Sync, TrainState
from pipeline.tuning import Best, Search, SearchResult, TrialCheckpointing, TrialRecord, load_best, trial_facts, tune
from tests.tuning import search

ROOT = Path(__file__).resolve().parent.parent
N = 12


def run_search(store: Path, log: Path, *, sleep: float = 0.0, n: int = N, kill_after_epochs: int | None = None):
    """Run the search script; with ``kill_after_epochs``, SIGKILL it once it has logged that
    many more trained epochs (so the kill lands inside a trial, at a random epoch)."""
    env = dict(os.environ, TUNE_LOG=str(log), EPOCH_SLEEP=str(sleep), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.tuning.search", str(store), str(n)]
    before = sum(e[0] == "epoch" for e in events(log))
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_epochs is None:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return out
    deadline = time.monotonic() + 300
    while sum(e[0] == "epoch" for e in events(log)) - before < kill_after_epochs:
        assert proc.poll() is None, "the search ended before the planned kill"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return None


def events(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def best_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("BEST"))


def committed_labels(store: Path) -> set[str]:
    """Labels (as the training log writes them) of trials whose stage has committed."""
    out = set()
    s = Store(store)
    for m in s.manifests("search.trial"):
        p = trial_facts(s, m).params
        out.add(f"{p['alpha']:.6g}/{p['eta0']:.6g}/{p['batches']}")
    return out


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_best_without_retraining(tmp_path):
    reference = run_search(tmp_path / "ref", tmp_path / "ref.log")

    store, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = random.Random(5)
    committed_before: list[tuple[int, set[str]]] = []  # (log lines so far, trials committed)
    for _ in range(4):  # kill at random moments, sometimes inside a trial
        run_search(store, log, sleep=0.01, kill_after_epochs=rng.randint(3, 14))
        committed_before.append((len(events(log)), committed_labels(store) if store.exists() else set()))
        best = load_best(store, "search")  # best-so-far is loadable after any kill
        if best is not None:
            assert best.model.predict(search.data()[2]).shape == (200,)
    final = run_search(store, log)

    assert best_line(final) == best_line(reference)
    assert len(list(Store(store).manifests("search.trial"))) == N  # exactly N trials in total
    lines = events(log)
    for offset, committed in committed_before:  # a committed trial never trains again
        assert not [e for e in lines[offset:] if e[0] == "start" and e[1] in committed]
    starts = [e for e in lines if e[0] == "start"]
    resumed = [e for e in starts if int(e[2]) > 0]
    assert resumed, "no trial was interrupted mid-training; the kills missed every epoch"
    assert all(len([s for s in starts if s[1] == r[1]]) >= 2 for r in resumed)


@pytest.mark.slow
def test_fully_cached_rerun_trains_nothing(tmp_path):
    store, log = tmp_path / "s", tmp_path / "l.log"
    first = run_search(store, log, n=4)
    log.unlink()
    again = run_search(store, log, n=4)
    assert best_line(again) == best_line(first)
    assert not log.exists()
    assert "SOURCES cached cached cached cached" in again


def test_budget_is_global_across_calls(tmp_path):
    store = Store(tmp_path / "s")
    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    kwargs = dict(sampler="random", seed=2, store=store, name="g", checkpointing=search.CHECKPOINTING)
    small = tune(search.train, search.SPACE, n_trials=3, **kwargs)
    big = tune(search.train, search.SPACE, n_trials=5, **kwargs)
    assert [t.source for t in big.trials] == ["cached"] * 3 + ["done"] * 2
    assert [t.params for t in big.trials[:3]] == [t.params for t in small.trials]


def test_changed_space_reuses_trials_still_inside_it(tmp_path):
    store = Store(tmp_path / "s")
    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    space = {"alpha": CategoricalDistribution([1e-4, 1e-3, 1e-2]), "eta0": [0.01], "batches": [2]}
    tune(search.train, space, n_trials=3, sampler="grid", store=store, name="c", checkpointing=search.CHECKPOINTING)
    wider = {**space, "alpha": CategoricalDistribution([1e-4, 1e-3, 1e-2, 1e-1])}
    result = tune(search.train, wider, n_trials=4, sampler="grid", store=store, name="c",
                  checkpointing=search.CHECKPOINTING)  # fmt: skip
    assert sorted(t.source for t in result.trials) == ["cached", "cached", "cached", "done"]


@pytest.mark.parametrize("parallel", [1, 2])  # 2 without map_fn: asked in pairs, run (and pruned) one by one
def test_pruned_trials_are_recorded_with_their_reason(tmp_path, parallel):
    import optuna

    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    result = tune(search.train, search.SPACE, n_trials=8, sampler="random", seed=4, store=Store(tmp_path / "s"),
                  name="p", checkpointing=search.CHECKPOINTING, parallel=parallel,
                  pruner=optuna.pruners.ThresholdPruner(upper=0.45))  # fmt: skip
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(t.reason.startswith("pruned at epoch") for t in pruned)
    assert all(t.value is None for t in pruned) and result.best_value <= 0.45


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_parallel_grid_equals_sequential(tmp_path, runner):
    from prefect import flow
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from pipeline.integrations.prefect import prefect_map

    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    space = {"alpha": [1e-4, 1e-3, 1e-2], "eta0": [0.01, 0.05], "batches": [1]}

    def run(store, parallel):
        return tune(search.train, space, n_trials=6, sampler="grid", seed=0, store=store, name="par",
                    parallel=parallel, map_fn=prefect_map(), checkpointing=search.CHECKPOINTING)  # fmt: skip

    sequential = run(Store(tmp_path / "a"), 1)

    pool = ThreadPoolTaskRunner(max_workers=3) if runner == "threads" else ProcessPoolTaskRunner(max_workers=2)

    @flow(task_runner=pool)
    def parallel_search():
        return run(Store(tmp_path / "b"), 3)

    parallel = parallel_search()
    assert parallel.best_params == sequential.best_params and parallel.best_value == sequential.best_value
    assert sorted(t.value for t in parallel.trials) == sorted(t.value for t in sequential.trials)
    starts = [e for e in events(tmp_path / "l.log") if e[0] == "start"]
    assert len(starts) == 12 and {e[2] for e in starts} == {"0"}  # each trial trained once, from scratch, per search


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": {}}, "search space is empty"),
        ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"direction": "down"}, "direction must be"),
        ({"space": {"alpha": FloatDistribution(0.1, 1.0)}, "sampler": "grid"}, "grid search needs a list"),
        ({"space": {"alpha": 0.1}}, "neither an optuna distribution nor a list"),
        ({"train_fn": lambda params: 1.0}, "must take \\(params, checkpointer\\)"),
        ({"train_fn": "train"}, "must be callable"),
        ({"checkpoint": {"save": None}}, r"tune\(checkpoint=...\) is gone.*checkpointing=TrialCheckpointing"),
        ({"checkpointing": {"keep": None}}, r"checkpointing= takes a TrialCheckpointing"),
        ({"early_stopping": 5}, r"early_stopping= takes an EarlyStopping\(...\), not 5"),
        ({"samplr": "tpe"}, r"unexpected argument\(s\) \['samplr'\] \(its options: catch, checkpointing"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message, tmp_path):
    args = {"space": search.SPACE, "n_trials": 2, "sampler": "tpe", "direction": "minimize", **kwargs}
    train_fn = args.pop("train_fn", search.train)
    with pytest.raises(ConfigError, match=message):
        tune(train_fn, args.pop("space"), store=Store(tmp_path / "s"), **args)


def test_best_model_is_the_best_trials_model(tmp_path):
    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    store = Store(tmp_path / "s")
    result = tune(search.train, search.SPACE, n_trials=3, sampler="random", seed=1, store=store, name="b",
                  checkpointing=search.CHECKPOINTING)  # fmt: skip
    best = load_best(store, "b")
    assert best.params == result.best_params and best.value == result.best_value
    x, y, xv, yv = search.data()
    np.testing.assert_array_equal(best.model.predict(xv), result.best_model.predict(xv))


def test_changed_continuous_space_seeds_the_study_with_trials_inside_it(tmp_path):
    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    store = Store(tmp_path / "s")
    first = tune(search.train, search.SPACE, n_trials=4, sampler="tpe", seed=3, store=store, name="w",
                 checkpointing=search.CHECKPOINTING)  # fmt: skip
    narrower = {**search.SPACE, "alpha": FloatDistribution(1e-5, 1e-1, log=True), "batches": [1, 2, 3, 4]}
    inside = [t for t in first.trials if t.params["batches"] in (1, 2, 3, 4)]
    result = tune(search.train, narrower, n_trials=6, sampler="tpe", seed=3, store=store, name="w",
                  checkpointing=search.CHECKPOINTING)  # fmt: skip
    assert [t.source for t in result.trials[: len(inside)]] == ["cached"] * len(inside)
    assert len(result.trials) == 6
    assert result.best_value <= min(t.value for t in inside)


def _leaves(tree):
    from pipeline.store.tree import leaves

    return (leaf.object for leaf in leaves(tree))


def _fitted(x: int):
    from sklearn.linear_model import SGDClassifier

    xt, yt, _, _ = search.data()
    return SGDClassifier(alpha=10.0 ** -(x + 1), random_state=0).fit(xt, yt)


@pytest.mark.parametrize("model", ["sgd", "json", "none"])
def test_best_record_reuses_the_trials_objects(tmp_path, model):
    """The best-so-far record is one manifest over the best trial's committed objects: the
    model is neither pickled nor written twice, whatever the training function returns."""
    from optuna.distributions import IntDistribution

    def train(params, ckpt):
        value = (params["x"] - 3) ** 2
        if model == "none":
            return value
        return value, ({"x": params["x"], "coef": [0.5, 1.5]} if model == "json" else _fitted(params["x"]))

    store = Store(tmp_path / "s")
    result = tune(train, {"x": IntDistribution(0, 6)}, n_trials=5, sampler="random", seed=2, store=store, name="q")
    best_manifest = store.latest("q.best")
    trial_objects = {o for m in store.manifests("q.trial") for o in _leaves(m.outputs)}
    assert set(_leaves(best_manifest.outputs)) <= trial_objects
    best = load_best(store, "q")
    assert best.params == result.best_params and best.value == result.best_value
    if model == "none":
        assert best.model is None and result.best_model is None
    elif model == "json":
        assert best.model == {"x": result.best_params["x"], "coef": [0.5, 1.5]} == result.best_model
    else:
        np.testing.assert_array_equal(best.model.coef_, result.best_model.coef_)


def test_a_pruner_with_parallel_trials_warns_that_they_run_unpruned(tmp_path):
    import optuna

    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    with pytest.warns(UserWarning, match="runs 2 trials at once through map_fn.*unpruned"):
        result = tune(search.train, search.SPACE, n_trials=2, sampler="random", seed=0, store=Store(tmp_path / "s"),
                      pruner=optuna.pruners.MedianPruner(), parallel=2, checkpointing=search.CHECKPOINTING,
                      map_fn=lambda fn, calls: [fn(*c) for c in calls])  # fmt: skip
    assert [t.state for t in result.trials] == ["complete", "complete"]


def test_checkpoint_frequency_is_not_part_of_a_trials_key_but_early_stopping_is(tmp_path):
    from pipeline.training import KeepAll, Partial

    log = tmp_path / "l.log"
    os.environ["TUNE_LOG"] = str(log)
    store = Store(tmp_path / "s")

    def run(checkpointing, **options):
        return tune(search.train, search.SPACE, n_trials=3, sampler="tpe", seed=5, store=store, name="k",
                    checkpointing=checkpointing, **options)  # fmt: skip

    first = run(search.CHECKPOINTING)
    log.unlink()
    other = run(TrialCheckpointing(save=EveryNEpochs(3), keep=KeepAll(), writer=Background(), content=Partial("model")))
    assert [t.source for t in other.trials] == ["cached"] * 3 and not log.exists()
    assert other.best_value == first.best_value
    stopping = run(search.CHECKPOINTING, early_stopping=EarlyStopping("val_loss", patience=1, restore_best=True))
    assert [t.source for t in stopping.trials] == ["done"] * 3
    assert load_best(store, "k").value == stopping.best_value  # its own best record, not the other's


def test_show_lists_the_newest_search_in_trial_order_with_its_best(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    store = Store(tmp_path / "s")
    tune(search.train, search.SPACE, n_trials=3, sampler="random", seed=1, store=store, name="sh",
         checkpointing=search.CHECKPOINTING)  # fmt: skip
    second = tune(search.train, search.SPACE, n_trials=4, sampler="tpe", seed=2, store=store, name="sh",
                  checkpointing=search.CHECKPOINTING)  # fmt: skip
    shown = CliRunner().invoke(app, ["show", "sh", "--store", str(tmp_path / "s")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "search sh: 4 of 4 trials (tpe, seed 2, minimize)" in shown.output
    assert f"value {second.best_value!r}" in shown.output
    numbers = [line.split("│")[2].strip() for line in shown.output.splitlines() if line.startswith("│ sh")]
    assert numbers == ["0", "1", "2", "3"]
    assert "(the most recently updated search; no run record names one)" in shown.output  # no run: no stage ran it

    shutil.rmtree(tmp_path / "s" / "searches")  # a store written before search indexes: every trial result
    shown = CliRunner().invoke(app, ["show", "sh", "--store", str(tmp_path / "s")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    held = len(list(store.manifests("sh.trial")))  # the second search reused the first one's trials
    assert f"trials of search sh ({held} in the store)" in shown.output
    assert "(the newest best-so-far record)" in shown.output
    assert f"value {second.best_value!r}" in shown.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrialCheckpointing(save=LatestN(1)), r"save=\) takes a save policy"),
        (lambda: TrialCheckpointing(keep=EveryNEpochs(1)), r"keep=\) takes a keep policy"),
        (lambda: TrialCheckpointing(content="full"), r"content= takes Full\(\)"),
        (lambda: TrialCheckpointing(writer="async"), r"writer= takes Sync\(\)"),
        (lambda: TrialCheckpointing(durable="yes"), r"durable=\) takes True or False"),
        (
            lambda: Search(
                "s",
                search.SPACE,
                search.train,
                2,
                early_stopping=EarlyStopping(restore_best=True),
                checkpointing=TrialCheckpointing(content=Light()),
            ),  # fmt: skip
            "needs model state",
        ),
        (lambda: Search("", search.SPACE, search.train, 2), "needs a name"),
        (lambda: Search("s", search.SPACE, search.train, 2).run(parallel=0), "parallel must be >= 1"),
    ],
)
def test_bad_search_policies_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_search_is_a_frozen_value_with_typed_results(tmp_path):
    os.environ["TUNE_LOG"] = str(tmp_path / "l.log")
    store = Store(tmp_path / "s")
    found = Search("t", search.SPACE, search.train, 3, sampler="random", seed=1, checkpointing=search.CHECKPOINTING)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.n_trials = 4  # type: ignore[misc]
    result = found.run(store)
    assert isinstance(result, SearchResult) and result.key == found.key and result.name == "t"
    assert all(isinstance(t, TrialRecord) for t in result.trials) and len(result.trials) == 3
    assert isinstance(result.best, Best) and result.best.value == min(t.value for t in result.trials)
    assert result.best_params == result.best.params and result.best_model is result.best.model
    # the budget, pruner and checkpointing are not part of the search's key; what it searches is
    same = dataclasses.replace(found, n_trials=5, checkpointing=TrialCheckpointing(writer=Background()))
    assert same.key == found.key and dataclasses.replace(found, seed=2).key != found.key
    again = same.run(store)
    assert [t.source for t in again.trials] == ["cached"] * 3 + ["done"] * 2
    assert (tmp_path / "s" / "checkpoints").is_dir()  # trials did checkpoint their epochs…
    assert not list((tmp_path / "s" / "checkpoints").rglob("*.json"))  # …and each committed trial dropped them


def test_a_trials_checkpoint_after_its_last_epoch_is_skipped(tmp_path):
    """SkipFinal: a trial killed after its last epoch resumes from the epoch before, never from
    a checkpoint its own result supersedes."""
    from pipeline.training import Checkpointer, KeepAll

    ckpt = Checkpointer(store=Store(tmp_path / "s"), name="trial", **TrialCheckpointing(keep=KeepAll(),
                        writer=Sync()).options(None))  # fmt: skip
    state = ckpt.restore(TrainState(w=np.zeros(1)))
    for epoch in ckpt.epochs(state, 3):
        ckpt.step(epoch, state, {"val_loss": 1.0 / (epoch + 1)})
    ckpt.finish(state)
    assert ckpt.steps() == [1, 2]


def _quadratic(params, ckpt):
    return float((params["x"] - 2) ** 2)


def _searching(root: str, seed: int) -> float:
    from optuna.distributions import IntDistribution

    return Search("w", {"x": IntDistribution(0, 4)}, _quadratic, 2, sampler="random", seed=seed).run(root).best.value


def test_which_search_follows_the_latest_run_also_when_it_served_the_search_from_the_store(tmp_path):
    """Runs r1 (seed 1), r2 (seed 2), r3 (seed 1 again: its stage is served, no trial runs):
    the search in question is r3's, the seed-1 one, not the newest computed."""
    from optuna.distributions import IntDistribution

    from pipeline import StageCache
    from pipeline.runs import record, summarise
    from pipeline.tuning import which_search

    root = str(tmp_path / "s")
    store = Store(root)

    def run(run_id: str, seed: int):
        outcome = StageCache(store, run_id=run_id).wrap(_searching, name="searching").call(root, seed)
        record(store, run_id, outcome)
        summarise(store, run_id, "completed", 0.0)
        return outcome

    run("r1", 1)
    run("r2", 2)
    assert which_search(store, "w").run_id == "r2"
    assert run("r3", 1).hit
    ref = which_search(store, "w")
    assert ref.why == "used by the latest run r3" and ref.run_id == "r3"
    assert ref.key == Search("w", {"x": IntDistribution(0, 4)}, _quadratic, 2, sampler="random", seed=1).key
    assert load_best(store, "w").search == ref
