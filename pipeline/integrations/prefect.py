"""Prefect integration: ``@stage``, ``StageCachePolicy`` and the run a stage reports to.

``@stage`` makes a Prefect task whose body goes through :class:`~pipeline.cache.StageCache`.
On a hit the outputs are served lazily from our store (:mod:`pipeline.lazy`: read on
first use) and the task run ends in a ``Completed`` state named ``Cached``; on a miss the
body runs, its outputs are persisted and committed, and the task run ends ``Completed``.
Prefect's own result persistence and cache keys are off for stages: our store owns the
bytes. Each stage commits on its own.

Called outside a flow run, a stage is just a cached function (no Prefect involved);
inside :func:`pipeline.plan.dry_run` it plans instead of running. The store, the forced
stages and the dry-run plan come from the run context (:mod:`pipeline.context`), which
``submit``/``map`` ship with each call to the task runner's workers.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
import uuid
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, TypeVar

from prefect import Task, unmapped
from prefect.cache_policies import NO_CACHE, CachePolicy, CompoundCachePolicy, Inputs
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture, PrefectFutureList
from prefect.states import Completed, State
from prefect.utilities.annotations import allow_failure, quote
from prefect.utilities.callables import expand_mapping_parameters, get_call_parameters

from .. import keys
from ..cache import CachedStage, StageCache
from ..context import carry, current, current_store, use_store
from ..errors import PipelineError
from ..fingerprint import fingerprint
from ..plan import plan_call
from ..runs import record
from ..store import Manifest, Store
from .commit_join import current_group, open_flow_run
from .dask_runner import dask_map, is_dask
from .dask_worker import leave_the_pool
from .liveness import untagged
from .run_artifact import watch_run

R = TypeVar("R")


def current_run_id() -> str | None:
    """The run stages report to: the run context's, else the Prefect flow run's."""
    run_id = current().run_id
    if run_id is not None:
        return run_id
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        return str(ctx.flow_run.id)
    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run.flow_run_id is not None:
        return str(ctx.task_run.flow_run_id)
    return None


@dataclass(frozen=True)
class _StageSpec:
    fn: Callable[..., Any]
    name: str
    version: str | None
    ignore: tuple[str, ...]

    def bind(self, store: Store, run_id: str | None = None) -> CachedStage[Any]:
        return StageCache(store, run_id=run_id).wrap(self.fn, name=self.name, version=self.version, ignore=self.ignore)


class PlannedFuture(PrefectFuture):
    """What ``.submit()`` / ``.map()`` of a stage return in a dry run: a finished future whose
    result is the call's planned output."""

    def __init__(self, value: Any) -> None:
        self._task_run_id = uuid.uuid4()
        self._value = value
        self._final_state = Completed(data=value)

    @property
    def task_run_id(self) -> uuid.UUID:
        return self._task_run_id

    @property
    def state(self) -> State:
        return self._final_state

    def wait(self, timeout: float | None = None) -> None:
        return None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        return self._value

    def add_done_callback(self, fn: Callable[[PrefectFuture], None]) -> None:
        fn(self)


def _resolve_planned(value: Any) -> Any:
    """Arguments of a dry-run call with planned futures replaced by their planned values."""
    if isinstance(value, PlannedFuture):
        return value._value
    if isinstance(value, (allow_failure, quote)):
        return _resolve_planned(value.unwrap())
    if isinstance(value, unmapped):
        return unmapped(_resolve_planned(value.value))
    if type(value) is tuple:
        return tuple(_resolve_planned(v) for v in value)
    if type(value) is list or isinstance(value, PrefectFutureList):
        return [_resolve_planned(v) for v in value]
    return value


