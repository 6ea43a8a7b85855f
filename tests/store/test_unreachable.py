"""An S3 store or mirror whose server is down: the real SeaweedFS server behind a TCP proxy
(tests/helpers/tcpproxy.py) taken down and brought back, so the session's server stays up.

Down, every store operation is one StoreUnreachable naming the store and its endpoint (never
a botocore exception), every CLI command one line on stderr; a mirror that is down never fails
a commit to the primary (sync or background) and is named in one warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from pipeline import Manifest, StageCache, Store
from pipeline.errors import StoreUnreachable
from pipeline.store.mirror_sync import push, status
from pipeline.store.retention import gc
from tests.cli.test_errors import one_clear_line
from tests.helpers.tcpproxy import Proxy
from tests.store.test_mirror import ROOT, make_value, produce, runs

FAST = {"retries": {"max_attempts": 1}}
"""One attempt per request: botocore's retries would take ~5 s per failing call."""


@pytest.fixture
def proxy(s3_server):
    p = Proxy(s3_server.endpoint)
    yield p
    p.down()


def options(s3_server, proxy) -> dict:
    return {"key": s3_server.key, "secret": s3_server.secret, "client_kwargs": {"endpoint_url": proxy.endpoint},
            "config_kwargs": FAST}  # fmt: skip


def test_every_operation_on_a_store_whose_server_is_down_is_one_store_error(s3_server, proxy, tmp_path):
    url = s3_server.new_url()
    store = Store(url, **options(s3_server, proxy))
    stage = StageCache(store).wrap(produce, ignore=["log"])
    stage(0, str(tmp_path / "log"))
    m = next(store.manifests())
    proxy.down()
    operations = {
        "save": lambda: store.save(make_value(1)),
        "commit": lambda: store.commit(Manifest(stage="s", key="xxh3:" + "ab" * 16, outputs=m.outputs)),
        "manifests": lambda: list(store.manifests()),
        "manifest": lambda: store.manifest(m.stage, m.key),
        "load": lambda: store.load(m.outputs),
        "tag": lambda: store.tags.add("prod", m.stage, m.key),
        "verify": lambda: store.verify(),
        "gc --dry-run": lambda: gc(store, dry_run=True),
        "stage call": lambda: stage(2, str(tmp_path / "log")),
    }
    for what, op in operations.items():
        with pytest.raises(StoreUnreachable) as e:
            op()
        assert url in str(e.value) and proxy.endpoint in str(e.value), (what, str(e.value))
        assert "start its server" in str(e.value), what
    proxy.up()  # back: the store works again, nothing was lost
    assert stage.call(0, str(tmp_path / "log")).hit and store.verify().clean


def test_opening_a_store_whose_server_is_down_names_it(s3_server, proxy):
    url = s3_server.new_url()
    Store(url, **options(s3_server, proxy))
    proxy.down()
    for create in (True, False):
        with pytest.raises(StoreUnreachable, match=f"cannot read store {url}: its S3 endpoint {proxy.endpoint} does"):
            Store(url, create=create, **options(s3_server, proxy))


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_a_mirror_whose_server_goes_down_never_fails_a_commit_and_is_named(s3_server, proxy, tmp_path, mode):
    mirror_url = s3_server.new_url()
    mirror = Store(mirror_url, **options(s3_server, proxy))
    primary = Store(tmp_path / "p", mirrors=[mirror], mirror_mode=mode)
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    log = tmp_path / "log"
    stage(0, str(log))
    assert not primary.mirrors.flush()
    proxy.down()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (1, 2):
            assert not stage.call(seed, str(log)).hit  # committed to the primary
        left = primary.mirrors.flush()
    assert not left  # the replicator finished: it skipped the mirror, it did not hang on it
    down = [str(w.message) for w in caught if "unreachable" in str(w.message)]
    assert len(down) == 1, [str(w.message) for w in caught]
    assert mirror_url in down[0] and proxy.endpoint in down[0] and "mirror push" in down[0]
    assert primary.verify().manifests == 3 and runs(log) == 3
    [st] = status(primary, primary.mirrors)
    assert not st.reachable and proxy.endpoint in st.error
    proxy.up()
    [pushed] = push(primary, primary.mirrors)
    assert pushed.entries == 2 and not pushed.failed
    assert all(s.in_sync for s in status(primary, primary.mirrors))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_MAX_ATTEMPTS": "1", **env}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def s3_env(s3_server, proxy) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3_server.key, "AWS_SECRET_ACCESS_KEY": s3_server.secret,
            "AWS_ENDPOINT_URL": proxy.endpoint}  # fmt: skip


def test_cli_commands_on_a_store_whose_server_is_down_say_one_line(s3_server, proxy, prefect_api, tmp_path):
    url = s3_server.new_url()
    store = Store(url, **options(s3_server, proxy))
    StageCache(store).wrap(produce, ignore=["log"])(0, str(tmp_path / "log"))
    key = next(store.manifests()).key
    proxy.down()
    env = s3_env(s3_server, proxy)
    commands = [["ls"], ["gc"], ["gc", "--dry-run"], ["verify"], ["show", key[5:15]], ["tag", key[5:15], "prod"],
                ["run", "--flow", "tests.cli.flows:chain"]]  # fmt: skip
    for command in commands:
        line = one_clear_line(cli(*command, "--store", url, env=env), url, proxy.endpoint, "start its server")
        assert line.startswith("error: cannot read store"), (command, line)
    mirrored = cli("mirror", "status", "--store", url, "--mirror", str(tmp_path / "m"), env=env)
    one_clear_line(mirrored, url, proxy.endpoint)


def test_cli_mirror_commands_with_a_mirror_whose_server_is_down(s3_server, proxy, tmp_path):
    primary = Store(tmp_path / "p")
    StageCache(primary).wrap(produce, ignore=["log"])(0, str(tmp_path / "log"))
    mirror_url = s3_server.new_url()
    Store(mirror_url, **options(s3_server, proxy))
    proxy.down()
    env = {**s3_env(s3_server, proxy), "PIPELINE_MIRRORS": mirror_url}
    for command in (["mirror", "status"], ["mirror", "push"], ["mirror", "pull"]):
        done = cli(*command, "--store", str(tmp_path / "p"), env=env)
        assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
        said = [line for line in (done.stdout + done.stderr).splitlines() if mirror_url in line and "answer" in line]
        assert len(said) == 1, (command, done.stdout, done.stderr)  # said once, not as a warning and in the table
        assert proxy.endpoint in said[0] and "start its server" in said[0], said[0]


def test_a_run_whose_store_goes_down_midway_ends_in_one_line_without_tracebacks(s3_server, proxy, prefect_api):
    url = s3_server.new_url()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_MAX_ATTEMPTS": "1", "PREFECT_LOGGING_LEVEL": "INFO",
           **s3_env(s3_server, proxy)}  # fmt: skip
    cmd = [sys.executable, "-m", "pipeline", "run", "--store", url]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # read as it goes: the server goes down once `split` has committed
        lines.append(line)
        if "Task run 'split" in line and "Finished" in line:
            proxy.down()
    assert proc.wait(timeout=300) == 1, "".join(lines[-50:])
    said = "".join(lines)
    assert "Traceback" not in said, said[-5000:]
    assert lines[-1].startswith("error: ") and url in lines[-1] and proxy.endpoint in lines[-1], lines[-1]
    assert "start its server" in lines[-1]
