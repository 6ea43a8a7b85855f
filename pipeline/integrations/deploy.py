"""Scheduled deployments: serve a flow by reference on a cron or interval schedule.

``python -m pipeline serve`` and :func:`serve_flow` create a deployment of the flow through
Prefect's ``flow.serve`` and run its scheduled runs in this process's runner (each run a
subprocess that inherits the store). Runs need a real Prefect server: the ephemeral one
runs no scheduler, so no scheduled run would ever start. SIGTERM stops the runner
gracefully (in-flight runs cancelled, the schedule paused); ``serve_flow`` then returns.

For ``prefect deploy`` with a work pool see ``prefect.yaml`` at the project root.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

from ..context import carry, run_context
from ..errors import ConfigError
from ..store import Store
from .dask_runner import on_runner
from .prefect import use_store
from .runner import _arguments, load_flow


@dataclass(frozen=True)
class Schedule:
    """When the served deployment runs (no schedule: only when triggered)."""

    def serve_args(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Cron(Schedule):
    """A cron expression, e.g. ``Cron("0 3 * * *")`` (03:00 every day), in ``timezone``."""

    expression: str
    timezone: str | None = None

    def __post_init__(self) -> None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=self.expression, timezone=self.timezone)
        except Exception as e:  # pydantic's ValidationError: the expression or the zone is wrong
            raise ConfigError(f"--cron {self.expression!r} is not a valid cron schedule: {_first_line(e)}") from None

    def serve_args(self) -> dict[str, Any]:
        from prefect.client.schemas.schedules import CronSchedule

        return {"schedule": CronSchedule(cron=self.expression, timezone=self.timezone)}


@dataclass(frozen=True)
class Interval(Schedule):
    """Every ``seconds`` seconds."""

    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise ConfigError(f"--interval must be a number of seconds > 0, not {self.seconds!r}")

    def serve_args(self) -> dict[str, Any]:
        return {"interval": self.seconds}


def schedule_of(cron: str | None, interval: float | None) -> Schedule:
    """The schedule the CLI options name (at most one of them)."""
    if cron is not None and interval is not None:
        raise ConfigError("give --cron or --interval, not both")
    if cron is not None:
        return Cron(cron)
    if interval is not None:
        return Interval(interval)
    return Schedule()


def require_server(api_url: str | None) -> str:
    """The API URL serving talks to; refuses Prefect's ephemeral server (no scheduler)."""
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise ConfigError(
            "serving needs a Prefect server with a scheduler, and the ephemeral one runs none: "
            "leave server = 'auto' (a local `prefect server start`), or set PIPELINE_SERVER / "
            "PREFECT_API_URL to a server's API URL"
        )
    return url


def serve_flow(
    ref: str,
    params: dict[str, Any] | None,
    store: Store,
    *,
    schedule: Schedule | None = None,
    name: str | None = None,
    limit: int | None = None,
    runner: str = "threads",
    dask_address: str | None = None,
) -> None:
    """Deploy ``module:function`` with ``params`` as its default parameters and serve its
    runs on ``store`` until SIGTERM / Ctrl-C. Blocks.

    ``runner="dask"``: each run's submitted stages and search trials run on the Dask cluster
    at ``dask_address``, else on one LocalCluster of 2 worker processes started here for as
    long as serving lasts (not one per run), closed when serving ends."""
    from prefect.deployments.runner import EntrypointType

    flow = load_flow(ref)
    if not hasattr(flow, "serve"):
        raise ConfigError(f"{ref} is not a Prefect flow (decorate it with @flow to serve it)")
    schedule = schedule or Schedule()
    if not isinstance(schedule, Schedule):
        raise ConfigError(f"schedule= takes Cron(...), Interval(...) or Schedule(), not {schedule!r}")
    # Each scheduled run is a subprocess of Prefect's runner that gets the flow object
    # pickled. PIPELINE_STORE is the store setting itself (config.py), set here for this
    # serving process and its runs only, and restored when serving ends; what the run context
    # adds for the runner (how many trials at once) travels with the flow's function.
    with use_store(store), _environment(PIPELINE_STORE=store.url), _on(flow, runner, dask_address) as flow:
        flow.serve(
            name=name or flow.name,
            parameters=_arguments(flow, params) or None,
            entrypoint_type=EntrypointType.MODULE_PATH,  # flows import as a package from the project root
            pause_on_shutdown=True,
            limit=limit,
            print_starting_message=True,
            **schedule.serve_args(),
        )


@contextlib.contextmanager
def _on(flow: Any, runner: str, address: str | None) -> Iterator[Any]:
    """The flow to serve on ``runner``; for Dask without an address, on a LocalCluster that
    lives as long as this block."""
    with contextlib.ExitStack() as stack:
        if runner == "dask" and address is None:
            from .dask_runner import DEFAULT_WORKERS, local_cluster

            cluster = stack.enter_context(
                local_cluster(n_workers=DEFAULT_WORKERS, processes=True, threads_per_worker=1, dashboard_address=None)
            )
            address = cluster.scheduler_address
        served, parallel = on_runner(flow, runner, address)
        if parallel > 1:
            served = served.with_options()  # a copy: the imported flow object stays as it is
            with run_context(parallel=parallel):
                served.fn = carry(served.fn)  # each run's stages and searches see the runner's width
        yield served


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


__all__ = ["Schedule", "Cron", "Interval", "schedule_of", "require_server", "serve_flow"]
