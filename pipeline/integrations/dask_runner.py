"""Submitted stages on a ``dask.distributed`` cluster, through prefect-dask's DaskTaskRunner.

    flow = on_dask(my_flow)                           # a LocalCluster of 2 worker processes
    flow = on_dask(my_flow, "tcp://scheduler:8786")   # an existing cluster
    with use_store("s3://bucket/ckpts"):              # workers without a shared disk: S3
        flow(...)

Stages called with ``.submit()`` / ``.map()`` run on the workers; each computes its key and
commits to the store on its own, so results equal the sequential run's and a stage already
committed is a hit on any worker. ``pip install -e ".[dask]"``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

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
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "processes": True, "threads_per_worker": 1, "dashboard_address": None},
    )


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


__all__ = ["dask_task_runner", "cluster_threads", "on_dask"]