class StageTask(Task):
    """A Prefect task whose body is served from the checkpoint store when its key is unchanged."""

    def _plan(self, plan: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        spec: _StageSpec = self.__pipeline_stage__
        args = tuple(_resolve_planned(a) for a in args)
        kwargs = {k: _resolve_planned(v) for k, v in kwargs.items()}
        return plan_call(spec.bind(current_store()), plan, args, kwargs)

    # In a dry run, .submit() / .map() plan like a call and return planned futures. Otherwise a
    # submitted or mapped call may run in another process (ProcessPoolTaskRunner, Dask), where
    # the run context does not exist: the task runner ships a copy of this task whose body
    # carries the context of the submitting caller.
    def submit(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        plan = current().plan
        if plan is None:
            watch_run(current_run_id())  # the run's record and artifact when it ends
            open_flow_run()  # stages run in this process may commit in the background
            shipped = self._carrying_context()
            self._leave_dask_pool()
            with untagged():
                return Task.submit(shipped, *args, return_state=return_state, wait_for=wait_for, **kwargs)
        future = PlannedFuture(self._plan(plan, args, kwargs))
        return future.state if return_state else future

    def map(self, *args: Any, return_state: bool = False, wait_for: Any = None, deferred: bool = False,
            **kwargs: Any) -> Any:  # fmt: skip
        plan = current().plan
        if plan is None:
            watch_run(current_run_id())
            open_flow_run()
            shipped = self._carrying_context()
            self._leave_dask_pool()
            with untagged():
                return Task.map(
                    shipped, *args, return_state=return_state, wait_for=wait_for, deferred=deferred, **kwargs
                )
        parameters = get_call_parameters(self.fn, args, kwargs, apply_defaults=False)
        parameters = {k: _resolve_planned(v) for k, v in parameters.items()}
        try:
            calls = expand_mapping_parameters(self.fn, parameters)
        except PipelineError:  # mapped over a stale output: how many calls is unknown until it runs
            calls = [{k: v.value if isinstance(v, unmapped) else v for k, v in parameters.items()}]
        futures = PrefectFutureList(PlannedFuture(self._plan(plan, (), call)) for call in calls)
        return [f.state for f in futures] if return_state else futures

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        spec: _StageSpec = self.__pipeline_stage__
        plan = current().plan
        if plan is not None:
            return self._plan(plan, args, kwargs)
        if FlowRunContext.get() is None and TaskRunContext.get() is None and not return_state:
            return spec.bind(current_store())(*args, **kwargs)  # no flow: just a cached function
        watch_run(current_run_id())
        open_flow_run()
        with untagged():  # the liveness tags are for the flow run only
            result = super().__call__(*args, return_state=return_state, wait_for=wait_for, **kwargs)
        if not return_state and isinstance(result, State):
            return result.result()  # the Cached state holds the (lazy) value in memory: no I/O
        return result

    def _leave_dask_pool(self) -> None:
        # Submitted from a stage running on a Dask worker, to that cluster: the waits that follow
        # (result(), wait(), as_completed) must not hold the worker's thread, or with one worker,
        # or every worker running such a stage, the submitted stages never run.
        flow_run = FlowRunContext.get()
        if TaskRunContext.get() is not None and flow_run is not None and is_dask(flow_run.task_runner):
            leave_the_pool(f"stage {self.__pipeline_stage__.name!r}")

    def _carrying_context(self) -> StageTask:
        shipped = copy.copy(self)
        shipped.fn = carry(self.fn)
        return shipped

    def with_options(self, *args: Any, **kwargs: Any) -> StageTask:
        """Same as Task.with_options, but the copy stays a stage."""
        new = super().with_options(*args, **kwargs)
        new.__class__ = StageTask
        new.__pipeline_stage__ = self.__pipeline_stage__
        return new


def _body(spec: _StageSpec) -> Callable[..., Any]:
    @functools.wraps(spec.fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        store = current_store()
        run_id = current_run_id()
        cached = spec.bind(store, run_id)
        group = current_group()
        if group is not None:  # in the flow run's process: the flow run joins the commit
            cached.defer_commits(group)
        outcome = cached.call(*args, **kwargs)
        if run_id is not None:
            if outcome.pending is not None:  # its event once it is committed (in call order)
                outcome.pending.then(functools.partial(_record_committed, store, run_id, outcome, time.time()))
            else:
                record(store, run_id, outcome)
        if outcome.hit:
            return Completed(
                name="Cached", data=outcome.value, message=f"served from {store.url} ({outcome.manifest.key})"
            )
        return outcome.value

    return body


def _record_committed(store: Store, run_id: str, outcome: Any, finished: float, manifest: Manifest) -> None:
    """The run event of a stage whose result the commit thread just committed."""
    try:
        record(store, run_id, dataclasses.replace(outcome, manifest=manifest, pending=None), when=finished)
    except Exception as e:  # informational: the result is committed all the same
        warnings.warn(f"could not record stage {manifest.stage!r} in run {run_id}: {e}", stacklevel=1)


def stage(
    fn: Callable[..., R] | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    ignore: Iterable[str] = (),
    **task_kwargs: Any,
) -> Any:
    """Make ``fn`` a cached pipeline stage (a Prefect task). Usable bare or with options:

    ``@stage``, ``@stage(name="clean", version="2", ignore=["logger"], retries=2)``.
    ``version`` pins the code part of the key; ``ignore`` leaves arguments out of it;
    other keyword arguments go to ``prefect.task``.
    """

    def decorate(f: Callable[..., R]) -> StageTask:
        spec = _StageSpec(f, name or f.__name__, version, tuple(ignore))
        task_kwargs.setdefault("name", spec.name)
        task_kwargs["persist_result"] = False  # our store owns the bytes
        task_kwargs["cache_policy"] = NO_CACHE  # and the key
        t = StageTask(fn=_body(spec), **task_kwargs)
        t.__pipeline_stage__ = spec
        return t

    return decorate(fn) if fn is not None else decorate


@dataclass
class StageCachePolicy(CachePolicy):
    """A Prefect cache policy keyed by content fingerprints and helper-aware code keys.

    For tasks that keep Prefect's own result persistence::

        @task(cache_policy=StageCachePolicy() - "logger", persist_result=True)

    It behaves as Prefect's policies do: ``- "arg"`` leaves an argument out of the key (as
    ``Inputs - "arg"``), ``+`` composes it with other policies (``+ RUN_ID``), and
    ``key_storage`` / ``isolation_level`` / ``lock_manager`` / ``configure()`` are Prefect's.
    Subtract before composing or put this policy first: ``RUN_ID + StageCachePolicy()``
    builds Prefect's own compound, whose ``-`` only reaches Prefect's ``Inputs``.
    """

    version: str | None = None
    exclude: list[str] = field(default_factory=list)

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None, **kwargs: Any
    ) -> str:
        task = task_ctx.task
        code = keys.code_key(task.fn, self.version).digest
        arguments = {
            k: fingerprint(v, name=f"argument {k!r} of task {task.name!r}")
            for k, v in (inputs or {}).items()
            if k not in self.exclude
        }
        return keys.task_key(task.name, code, arguments)

    def __sub__(self, other: str) -> StageCachePolicy:
        if not isinstance(other, str):
            raise TypeError("Can only subtract strings from key policies.")
        return replace(self, exclude=[*self.exclude, other])

    def __add__(self, other: CachePolicy) -> CachePolicy:
        combined = super().__add__(other)  # Prefect's checks: one key storage, one isolation level
        return _StageCompound.of(combined) if isinstance(combined, CompoundCachePolicy) else combined


@dataclass
class _StageCompound(CompoundCachePolicy):
    """A compound holding a StageCachePolicy: ``- "arg"`` reaches it too."""

    @classmethod
    def of(cls, compound: CompoundCachePolicy) -> _StageCompound:
        return cls(
            policies=list(compound.policies),
            key_storage=compound.key_storage,
            isolation_level=compound.isolation_level,
            lock_manager=compound.lock_manager,
        )

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return _StageCompound.of(super().__add__(other))

    def __sub__(self, other: str) -> CachePolicy:
        if not isinstance(other, str):
            raise TypeError("Can only subtract strings from key policies.")
        policies = [p - other if isinstance(p, (StageCachePolicy, Inputs)) else p for p in self.policies]
        return replace(self, policies=policies)


def prefect_map(**task_kwargs: Any) -> Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]:
    """A ``map_fn`` for :func:`pipeline.tuning.tune` that runs calls side by side on the
    current flow's task runner: ``tune(..., parallel=4, map_fn=prefect_map())`` inside a flow.

    On threads or processes each call is a Prefect task run; on a DaskTaskRunner each is a
    plain Dask task on its cluster (:func:`pipeline.integrations.dask_runner.dask_map`; of
    ``task_kwargs`` only ``retries`` applies there), which spares each trial Prefect's task
    engine on the worker."""
    from prefect import task

    task_kwargs.setdefault("name", "trial")
    task_kwargs["persist_result"] = False
    task_kwargs["cache_policy"] = NO_CACHE

    def map_fn(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
        flow_run = FlowRunContext.get()
        if flow_run is None:
            return [fn(*args) for args in calls]
        shipped = carry(fn)  # the run context (store, force, lease) reaches trials in worker processes
        if is_dask(flow_run.task_runner):
            return dask_map(flow_run.task_runner, shipped, calls, retries=task_kwargs.get("retries") or 0)
        run = task(_apply, **task_kwargs)
        futures = [run.submit(shipped, args) for args in calls]
        return [f.result() for f in futures]

    return map_fn


def _apply(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


__all__ = [
    "stage",
    "StageTask",
    "StageCachePolicy",
    "prefect_map",
    "use_store",
    "current_store",
    "current_run_id",
]
