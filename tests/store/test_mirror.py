"""Backup mirrors on local directories: replication on commit, read repair, push/pull/status,
``verify --repair``, settings, a mirror that is down, background replication in real
subprocesses (flushed at exit; SIGKILLed: never a manifest without its objects).

The damage matrix (``CASES``) is shared with ``test_mirror_s3.py``, which runs it with one
side on the real S3 server: delete, truncate or bit-flip an object or a manifest in the
primary, the mirror or both — always detected; repaired whenever one good copy exists;
recomputed otherwise; never a wrong value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import StageCache, Store, materialize
from pipeline.config import Settings, mirror_list
from pipeline.errors import ConfigError
from pipeline.store import layout
from pipeline.store.mirror import Mirrors
from pipeline.store.mirror_sync import Side, pull, push, repair, status
from pipeline.store.objects import leaf_path
from pipeline.store.tree import leaves
from tests.store.test_store import assert_same, flip_byte, raw_bytes, write_raw

ROOT = Path(__file__).resolve().parents[2]


# -- the damage matrix ------------------------------------------------------------------------
def make_value(seed: int = 0) -> tuple:
    r = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": r.standard_normal(200), "k": np.arange(200)})
    return frame, r.standard_normal((50, 4))


def produce(seed: int, log: str) -> tuple:
    """A stage that leaves a line in ``log`` each time it really runs."""
    with open(log, "a") as f:
        f.write("ran\n")
    return make_value(seed)


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def damage(store: Store, rel: str, how: str) -> None:
    if how == "delete":
        store._backend.delete(rel)
    elif how == "truncate":
        write_raw(store, rel, raw_bytes(store, rel)[: len(raw_bytes(store, rel)) // 2])
    else:
        flip_byte(store, rel)


@dataclass(frozen=True)
class Case:
    what: str  # "object" | "manifest"
    how: str  # "delete" | "truncate" | "flip"
    where: str  # "primary" | "mirror" | "both"

    @property
    def id(self) -> str:
        return f"{self.how}-{self.what}-in-{self.where}"

    @property
    def primary_good(self) -> bool:
        return self.where == "mirror"

    @property
    def one_good_copy(self) -> bool:
        return self.where != "both"


CASES = [Case(w, h, where) for w in ("object", "manifest") for h in ("delete", "truncate", "flip")
         for where in ("primary", "mirror", "both")]  # fmt: skip


@dataclass
class Setup:
    primary: Store
    mirror: Store
    stage: object
    log: Path
    key: str

    def reopen(self) -> Store:
        """The primary as a new process would open it (same mirror)."""
        return Store(self.primary.url, mirrors=[self.mirror], **self.primary_options)

    primary_options: dict


def setup(primary_url: str, mirror: Store, log: Path, **primary_options) -> Setup:
    primary = Store(primary_url, mirrors=[mirror], **primary_options)
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    first = stage.call(0, str(log))
    assert not first.hit and runs(log) == 1
    return Setup(primary, mirror, stage, log, first.manifest.key, primary_options)


def target_rel(s: Setup, what: str) -> str:
    m = s.primary.manifest(s.stage.name, s.key)
    return leaf_path(next(leaves(m.outputs))) if what == "object" else layout.manifest_path(s.stage.name, s.key)


def apply(s: Setup, case: Case) -> None:
    rel = target_rel(s, case.what)
    for store in {"primary": [s.primary], "mirror": [s.mirror], "both": [s.primary, s.mirror]}[case.where]:
        damage(store, rel, case.how)


def check_served(s: Setup, case: Case) -> None:
    """A new process calls the stage: right value; computed again only when no copy is good;
    afterwards both stores hold a good copy (damage in the primary repaired from the mirror,
    or the recomputed result replicated) except damage in the mirror alone, which ``push
    --check`` repairs."""
    apply(s, case)
    primary = s.reopen()
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = stage.call(0, str(s.log))
        value = materialize(out.value)
    for a, b in zip(value, make_value(0)):
        assert_same(a, b)
    assert runs(s.log) == (1 if case.one_good_copy else 2), case.id
    if case.where == "primary":
        assert any("restored from mirror" in str(w.message) for w in caught), case.id
    assert primary.verify().clean and primary.verify().manifests == 1
    if case.where == "mirror":
        push(primary, primary.mirrors, check=True)
    mirror_report = s.mirror.verify()
    assert mirror_report.clean and mirror_report.manifests == 1, (case.id, mirror_report)
    assert all(st.in_sync for st in status(primary, primary.mirrors)), case.id


def check_detected_and_repaired(s: Setup, case: Case) -> None:
    """``verify`` of each store plus ``status`` see every kind of damage; ``verify --repair``
    (``repair``) restores the primary whenever the mirror is good, ``push --check`` the
    mirror whenever the primary is good; with no good copy it says what it could not repair."""
    apply(s, case)
    primary = s.reopen()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_report, m_report = primary.verify(), s.mirror.verify()
        [st] = status(primary, primary.mirrors)
    seen_in_primary = not p_report.clean or st.missing_in_primary != Side()
    seen_in_mirror = not m_report.clean or st.missing_in_mirror != Side()
    if case.what == "manifest" and case.how == "delete" and case.where == "both":
        seen_in_primary = seen_in_mirror = p_report.orphans == 2 and m_report.orphans == 2
    assert seen_in_primary == (case.where != "mirror"), (case.id, p_report)
    assert seen_in_mirror == (case.where != "primary"), (case.id, m_report)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = repair(primary, p_report.problems)
        if case.what == "manifest" and case.how == "delete":
            pull(primary, primary.mirrors)  # a missing entry is not a problem verify sees: pull brings it
        push(primary, primary.mirrors, check=True)
    if case.one_good_copy:
        assert not fixed.unrepaired, (case.id, fixed)
        for store in (primary, s.mirror):
            report = store.verify()
            assert report.clean and report.manifests == 1, (case.id, store, report)
        m = primary.manifest(s.stage.name, s.key)
        for a, b in zip(materialize(primary.load(m.outputs)), make_value(0)):
            assert_same(a, b)
    elif case.what == "manifest" and case.how == "delete":  # deleted everywhere: no entry, its objects orphans
        assert p_report.orphans == 2 and not fixed.unrepaired
    else:
        assert fixed.unrepaired, (case.id, fixed)
        assert primary.manifest(s.stage.name, s.key) is None or primary.missing(
            primary.manifest(s.stage.name, s.key).outputs
        ), case.id


# -- local + local (fast) ---------------------------------------------------------------------
@pytest.fixture
def local_setup(tmp_path) -> Setup:
    return setup(str(tmp_path / "primary"), Store(tmp_path / "mirror"), tmp_path / "runs.log")


CHECKS = {"served": check_served, "detected+repaired": check_detected_and_repaired}


@pytest.mark.parametrize("check", CHECKS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_damage_matrix_local(local_setup, case, check):
    CHECKS[check](local_setup, case)


def test_commit_replicates_objects_then_manifest_and_the_mirror_is_a_store(tmp_path):
    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    for seed in range(3):
        stage(seed, str(tmp_path / "log"))
    mirror = Store(tmp_path / "m", create=False)  # opened directly, as any store
    report = mirror.verify()
    assert report.clean and report.manifests == 3 and report.ok == 6
    assert sorted(m.key for m in mirror.manifests()) == sorted(m.key for m in primary.manifests())
    assert all(st.in_sync for st in status(primary, primary.mirrors))


def test_a_truncated_copy_in_the_mirror_is_replaced_by_the_next_commit_of_it(tmp_path):
    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    first = stage.call(0, str(tmp_path / "log"))
    mirror = Store(tmp_path / "m")
    rel = leaf_path(next(leaves(first.manifest.outputs)))
    damage(mirror, rel, "truncate")
    primary.commit(first.manifest)  # committed again (a forced rerun that computed the same)
    report = mirror.verify()
    assert report.clean and report.ok == 2


def test_a_missing_entry_is_found_in_the_mirror_on_lookup(tmp_path):
    log = tmp_path / "log"
    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    StageCache(primary).wrap(produce, ignore=["log"])(3, str(log))
    Store(tmp_path / "p2")  # another primary, empty, with the same mirror: a lookup finds the entry
    other = StageCache(Store(tmp_path / "p2", mirrors=[tmp_path / "m"])).wrap(produce, ignore=["log"])
    with pytest.warns(UserWarning, match="restored from mirror"):
        out = other.call(3, str(log))
        value = materialize(out.value)
    assert out.hit and runs(log) == 1
    for a, b in zip(value, make_value(3)):
        assert_same(a, b)


def test_checkpoint_manifests_repair_too(tmp_path):
    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    from pipeline import Manifest

    cps = primary.checkpoints("train", "xxh3:" + "cd" * 16)
    tree = primary.save_parts({"w": np.arange(10)})
    cps.commit(Manifest(stage="train", key=cps.key, outputs=tree, step=4, kind="checkpoint"))
    flip_byte(primary, layout.manifest_path("train", cps.key, 4))
    with pytest.warns(UserWarning, match="restored from mirror"):
        m = cps.read(4)
    assert m.step == 4 and np.array_equal(primary.load(m.outputs)["w"], np.arange(10))
    assert primary.verify().clean


def test_a_deleted_checkpoint_never_comes_back_into_its_set(tmp_path):
    """Dropped checkpoint records (shard records of a step, older steps) stay dropped: a lookup
    does not ask the mirrors for a checkpoint, and pull brings a key's checkpoints only whole."""
    from pipeline import Manifest

    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    cps = primary.checkpoints("train", "xxh3:" + "cd" * 16)
    for step in (1, 2, 3):
        tree = primary.save_parts({"w": np.full(4, step)})
        cps.commit(Manifest(stage="train", key=cps.key, outputs=tree, step=step, kind="checkpoint"))
    cps.delete(2)
    assert primary.manifest("train", cps.key, 2) is None and cps.steps() == [1, 3]
    with pytest.raises(FileNotFoundError):
        cps.read(2)
    [pulled] = pull(primary, primary.mirrors)
    assert pulled.entries == 0 and cps.steps() == [1, 3]
    fresh = Store(tmp_path / "fresh", mirrors=[tmp_path / "m"])  # a lost store: the whole set comes back
    [pulled] = pull(fresh, fresh.mirrors)
    assert pulled.entries == 3 and fresh.checkpoints("train", cps.key).steps() == [1, 2, 3]


