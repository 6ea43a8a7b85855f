"""Submitted stages on a ``dask.distributed`` cluster, through prefect-dask's DaskTaskRunner.

    flow = on_dask(my_flow)                           # a LocalCluster of 2 worker processes
    flow = on_dask(my_flow, "tcp://scheduler:8786")   # an existing cluster
    with use_store("s3://bucket/ckpts"):              # workers without a shared disk: S3
        flow(...)

Stages called with ``.submit()`` / ``.map()`` run on the workers; each computes its key and
commits to the store on its own, so results equal the sequential run's and a stage already
committed is a hit on any worker. Search trials run through ``prefect_map()`` go to the
workers as plain Dask tasks (:func:`dask_map`): no Prefect task engine per trial on the
workers, where it cost ~0.1-0.7 s a trial; the search's own stage is the task run the UI shows,
its trials are in the store and the search's trial table artifact. ``pip install -e ".[dask]"``.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from typing import Any, Callable

from ..errors import ConfigError
from .dask_worker import off_the_pool, worker_thread

DEFAULT_WORKERS = 2


def dask_task_runner(address: str | None = None, *, workers: int = DEFAULT_WORKERS) -> Any:
    """A DaskTaskRunner on ``address``, or on a new LocalCluster of ``workers`` processes
    (one thread each: stages are CPU-bound Python)."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError('the dask runner needs prefect-dask: pip install -e ".[dask]"') from None
    if address is not None:
        if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
            raise ConfigError(f"--dask-address {address!r} is not a scheduler address like tcp://host:8786")
        return DaskTaskRunner(address=address)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"a LocalCluster needs workers >= 1, not {workers!r}")
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={"n_workers": workers, "processes": True, "threads_per_worker": 1, "dashboard_address": None},
    )


def local_cluster(**kwargs: Any) -> Any:
    """A ``distributed.LocalCluster(**kwargs)`` whose worker processes allocate memory as the
    flow's own process does.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off
    glibc's adaptive mmap threshold: every array above 128 kB is then mmapped and unmapped
    on each allocation: a training loop of 200x200 float64 products took nearly twice the CPU
    time on a worker as in the flow's process (0.51 s vs 0.27 s, 95k minor page faults vs
    0.5k). These workers keep glibc's defaults (and one BLAS thread each, as Dask sets)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(**kwargs)


def cluster_threads(address: str | None = None, *, workers: int = DEFAULT_WORKERS, timeout: float = 10.0) -> int:
    """How many tasks the cluster runs at once: its workers' threads (asked of the scheduler
    at ``address``; a LocalCluster of ``workers`` one-thread processes has ``workers``)."""
    if address is None:
        return workers
    dask_task_runner(address)  # the address is checked first
    try:
        from distributed import Client

        with Client(address, timeout=timeout) as client:
            threads = sum(client.nthreads().values())
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e})") from None
    if threads < 1:
        raise ConfigError(f"the Dask cluster at {address} has no workers yet: start some (dask worker {address})")
    return threads


def on_dask(flow: Any, address: str | None = None, *, workers: int = DEFAULT_WORKERS) -> Any:
    """``flow`` with its submitted stages running on Dask (see :func:`dask_task_runner`)."""
    if not hasattr(flow, "with_options"):
        raise ConfigError(f"{flow!r} is not a Prefect flow: only a flow's submitted stages can run on Dask")
    return flow.with_options(task_runner=dask_task_runner(address, workers=workers))


def on_runner(flow: Any, runner: str, address: str | None = None) -> tuple[Any, int]:
    """``flow`` on the runner ``--runner`` names ("threads": as it is; "dask": :func:`on_dask`
    at ``address``), and how many calls that runner runs at once (the run context's
    ``parallel``: how many trials a search asks at a time)."""
    if runner == "threads":
        return flow, 1
    if runner != "dask":
        raise ConfigError(f"runner {runner!r}: use threads or dask")
    return on_dask(flow, address), cluster_threads(address)


def is_dask(task_runner: Any) -> bool:
    """Whether a flow run's task runner is prefect-dask's DaskTaskRunner (not imported for others)."""
    return type(task_runner).__module__.partition(".")[0] == "prefect_dask"


def dask_map(task_runner: Any, fn: Callable[..., Any], calls: list[tuple[Any, ...]], *, retries: int = 0) -> list[Any]:
    """``[fn(*args) for args in calls]``, each call a plain Dask task on the cluster of a flow
    run's DaskTaskRunner, the results in order. ``fn`` carries the run context
    (``pipeline.context.carry``). A task whose worker dies is rerun on another worker by the
    scheduler; the first exception a call raises is raised here (after ``retries`` reruns).

    Called on a Dask worker (a submitted stage whose body maps calls, as a search does, to the
    cluster it runs on), the waiting thread leaves the worker's thread pool while the calls run
    and rejoins it after (:func:`~pipeline.integrations.dask_worker.off_the_pool`): else with one
    worker, or with every worker running such a stage, no thread would be free to run a call.
    From a thread of a worker that is not the task's own (which cannot leave the pool) the
    calls run here, one after another, with a warning."""
    where = worker_thread()
    if where == "other":
        warnings.warn(
            f"{len(calls)} calls mapped to Dask from a thread of a Dask worker that is not its task's own "
            f"({threading.current_thread().name!r}), which cannot free its worker for them: they run here, "
            "one after another (call the search from the stage's own thread to fan its trials out)",
            RuntimeWarning,
            stacklevel=3,
        )
        return [fn(*args) for args in calls]
    if where is None:
        return _gather(task_runner.client, fn, calls, retries)
    from distributed import get_client

    with off_the_pool():  # the worker runs other tasks (these calls) while this one waits
        return _gather(get_client(), fn, calls, retries)


def _gather(client: Any, fn: Callable[..., Any], calls: list[tuple[Any, ...]], retries: int) -> list[Any]:
    futures = [client.submit(_apply, fn, args, key=f"pipeline-call-{uuid.uuid4().hex}", pure=False,
                             retries=retries) for args in calls]  # fmt: skip
    return client.gather(futures)


def _apply(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


__all__ = ["dask_task_runner", "local_cluster", "cluster_threads", "on_dask", "on_runner", "is_dask", "dask_map"]
