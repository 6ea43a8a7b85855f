"""Every bad input is one line on stderr, exit code 1, no traceback (real subprocess CLI runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import StageCache, Store
from pipeline.integrations.server import free_port
from tests.cli.test_cli import ROOT, invoke

SHIPPED = (ROOT / "params.toml").read_text()


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()):
    return subprocess.run([*prefix, sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (fast); a traceback would surface as ``exception``."""
    result = invoke(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def one_clear_line(done: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("sets", "parts"),
    [
        (["train.epoch=40"], ["unknown parameter train.epoch", "did you mean train.epochs?"]),
        (["trian.epochs=40"], ["unknown section trian", "did you mean train?"]),
        (["tune.n_trial=3"], ["unknown parameter tune.n_trial", "did you mean tune.n_trials?"]),
        (["train=3"], ["train is a section"]),
    ],
)
def test_unknown_set_keys_of_the_bundled_flow(sets, parts, tmp_path):
    for command in ("run", "status"):
        args = [x for s in sets for x in ("--set", s)]
        one_clear_line(in_process(command, *args, "--store", str(tmp_path / "s")), *parts)
    assert not (tmp_path / "s").exists()  # nothing ran, nothing was created


def test_params_file_missing_a_section_or_with_a_wrong_type(tmp_path):
    missing = tmp_path / "missing.toml"
    missing.write_text("[preprocess]" + SHIPPED.split("[preprocess]")[1])  # no [data]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(SHIPPED.replace("test_size = 0.2", 'test_size = "0.2"'))
    for command in ("run", "status"):
        one_clear_line(
            in_process(command, "--params", str(missing)), f"parameter file {missing}", "missing section [data]"
        )
        one_clear_line(
            in_process(command, "--params", str(wrong)),
            f"parameter file {wrong}", "parameter data.test_size must be a float, got '0.2' (str)",
        )  # fmt: skip


@pytest.mark.slow  # two subprocess runs that import the whole pipeline
def test_unreachable_prefect_api_names_the_url_and_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = dict(os.environ, PREFECT_API_URL=url)
    line = one_clear_line(cli("run", "--store", str(tmp_path / "s"), env=env), url, "PREFECT_API_URL")
    assert "prefect server start" in line
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PIPELINE_SERVER=url)
    one_clear_line(cli("run", "--store", str(tmp_path / "s"), env=env), url, "PIPELINE_SERVER")


@pytest.mark.slow
def test_missing_data_file(tmp_path):
    for command, run in (("run", cli), ("status", in_process)):  # a subprocess: Prefect's own logging too
        one_clear_line(run(command, "--set", "data.source=nope", "--store", str(tmp_path / "s")),
                       "nope.csv not found", "'breast_cancer', 'synthetic'")  # fmt: skip


@pytest.mark.slow
def test_no_csv_left_suggests_synthetic_and_how_to_restore(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "flows", project / "flows")
    shutil.copy(ROOT / "params.toml", project / "params.toml")
    (project / "data" / "raw").mkdir(parents=True)  # the shipped CSV deleted
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(project), str(ROOT)]))
    line = one_clear_line(cli("run", "--store", str(tmp_path / "s"), cwd=project, env=env), "breast_cancer.csv")
    assert "'synthetic'" in line and "git checkout" in line


def _filled_store(path: Path) -> Store:
    store = Store(path)
    StageCache(store).wrap(lambda n: list(range(n)), name="a_stage_with_a_rather_long_descriptive_name")(10)
    return store


def _read_only(path: Path) -> tuple[str, ...]:
    """A command prefix that runs the CLI with ``path`` read-only: a read-only bind mount in a
    private mount namespace when root (root ignores permission bits), else chmod."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return ()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount the store read-only")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m not permitted: {probe.stderr.decode().strip()}")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ("unshare", "-m", "sh", "-c", script, str(path))


@pytest.mark.slow
def test_read_only_store_can_be_inspected(tmp_path):
    path = tmp_path / "store"
    store = _filled_store(path)
    key = next(store.manifests()).key
    ro = _read_only(path)
    assert cli("run", "--store", str(path), "--flow", "tests.cli.flows:chain", prefix=ro).returncode == 1  # writes
    listing = cli("ls", "--store", str(path), prefix=ro)
    assert listing.returncode == 0, listing.stderr
    assert key in listing.stdout  # the full key: output is not a terminal, nothing is cut
    shown = cli("show", key[5:15], "--store", str(path), prefix=ro)
    assert shown.returncode == 0 and key in shown.stdout, shown.stderr
    status = cli("status", "--flow", "tests.cli.flows:chain", "--store", str(path), prefix=ro)
    assert status.returncode == 0 and "prep" in status.stdout, status.stderr


def test_read_only_commands_never_create_a_store(tmp_path):
    for command in (["ls"], ["show", "x"], ["verify"], ["gc", "--dry-run"]):
        one_clear_line(in_process(*command, "--store", str(tmp_path / "typo")), f"no store at {tmp_path / 'typo'}")
    status = in_process("status", "--flow", "tests.cli.flows:chain", "--store", str(tmp_path / "typo"))
    assert status.returncode == 0 and "the first run computes every stage" in status.stderr  # before a first run
    assert status.stdout.count("no result of stage") == 4
    assert not (tmp_path / "typo").exists()


def test_library_warnings_are_one_line(tmp_path):
    path = tmp_path / "store"
    _filled_store(path)
    manifest = next((path / "stages").rglob("*.json"))
    manifest.write_text("{ torn")
    done = cli("ls", "--store", str(path))
    assert done.returncode == 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("warning: manifest "), done.stderr
    assert "warnings.warn" not in done.stderr
