"""The command line: run/status on the bundled pipeline, store commands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import Store
from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "tune.n_trials=2", "--set", "train.epochs=5", "--set", "tune.epochs=3"]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def invoke(*args: str):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, list(args))


@pytest.mark.usefixtures("prefect_api")
def test_run_status_force_ls_show_verify(tmp_path):
    store = str(tmp_path / "store")
    first = invoke("run", "--store", store, *FAST)
    assert first.exit_code == 0, first.output
    assert "0 cached, 9 computed" in first.output
    run_id = first.output.split("run ", 1)[1].split()[0]
    assert search_artifact(run_id) == [0, 1]  # the search's trials, as a table artifact of that run

    warm = invoke("run", "--store", store, *FAST)
    assert "9 cached, 0 computed" in warm.output
    assert "trials (the search was served from the store)" in warm.output  # a warm run shows them too

    status = invoke("status", "--store", store, *FAST)
    assert status.exit_code == 0 and "stale" not in status.output and status.output.count("cached") == 9

    changed = invoke("status", "--store", store, *FAST, "--set", "train.epochs=6")
    assert "param epochs: 5 -> 6" in changed.output
    assert changed.output.count("may rerun") == 3  # the two evaluations and the package

    forced = invoke("run", "--store", store, *FAST, "--force", "engineer")
    assert forced.exit_code == 0, forced.output
    # engineer recomputes; split consumes its (identical) output and is forced too, and so on.
    assert "2 cached, 7 computed" in forced.output

    listing = invoke("ls", "--store", store)
    assert listing.exit_code == 0 and "package_model" in listing.output
    key = next(Store(store).manifests("train")).key
    shown = invoke("show", key[5:15], "--store", store, "--json")
    assert shown.exit_code == 0 and '"stage": "train"' in shown.output
    assert invoke("verify", "--store", store).exit_code == 0


def search_artifact(flow_run_id: str) -> list[int]:
    """The trial numbers of the `search-tune` table artifact a flow run published (Prefect API)."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["search-tune"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    (artifact,) = found
    assert artifact.type == "table" and "trials; best value" in artifact.description
    rows = json.loads(artifact.data)
    assert set(rows[0]) >= {"trial", "alpha", "eta0", "learning_rate", "value", "state", "source"}
    return [r["trial"] for r in rows]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "train.epochs"], "expected section.key=value"),
        (["run", "--set", "train.epochs=many"], "expected a int"),
        (["run", "--params", "nope.toml"], "parameter file nope.toml not found"),
        (["run", "--flow", "no_such_module:flow"], "cannot import flow module 'no_such_module'"),
        (["status", "--flow", "flows.ml_pipeline"], "must look like module:function"),
        (["status", "--set", "data.source=missing"], "data file"),
        (["show", "deadbeef"], "no stage, search or result key"),
    ],
)
@pytest.mark.slow
def test_errors_are_one_line_and_exit_1(args, message, tmp_path):
    Store(tmp_path / "s")  # an (empty) store: read-only commands open, never create one
    done = cli(*args, "--store", str(tmp_path / "s"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # one line (rich may wrap a long one)


def test_malformed_pyproject_setting_is_named(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nfsync = "maybe"\n')
    done = cli("ls", cwd=tmp_path)
    assert done.returncode == 1
    assert "setting 'fsync'" in done.stderr and "must be a bool" in done.stderr


def test_verify_reports_corruption_with_exit_1(tmp_path):
    store = Store(tmp_path / "store")
    from pipeline import StageCache

    m = StageCache(store).wrap(lambda n: list(range(n)), name="numbers").call(1000).manifest
    obj = next(p for p in (tmp_path / "store" / "objects").rglob("*.json"))
    data = bytearray(obj.read_bytes())
    data[5] ^= 0xFF
    obj.write_bytes(bytes(data))
    done = cli("verify", "--store", str(tmp_path / "store"))
    assert done.returncode == 1
    assert "1" in done.stdout and "corrupt" in done.stdout
    # each corrupt object is named, with the stage and key of the result that uses it
    assert f"corrupt object {m.outputs.object} (used by numbers {m.key})" in done.stdout


@pytest.mark.slow
def test_default_run_starts_a_local_server_and_reuses_it(tmp_path):
    """`python -m pipeline run` with no PREFECT_API_URL: the CLI starts one detached local
    server, the second run reuses it (served from the same database), `server stop` ends it."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_HOME"))}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")

    def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    store = str(tmp_path / "store")
    try:
        first = run_cli("run", "--store", store, *FAST)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
        assert "starting a local Prefect server" in first.stderr
        assert json.loads((tmp_path / "home" / "pipeline-server.json").read_text())["ui"] is True  # no UI probe
        second = run_cli("run", "--store", store, *FAST)
        assert second.returncode == 0 and "starting" not in second.stderr and "note:" not in second.stderr
        assert "9 cached, 0 computed" in second.stdout
        assert "local server running at http://127.0.0.1:" in run_cli("server", "status").stdout
    finally:
        stopped = run_cli("server", "stop")
    assert stopped.stdout.startswith("stopped http://127.0.0.1:")
    assert "no local server running" in run_cli("server", "status").stdout


@pytest.mark.slow
def test_a_server_recorded_by_an_older_version_is_probed_for_its_ui(tmp_path, monkeypatch):
    """A state file without ``ui`` (an older version's server, maybe without the UI): the run
    probes the server's UI and says how to get one; a server this version started is not probed."""
    import io
    import os

    from rich.console import Console

    from pipeline.integrations.server import ensure_server, free_port, healthy, spawn_server

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    port = free_port()
    proc = spawn_server(port, home, home / "log", ui=False)
    try:
        api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 90
        while not healthy(api):
            assert proc.poll() is None and time.monotonic() < deadline, (home / "log").read_text()[-2000:]
            time.sleep(0.2)
        for recorded, noted in (({}, True), ({"ui": True}, False)):
            state = {"api_url": api, "pid": proc.pid, "log": str(home / "log"), **recorded}
            (home / "pipeline-server.json").write_text(json.dumps(state))
            said = io.StringIO()
            assert ensure_server("auto", Console(file=said))() == api and os.environ["PREFECT_API_URL"] == api
            assert ("serves no UI" in said.getvalue()) is noted, said.getvalue()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


@pytest.mark.usefixtures("prefect_api")
def test_the_cli_exit_joins_threads_and_runs_atexit_handlers(tmp_path):
    """The CLI ends without the interpreter's teardown, but as it would otherwise: a
    non-daemon thread finishes, atexit handlers run, output is flushed, the exit code holds."""
    import os

    env = dict(os.environ, EXIT_FLOW_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pipeline", "run", "--flow", "tests.cli.exit_flow:leaves_work",
           "--store", str(tmp_path / "store")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "status completed" in done.stdout
    assert (tmp_path / "thread").read_text() == "joined" and (tmp_path / "atexit").read_text() == "ran"
    bad = subprocess.run(cmd[:-2] + ["--store", str(tmp_path / "store"), "--runner", "nope"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:"), bad.stderr