def test_a_mirror_that_is_down_warns_once_and_push_catches_up(tmp_path):
    blocked = tmp_path / "m"
    blocked.write_text("not a directory")  # the mirror cannot be opened
    primary = Store(tmp_path / "p", mirrors=[blocked])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            assert not stage.call(seed, str(tmp_path / "log")).hit  # every commit succeeds
    down = [w for w in caught if "unreachable" in str(w.message)]
    assert len(down) == 1 and str(blocked) in str(down[0].message)
    [st] = status(primary, primary.mirrors)
    assert not st.reachable
    blocked.unlink()
    [st] = status(primary, primary.mirrors)
    assert st.reachable and st.missing_in_mirror.entries == 3 and st.missing_in_mirror.objects == 6
    assert st.missing_in_mirror.entry_bytes == sum(m.bytes for m in primary.manifests())
    [pushed] = push(primary, primary.mirrors)
    assert pushed.entries == 3 and pushed.objects == 6 and not pushed.failed
    assert all(st.in_sync for st in status(primary, primary.mirrors))
    assert Store(blocked).verify().manifests == 3


@pytest.mark.slow
def test_an_s3_mirror_that_refuses_connections_does_not_fail_commits(tmp_path):
    from pipeline.store.mirror import Mirror

    dead = Mirror("s3://bucket/backup", key="k", secret="s", client_kwargs={"endpoint_url": "http://127.0.0.1:9"})
    primary = Store(tmp_path / "p", mirrors=[dead])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        stage(0, str(tmp_path / "log"))  # botocore retries for a while, then the mirror is marked down
        t1 = time.perf_counter()
        stage(1, str(tmp_path / "log"))
        assert stage.call(1, str(tmp_path / "log")).hit
        t2 = time.perf_counter()
    assert t2 - t1 < 2.0 < 60 > t1 - t0  # skipped once it is known down
    assert len([w for w in caught if "unreachable" in str(w.message)]) == 1
    assert primary.verify().manifests == 2
    [st] = status(primary, primary.mirrors)
    assert not st.reachable and "127.0.0.1:9" in st.error


