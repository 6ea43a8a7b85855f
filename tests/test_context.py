"""The run context: one place that says which store stages use, what is forced, and which
stage is running; use_store as a call and as a block; settings loaded once; relative store
paths against the project root; the context carried into a real worker process."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import StageCache, Store, current_store, run_context, use_store
from pipeline.cache import forcing
from pipeline.config import Settings, settings
from pipeline.context import Force, carry, current, current_stage
from pipeline.training import Checkpointer, EveryNEpochs, LatestN, Sync, TrainState

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}, "PYTHONPATH": str(ROOT), **env},
    )


# -- use_store -------------------------------------------------------------------------------
def test_use_store_as_a_plain_call_sets_the_store_for_the_rest_of_the_process(tmp_path):
    """As the README writes it: ``pipeline.use_store(url)`` with no ``with`` (it used to do
    nothing, and stages wrote to data/checkpoints under the working directory)."""
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nstore = "data/checkpoints"\n')
    done = python(
        f"""
        import pipeline
        from pipeline import stage

        @stage
        def double(x: int):
            return 2 * x

        pipeline.use_store({str(tmp_path / "chosen")!r})
        assert double(21) == 42 and double(21) == 42
        print(pipeline.current_store().url)
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "chosen")
    assert [m.stage for m in Store(tmp_path / "chosen").manifests()] == ["double"]
    assert not (tmp_path / "data").exists()


def test_use_store_as_a_context_manager_restores_the_previous_store(tmp_path):
    outer = Store(tmp_path / "outer")
    before = current_store()
    with use_store(outer) as s:
        assert s is outer and current_store() is outer
        with use_store(str(tmp_path / "inner")) as inner:
            assert current_store() is inner and inner.url == str(tmp_path / "inner")
        assert current_store() is outer
    assert current_store() is before


def test_plain_use_store_inside_a_run_wins_over_the_runs_store_and_restore_undoes_it(tmp_path):
    run_store, chosen = Store(tmp_path / "run"), Store(tmp_path / "chosen")
    before = current_store()
    with run_context(store=run_store, run_id="r1"):
        setting = use_store(chosen)
        try:
            assert current_store() is chosen and current().run_id == "r1"
            assert StageCache().store is chosen and StageCache().run_id == "r1"
        finally:
            setting.restore()
        assert current_store() is run_store
    assert current_store() is before


# -- settings --------------------------------------------------------------------------------
def test_relative_store_path_is_relative_to_the_project_root_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nstore = "ckpt"\n')
    sub = tmp_path / "notebooks" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.delenv("PIPELINE_STORE", raising=False)
    monkeypatch.chdir(sub)
    assert settings().store == str(tmp_path / "ckpt")
    monkeypatch.setenv("PIPELINE_STORE", "elsewhere/ckpt")  # the environment: the project root too
    assert settings().store == str(tmp_path / "elsewhere" / "ckpt")
    # A path typed on the command line is relative to where it is typed.
    assert Settings.load(store="here").store == str(sub / "here")
    assert Settings.load(store="s3://bucket/ckpt").store == "s3://bucket/ckpt"


