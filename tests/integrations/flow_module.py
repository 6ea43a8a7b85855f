"""A real flow module on disk that tests write, edit and re-import (fixture ``flow_module``)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
import types
import uuid
from pathlib import Path


class FlowModule:
    """``source`` as module ``toyflow_<hex>`` in ``folder``; its stages log to ``STAGE_LOG``."""

    def __init__(self, folder: Path, source: str) -> None:
        self.name = f"toyflow_{uuid.uuid4().hex[:8]}"
        self.folder = folder
        self.path = folder / f"{self.name}.py"
        self.log = folder / "stages.log"
        os.environ["STAGE_LOG"] = str(self.log)
        self.write(source)

    def write(self, source: str) -> None:
        self.path.write_text(textwrap.dedent(source))
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()

    def ref(self, func: str = "toy") -> str:
        if str(self.folder) not in sys.path:
            sys.path.insert(0, str(self.folder))
        importlib.import_module(self.name)
        return f"{self.name}:{func}"

    def module(self) -> types.ModuleType:
        """The module, imported (its folder put on ``sys.path``)."""
        return importlib.import_module(self.ref().partition(":")[0])

    def executed(self) -> list[str]:
        """Stage bodies executed since the last call (and reset the log)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().split()
        self.log.unlink()
        return lines

    # -- a CLI run of it in another process (to be killed) -----------------------------
    def cli(self, flow: str, store: Path, *options: str) -> list[str]:
        """The command line of ``pipeline run`` of this module's ``flow`` on ``store``."""
        command = [sys.executable, "-m", "pipeline", "run"]
        return [*command, "--flow", f"{self.name}:{flow}", "--store", str(store), *options]

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The environment of that command: this module's folder importable, and ``extra``."""
        return dict(os.environ, PYTHONPATH=f"{self.folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra)

    def start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """``cmd`` started in the folder, in a session of its own (for ``os.killpg``), output piped."""
        return subprocess.Popen(
            cmd, env=env, cwd=self.folder, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def wait_logged(self, stage: str, proc: subprocess.Popen, deadline: float, never: str, poll: float) -> None:
        """Until ``stage``'s body has logged, while ``proc`` runs; ``never``: the failure by ``deadline``."""
        while stage not in (self.log.read_text().split() if self.log.exists() else []):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, never
            time.sleep(poll)

    def forget(self) -> None:
        """Out of ``sys.modules``, its folder off ``sys.path``."""
        sys.modules.pop(self.name, None)
        if str(self.folder) in sys.path:
            sys.path.remove(str(self.folder))
