"""Run or plan a flow by reference (``module:function``): what ``python -m pipeline run`` and
``status`` do, callable from Python too."""

from __future__ import annotations

import importlib
import inspect
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..context import Force, run_context
from ..errors import ConfigError, PipelineError
from ..params import ParamSchema
from ..plan import StageStatus, dry_run
from ..runs import previous_results, summarise
from ..store import Store
from ..store.locks import Leasing
from .dask_runner import on_runner
from .liveness import tagged
from .training_artifacts import configured_tracking


def load_flow(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` (a Prefect flow or a plain function)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"flow reference {ref!r} must look like module:function (e.g. flows.ml_pipeline:ml_pipeline)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot import flow module {module_name!r} ({e}); run from the project root") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no flow {attr!r}") from None


def _arguments(fn: Callable[..., Any], params: dict[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    target = getattr(fn, "fn", fn)
    names = inspect.signature(target).parameters
    if "params" in names:
        return {"params": params}
    ParamSchema.from_signature(target).check(params, f"flow {target.__name__}", complete=False)
    return dict(params)


@contextmanager
def _quiet_engine() -> Iterator[None]:
    """No flow heartbeat thread for interactive runs: it is joined in 1 s steps when the flow
    ends (~1 s per run) and only serves crash detection of deployment runs. The settings are
    copied with that one field changed (None is a valid value of it): ``temporary_settings``
    re-validates every setting from all its sources (~0.1 s of a warm CLI run)."""
    from prefect.context import SettingsContext, get_settings_context

    context = get_settings_context()
    settings = context.settings
    if settings.flows.heartbeat_frequency is None:
        yield
        return
    quiet = settings.model_copy(update={"flows": settings.flows.model_copy(update={"heartbeat_frequency": None})})
    with SettingsContext(profile=context.profile, settings=quiet):
        yield


def _is_json(value: Any) -> bool:
    """True for values JSON holds as they are: None, bool, int, float, str, and lists and
    str-keyed dicts of those (not tuples, which an encoder turns into lists)."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) is list:
        return all(_is_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    return False


@contextmanager
def _plain_parameters(flow: Any) -> Iterator[None]:
    """Prefect serialises a flow run's parameters with FastAPI's ``jsonable_encoder``, and
    importing it (FastAPI, its routing and OpenAPI models) was ~0.25 s of a warm CLI run.
    Parameters that are JSON already encode to themselves: they go to the API as they are;
    any other value goes through Prefect's own ``serialize_parameters``."""
    prefect_way = flow.serialize_parameters

    def serialize_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
        if all(_is_json(v) for v in parameters.values()):
            return dict(parameters)
        return prefect_way(parameters)

    flow.serialize_parameters = serialize_parameters  # this flow object, for this run only
    try:
        yield
    finally:
        del flow.serialize_parameters


@dataclass(frozen=True)
class RunReport:
    run_id: str
    status: str
    result: Any
    summary: dict[str, Any]


def run_flow(
    ref: str,
    params: dict[str, Any] | None,
    store: Store,
    *,
    force: Iterable[str] = (),
    lease: bool | None = None,
    runner: str = "threads",
    dask_address: str | None = None,
) -> RunReport:
    """Run a flow with stages on ``store``; fold its stage events into a run record.

    The run's context (store, forced stages, leases on or off — None: as configured; for a
    plain function also the run id, which for a Prefect flow is its flow run's) is set once
    here, for every stage of the run, and reaches the task runner's workers with each call.
    ``runner="dask"``: submitted stages and search trials run on a dask.distributed cluster
    (``dask_address``, else a LocalCluster of 2 worker processes), as many trials at once as
    it has worker threads."""
    flow = load_flow(ref)
    kwargs = _arguments(flow, params)
    flow, parallel = on_runner(flow, runner, dask_address or None)
    t0 = time.perf_counter()
    state = None
    forced = tuple(force)
    is_prefect = hasattr(flow, "fn")
    run_id = None if is_prefect else uuid.uuid4().hex
    force_ = Force.of(forced) if forced else None
    leasing = None if lease is None else Leasing() if lease else Leasing.off()
    context = run_context(store=store, run_id=run_id, force=force_, lease=leasing, parallel=parallel)
    with context, _quiet_engine(), tagged(), configured_tracking():  # tagged: liveness.py
        if is_prefect:  # a Prefect flow: run it and keep its final state
            with _plain_parameters(flow):
                state = flow(**kwargs, return_state=True)
            run_id = str(state.state_details.flow_run_id)
            status = state.type.value.lower()
        else:
            status = "completed"
            try:
                result = flow(**kwargs)
            except BaseException as e:  # the run record says so (retention's FailedRuns), then it propagates
                ended = "failed" if isinstance(e, Exception) else "crashed"
                summarise(store, run_id, ended, time.perf_counter() - t0, flow=ref, params=kwargs)
                raise
    try:
        summary = summarise(store, run_id, status, time.perf_counter() - t0, flow=ref, params=kwargs)
    except PipelineError:  # the store went down: the flow's own error, if it failed, says it first
        if state is not None and isinstance(failure := state.result(raise_on_failure=False), PipelineError):
            raise failure from None
        raise
    if state is not None:
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            summary["error"] = f"{type(result).__name__}: {result}"
            if isinstance(result, PipelineError):
                raise result
            raise PipelineError(f"flow run {run_id} failed: {type(result).__name__}: {result}") from result
    return RunReport(run_id, status, result, summary)


def plan_flow(ref: str, params: dict[str, Any] | None, store: Store) -> list[StageStatus]:
    """Each stage of a flow as cached or stale (with reasons), without running anything."""
    flow = load_flow(ref)
    kwargs = _arguments(flow, params)
    with run_context(store=store), dry_run(previous=previous_results(store, ref)) as plan:
        try:
            getattr(flow, "fn", flow)(**kwargs)
        except PipelineError:
            raise
        except Exception as e:  # flow code between the stages met a planned value, or a plain task
            raise PipelineError(
                f"status: the dry run of {ref} stopped after {len(plan.statuses)} stage call(s) at "
                f"{type(e).__name__}: {e} (a dry run plans @stage calls only; other flow code runs for real "
                "on their planned outputs)"
            ) from e
    return plan.statuses