def test_a_mirror_that_fails_after_opening_is_skipped_and_warned_once(tmp_path):
    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    stage(0, str(tmp_path / "log"))
    objects = tmp_path / "m" / "objects"
    objects.rename(tmp_path / "m-objects")
    objects.write_text("in the way")  # every object write into the mirror now fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (1, 2):
            assert not stage.call(seed, str(tmp_path / "log")).hit
    assert len([w for w in caught if "unreachable" in str(w.message)]) == 1
    assert primary.verify().manifests == 3
    objects.unlink()
    (tmp_path / "m-objects").rename(objects)
    [st] = status(primary, primary.mirrors)
    assert st.missing_in_mirror.entries == 2 and st.missing_in_primary == Side()
    push(primary, primary.mirrors)
    assert Store(tmp_path / "m").verify().manifests == 3


def test_pull_fills_an_empty_primary(tmp_path):
    first = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    stage = StageCache(first).wrap(produce, ignore=["log"])
    for seed in range(2):
        stage(seed, str(tmp_path / "log"))
    fresh = Store(tmp_path / "p-new", mirrors=[tmp_path / "m"])
    [pulled] = pull(fresh, fresh.mirrors)
    assert pulled.entries == 2 and pulled.objects == 4
    assert fresh.verify().clean and fresh.verify().manifests == 2