def test_a_stage_run_from_a_subdirectory_writes_to_the_project_store(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nstore = "ckpt"\n')
    sub = tmp_path / "notebooks"
    sub.mkdir()
    done = python(
        """
        from pipeline import stage

        @stage
        def one():
            return 1

        assert one() == 1
        """,
        cwd=sub,
    )
    assert done.returncode == 0, done.stderr
    assert [m.stage for m in Store(tmp_path / "ckpt").manifests()] == ["one"]
    assert not (sub / "ckpt").exists()


def test_settings_are_loaded_once_not_per_stage_call(tmp_path, monkeypatch):
    """Stage calls used to re-read pyproject.toml each time (a broken file failed the
    next stage); now the process's settings are loaded once per cwd and environment."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.pipeline]\nstore = "ckpt"\n')
    monkeypatch.delenv("PIPELINE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    cache = StageCache()
    square = cache.wrap(lambda x: x * x, name="square")
    assert square(3) == 9
    pyproject.write_text("[tool.pipeline\nbroken")
    assert settings() is settings()
    assert StageCache().wrap(lambda x: x * x, name="square")(4) == 16
    assert {m.stage for m in Store(tmp_path / "ckpt").manifests()} == {"square"}
    monkeypatch.setenv("PIPELINE_FSYNC", "0")  # another environment: loaded again (and still broken)
    with pytest.raises(Exception, match="cannot read"):
        settings()


# -- force -----------------------------------------------------------------------------------
class Log:
    def __init__(self) -> None:
        self.calls: list[str] = []


def test_forced_stage_forces_the_stages_its_body_calls_and_its_dependants(tmp_path):
    log = Log()
    calls = log.calls
    cache = StageCache(Store(tmp_path / "s"))

    def inner(x):
        log.calls.append("inner")
        return x + 1

    inner_stage = cache.wrap(inner, name="inner")

    def outer(x):
        log.calls.append("outer")
        return inner_stage(x) * 2

    outer_stage = cache.wrap(outer, name="outer")

    def after(y):
        log.calls.append("after")
        return y - 1

    after_stage = cache.wrap(after, name="after")
    assert after_stage(outer_stage(1)) == 3
    log.calls.clear()
    assert after_stage(outer_stage(1)) == 3 and calls == []
    with forcing(["outer"]) as force:
        assert after_stage(outer_stage(1)) == 3
        assert current().force is force
    assert calls == ["outer", "inner", "after"]
    assert current().force is None
    log.calls.clear()
    with forcing(["inner"]):  # the outer stage is a hit: nothing under it runs
        assert outer_stage(1) == 4
    assert calls == []


def _train(epochs: int, trained: list[int]) -> dict[str, int]:
    ckpt = Checkpointer(save=EveryNEpochs(1), keep=LatestN(2), writer=Sync())
    state = ckpt.restore(TrainState(w=np.zeros(2)))
    for epoch in ckpt.epochs(state, epochs):
        state.w = state.w + 1
        trained.append(epoch)
        ckpt.step(epoch, state, {"loss": 1.0 / (epoch + 1)})
    ckpt.finish(state)
    return {"w": int(state.w[0]), "resumed_from": state.resumed_from or 0}


def test_forced_stage_trains_from_scratch_and_supersedes_its_old_checkpoints(tmp_path):
    store = Store(tmp_path / "s")
    trained: list[int] = []
    train = StageCache(store).wrap(_train, name="train", ignore=["trained"])
    assert train(4, trained) == {"w": 4, "resumed_from": 0}
    key = train.key(4, trained).key
    first = store.manifest("train", key)
    # The committed checkpoints would let a recompute "resume" at epoch 4 and train nothing.
    assert Checkpointer(store=store, name="train", key=key).steps() == [3, 4]
    trained.clear()
    with forcing(["train"]):
        assert train(4, trained) == {"w": 4, "resumed_from": 0}
    assert trained == [0, 1, 2, 3]
    forced = store.manifest("train", key)
    assert forced.created > first.created  # the forced result replaced the old one, same key
    steps = Checkpointer(store=store, name="train", key=key).steps()
    assert steps == [3, 4]
    assert all(store.manifest("train", key, s).created > first.created for s in steps)


def test_checkpointer_outside_a_stage_defaults_to_the_current_store(tmp_path):
    store = Store(tmp_path / "s")
    with use_store(store):
        ckpt = Checkpointer(name="loop", writer=Sync())
        state = ckpt.restore(TrainState(w=np.zeros(1)))
        ckpt.step(0, state, {"loss": 1.0})
        ckpt.finish(state)
        assert current_stage() is None
    assert ckpt.store is store and Checkpointer(store=store, name="loop").steps() == [1]


# -- the context in a worker process ---------------------------------------------------------
def _report() -> tuple[str, list[str], str | None]:
    ctx = current()
    return current_store().url, sorted(ctx.force.stages), os.environ.get("PIPELINE_STORE")


def test_carry_ships_the_context_to_a_spawned_worker_process(tmp_path):
    store = Store(tmp_path / "s")
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        with run_context(store=store, force=Force.of(["train"])):
            shipped = carry(_report)
        # the worker never saw this context: it arrives with the call
        url, forced, env = pool.submit(shipped).result(timeout=60)
    assert (url, forced, env) == (store.url, ["train"], None)
