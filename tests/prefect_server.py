"""A real Prefect server on 127.0.0.1 for the test session (``prefect server start``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator

from pipeline.integrations.server import healthy, spawn_server


@contextmanager
def prefect_server(url: str, home: str, timeout: float = 120.0) -> Iterator[str]:
    """Run ``prefect server start`` for ``url`` (http://127.0.0.1:PORT/api) with ``home``."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    log_path = os.path.join(home, "server.log")
    proc = spawn_server(port, home, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path) as f:
                    raise RuntimeError(f"prefect server did not start: {f.read()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)