def test_a_mirror_that_is_the_store_itself_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="the store itself"):
        Store(tmp_path / "p", mirrors=[tmp_path / "p"])
    with pytest.raises(ConfigError, match="mirror_mode"):
        Mirrors([tmp_path / "m"], mode="later")


def test_mirror_settings_from_pyproject_and_environment(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nmirrors = ["backup", "s3://b/ckpt"]\n')
    s = Settings.load(start=tmp_path, env={})
    assert s.mirrors == (str(tmp_path / "backup"), "s3://b/ckpt") and s.mirror_mode == "sync"
    env = {"PIPELINE_MIRRORS": "s3://b/x,/mnt/a:/mnt/b", "PIPELINE_MIRROR_MODE": "background"}
    s = Settings.load(start=tmp_path, env=env)
    assert s.mirrors == ("s3://b/x", "/mnt/a", "/mnt/b") and s.mirror_mode == "background"
    assert mirror_list("file:///a:s3://b/c") == ("file:///a", "s3://b/c")
    with pytest.raises(ConfigError, match="mirror_mode"):
        Settings.load(start=tmp_path, env={"PIPELINE_MIRROR_MODE": "eventually"})
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nmirrors = "one"\n')
    with pytest.raises(ConfigError, match="list of paths"):
        Settings.load(start=tmp_path, env={})


def test_the_configured_store_gets_the_configured_mirrors(tmp_path, monkeypatch):
    from pipeline import context

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_STORE", str(tmp_path / "p"))
    monkeypatch.setenv("PIPELINE_MIRRORS", f"{tmp_path / 'm1'}{os.pathsep}{tmp_path / 'm2'}")
    StageCache().wrap(produce, ignore=["log"])(1, str(tmp_path / "log"))
    assert [m.url for m in context.current_store().mirrors.mirrors] == [str(tmp_path / "m1"), str(tmp_path / "m2")]
    for m in ("m1", "m2"):
        assert Store(tmp_path / m).verify().manifests == 1
    assert context.open_store(tmp_path / "p").mirrors is not None
    assert context.open_store(tmp_path / "elsewhere").mirrors is None  # not the configured store: not its mirrors


def test_a_store_with_mirrors_pickles(tmp_path):
    import pickle

    primary = Store(tmp_path / "p", mirrors=[tmp_path / "m"], mirror_mode="background")
    back = pickle.loads(pickle.dumps(primary))
    assert back.mirrors.mode == "background" and [m.url for m in back.mirrors.mirrors] == [str(tmp_path / "m")]
    assert back._objects.written.__self__ is back.mirrors and back._objects.repair.args == (back,)


# -- CLI --------------------------------------------------------------------------------------
def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_cli_mirror_status_push_pull_and_verify_repair(tmp_path):
    p, m = tmp_path / "p", tmp_path / "m"
    primary = Store(p)  # no mirror yet: the mirror is behind
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    for seed in range(2):
        stage(seed, str(tmp_path / "log"))
    env = {"PIPELINE_MIRRORS": str(m)}
    st = cli("mirror", "status", "--store", str(p), env=env)
    assert st.returncode == 0 and "2 entries" in st.stdout and "behind" in st.stdout, st.stdout + st.stderr
    pushed = cli("mirror", "push", "--store", str(p), env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "in sync" in cli("mirror", "status", "--store", str(p), env=env).stdout
    leaf = next(leaves(next(primary.manifests()).outputs))
    victim = leaf_path(leaf)
    flip_byte(primary, victim)
    repaired = cli("verify", "--repair", "--store", str(p), env=env)
    assert repaired.returncode == 0 and "1 repaired, 0 not repaired" in repaired.stdout, repaired.stdout
    assert Store(p).verify().clean
    flip_byte(primary, victim)
    flip_byte(Store(m), victim)
    broken = cli("verify", "--repair", "--store", str(p), env=env)
    assert broken.returncode == 1 and "not repaired" in broken.stdout and leaf.object in broken.stdout
    none = cli("mirror", "push", "--store", str(p))
    assert none.returncode == 1 and "no mirrors configured" in none.stderr and "Traceback" not in none.stderr
    pulled = cli("mirror", "pull", "--store", str(tmp_path / "fresh"), "--mirror", str(m))
    # the entry whose object is bad everywhere is not copied without it; the other one is
    assert pulled.returncode == 1 and "not copied into" in pulled.stdout and leaf.object in pulled.stdout
    fresh = Store(tmp_path / "fresh").verify()
    assert fresh.clean and fresh.manifests == 1


# -- background replication in real processes --------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    import pipeline.store.mirror as mirror
    from pipeline import Manifest, Store
    primary, backup, n, size, flush = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if flush != "default":
        mirror.FLUSH_SECONDS = float(flush)
    if backup.startswith("http://"):  # an S3 endpoint at that address
        backup = mirror.Mirror("s3://bucket/backup", key="k", secret="s", client_kwargs={"endpoint_url": backup},
                               config_kwargs={"read_timeout": 600, "connect_timeout": 600})
    store = Store(primary, mirrors=[backup], mirror_mode="background")
    for i in range(n):
        tree = store.save((np.full(size, i, dtype=np.int64), {"i": i}))
        store.commit(Manifest(stage="s", key="xxh3:%032x" % i, outputs=tree))
        print(i, flush=True)
    print("done", flush=True)
    """
)


def writer(tmp_path: Path, n: int, size: int, flush: str = "default", backup: str = "") -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "p"), backup or str(tmp_path / "m"), str(n), str(size), flush],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_background_replication_is_flushed_at_exit(tmp_path):
    proc = writer(tmp_path, 20, 200_000)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done" in out, err
    assert "mirror push" not in err
    report = Store(tmp_path / "m").verify()
    assert report.clean and report.manifests == 20 and report.ok == 40


@pytest.mark.slow
def test_background_replication_that_cannot_finish_says_what_it_left(tmp_path):
    """A mirror that hangs (an endpoint that accepts connections and never answers): the
    commits return, and exit waits FLUSH_SECONDS, then names what it could not replicate."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # connections complete in the kernel; nothing ever reads or answers
        proc = writer(tmp_path, 12, 1000, flush="1", backup=f"http://127.0.0.1:{hung.getsockname()[1]}")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done" in out and "unreachable" not in err, err  # hung, not failed
    assert "exiting before 12 commits reached the mirrors" in err and "mirror push" in err, err
    assert "s xxh3:00000000000000000000000000000000" in err and "and 2 more" in err, err
    assert Store(tmp_path / "p").verify().manifests == 12  # the primary has every commit


POOL_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from concurrent.futures import ProcessPoolExecutor
    from pipeline import Manifest, Store

    def work(i):
        store = Store(sys.argv[1], mirrors=[sys.argv[2]], mirror_mode="background")
        for j in range(5):
            tree = store.save(np.full(100_000, 10 * i + j))
            store.commit(Manifest(stage="s", key=f"xxh3:{10 * i + j:032x}", outputs=tree))
        return i

    if __name__ == "__main__":
        with ProcessPoolExecutor(2) as pool:
            print(sorted(pool.map(work, range(2))), flush=True)
    """
)


@pytest.mark.slow
def test_background_replication_in_pool_workers_is_flushed_when_they_exit(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(POOL_WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(script), str(tmp_path / "p"), str(tmp_path / "m")]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "[0, 1]" in out.stdout, out.stderr
    report = Store(tmp_path / "m").verify()
    assert report.clean and report.manifests == 10


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.4, 1.0])
def test_a_killed_background_replicator_leaves_no_manifest_without_its_objects(tmp_path, delay):
    proc = writer(tmp_path, 5000, 50_000)  # far more than it commits before the kill, even on an idle machine
    assert proc.stdout.readline().strip() == "0"  # committing
    deadline = time.monotonic() + 60
    while not list((tmp_path / "m").glob("stages/s/*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the replicator has copied an entry
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed mid-way, not finished
    mirror = Store(tmp_path / "m")
    report = mirror.verify()
    assert report.missing == 0 and report.corrupt == 0 and report.bad_manifests == 0, report
    assert report.manifests > 0, "killed before anything was replicated: a longer delay is needed"
    for m in mirror.manifests():
        assert not mirror.missing(m.outputs)
        array, record = mirror.load(m.outputs)
        assert (array == record["i"]).all() and m.key == f"xxh3:{record['i']:032x}"


def test_checkpointers_and_searches_given_the_configured_store_by_path_get_its_mirrors(tmp_path, monkeypatch):
    """A Checkpointer, a distributed checkpointer or a search handed the configured store as a
    path opens it with the configured mirrors: its checkpoints are backed up like stage results."""
    from sklearn.linear_model import SGDClassifier

    from pipeline.training import Checkpointer, EveryNEpochs, Sync, TrainState
    from pipeline.tuning import _open_store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_STORE", str(tmp_path / "p"))
    monkeypatch.setenv("PIPELINE_MIRRORS", str(tmp_path / "m"))
    ckpt = Checkpointer(store=str(tmp_path / "p"), name="run", save=EveryNEpochs(1), writer=Sync())
    state = ckpt.restore(TrainState(model=SGDClassifier(random_state=0)))
    X, y = np.random.RandomState(0).rand(40, 3), np.arange(40) % 2
    state.model.partial_fit(X, y, classes=[0, 1])
    ckpt.step(0, state, {"val_loss": 0.5})
    ckpt.close()
    mirror = Store(tmp_path / "m")
    assert mirror.checkpoints("run", "default").steps() == [1]
    assert mirror.verify().clean
    assert _open_store(str(tmp_path / "p")).mirrors is not None
    assert _open_store(str(tmp_path / "other")).mirrors is None
