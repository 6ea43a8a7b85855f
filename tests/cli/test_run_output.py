"""What ``python -m pipeline run`` prints: Prefect's lines about the flow and its task runs,
the run table; not two INFO lines per run about the run-record hook the library adds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli.test_cli import ROOT


@pytest.mark.usefixtures("prefect_api")
def test_a_run_logs_nothing_about_its_run_record_hook(tmp_path):
    cmd = [sys.executable, "-m", "pipeline", "run", "--flow", "tests.cli.flows:chain", "--store", str(tmp_path / "s")]
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO")  # the tests' default is WARNING
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "0 cached, 4 computed" in done.stdout, said[-3000:]
    assert "Beginning flow run" in said and "Finished in state Completed()" in said  # Prefect's own lines stay
    assert "hook" not in said.lower(), [line for line in said.splitlines() if "hook" in line.lower()]
