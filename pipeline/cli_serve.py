"""``python -m pipeline serve``: the flow as a scheduled deployment (Prefect's ``flow.serve``).

A command of the main app (registered by the last line of ``cli.py``); the logic is in
``pipeline.integrations.deploy``.
"""

from __future__ import annotations

from typing import Optional

import typer

from .cli import DASK_ADDRESS_OPTION, RUNNER_OPTION, _errors, _open, _params, app, err
from .config import Settings


@app.command("serve")
@_errors
def serve(
    cron: Optional[str] = typer.Option(None, "--cron", help="Run on this cron schedule, e.g. '0 3 * * *'."),
    interval: Optional[float] = typer.Option(None, "--interval", help="Run every SECONDS seconds."),
    flow: Optional[str] = typer.Option(None, "--flow", help="Flow to serve, module:function."),
    sets: list[str] = typer.Option([], "--set", help="Override a parameter: section.key=value."),
    params: Optional[str] = typer.Option(None, "--params", help="Parameter file (TOML)."),
    store: Optional[str] = typer.Option(None, "--store", help="Store URL or path."),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default: the flow's name)."),
    limit: int = typer.Option(1, "--limit", help="At most this many runs at once (late runs wait)."),
    runner: Optional[str] = RUNNER_OPTION,
    dask_address: Optional[str] = DASK_ADDRESS_OPTION,
) -> None:
    """Serve the flow as a deployment: scheduled runs until SIGTERM or Ctrl-C. With --runner dask
    and no address, one LocalCluster serves every run (started here, closed on SIGTERM)."""
    from .integrations.server import ensure_server

    runner = "dask" if dask_address and runner is None else runner  # an address means Dask, as for run
    settings = Settings.load(store=store, flow=flow, runner=runner, dask_address=dask_address)
    server_ready = ensure_server(settings.server, err)  # before Prefect is imported: it reads the URL then
    from .integrations.deploy import require_server, schedule_of, serve_flow

    schedule = schedule_of(cron, interval)
    require_server(server_ready())
    serve_flow(settings.flow, _params(params, sets, settings), _open(settings), schedule=schedule, name=name,
               limit=limit, runner=settings.runner, dask_address=settings.dask_address or None)  # fmt: skip
