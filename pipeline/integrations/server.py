"""Which Prefect API a CLI run talks to.

Prefect with no ``PREFECT_API_URL`` starts a throwaway server inside every process, which
costs seconds per run. The default here (``server = "auto"``) instead reuses one local
``prefect server start`` on 127.0.0.1 kept alive between runs: started on first use,
detached, recorded in ``$PREFECT_HOME/pipeline-server.json``, stopped with
``python -m pipeline server stop``. It serves the Prefect UI, so the "View at …" link a run
prints opens it. ``server = "ephemeral"`` keeps Prefect's default; a URL uses that server.
An explicit ``PREFECT_API_URL`` always wins; nothing answering there is one clear error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, PipelineError

START_TIMEOUT = 90.0


def _prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def _state_file() -> Path:
    return _prefect_home() / "pipeline-server.json"


def healthy(api_url: str, timeout: float = 0.5) -> bool:
    """True when a Prefect API answers ``/health`` at ``api_url``."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def _reachable(api_url: str, source: str, timeout: float = 3.0) -> str:
    """``api_url`` when something answers there over HTTP (any status: a cloud API may want a
    key for /health); else one ConfigError saying which URL and how to start or switch."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return api_url
    except urllib.error.HTTPError:
        return api_url
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"no Prefect API answers at {api_url} (from {source}: {reason}); start it (`prefect server start`), "
            "or unset it to use the local server `python -m pipeline run` starts itself "
            "(or PIPELINE_SERVER=ephemeral)"
        ) from None


def serves_ui(api_url: str, timeout: float = 0.5) -> bool:
    """True when the server of ``api_url`` answers a browser's request for its UI."""
    base = api_url.rstrip("/").removesuffix("/api")
    request = urllib.request.Request(f"{base}/", headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalServer:
    api_url: str
    pid: int
    log: str
    ui: bool = False
    """Started serving the UI (by this version); state files of older ones lack it."""

    @classmethod
    def read(cls) -> LocalServer | None:
        try:
            return cls(**json.loads(_state_file().read_text()))
        except (OSError, ValueError, TypeError):
            return None


def spawn_server(port: int, home: str | os.PathLike, log: str | os.PathLike, *, ui: bool = True) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port`` with ``home`` as PREFECT_HOME, detached
    (its own session, so it outlives the caller), output appended to ``log``. With ``ui``
    (the default) it serves the Prefect UI at http://127.0.0.1:``port``/, so the "View at"
    link every flow run prints opens the run."""
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_API_URL=_api_url(port))  # the UI's own API calls (default: port 4200)  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--ui" if ui else "--no-ui", "--analytics-off"]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def start_local_server(console: Any = None, port: int | None = None) -> tuple[LocalServer, Callable[[], LocalServer]]:
    """Start ``prefect server start`` detached on 127.0.0.1 (a free port by default); return
    a function that waits until it answers (so the caller can do other work meanwhile)."""
    home = _prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = _api_url(port)
    log = home / "pipeline-server.log"
    if console is not None:
        console.print(
            f"starting a local Prefect server on {api_url} (kept for later runs; "
            "`python -m pipeline server stop` stops it)",
            highlight=False,
        )
    proc = spawn_server(port, home, log, ui=True)
    server = LocalServer(api_url, proc.pid, str(log), ui=True)

    def wait() -> LocalServer:
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(api_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise PipelineError(
                    f"the local Prefect server did not start (see {log}); "
                    "set PIPELINE_SERVER=ephemeral to use Prefect's in-process server"
                )
            time.sleep(0.1)
        _state_file().write_text(json.dumps(server.__dict__))
        return server

    return server, wait


def stop_local_server() -> LocalServer | None:
    """Stop the background server this tool started, if one is running."""
    server = LocalServer.read()
    if server is None:
        return None
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    _state_file().unlink(missing_ok=True)
    return server


def ensure_server(mode: str = "auto", console: Any = None) -> Callable[[], str | None]:
    """Point Prefect at a server per ``mode``; call before Prefect is imported. Returns a
    function to call after importing Prefect: it waits for a server being started and
    returns the API URL (None in ephemeral mode)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return lambda: _reachable(url, "PREFECT_API_URL")
    if mode == "ephemeral":
        return lambda: None
    if mode.startswith(("http://", "https://")):
        os.environ["PREFECT_API_URL"] = mode
        return lambda: _reachable(mode, "the server setting (PIPELINE_SERVER / [tool.pipeline] server)")
    if mode != "auto":
        raise ConfigError(f"server setting {mode!r} is not 'auto', 'ephemeral' or an http(s) URL")
    server = LocalServer.read()
    if server is not None and healthy(server.api_url):
        os.environ["PREFECT_API_URL"] = server.api_url
        if console is not None and not server.ui and not serves_ui(server.api_url):  # one probe less per run
            console.print(
                f"note: the local server at {server.api_url} serves no UI (started by an older version); "
                "`python -m pipeline server stop` and the next run starts one that does",
                highlight=False,
            )
        return lambda: server.api_url
    port = free_port()
    os.environ["PREFECT_API_URL"] = _api_url(port)
    return lambda: start_local_server(console, port)[1]().api_url  # started only once it is needed
