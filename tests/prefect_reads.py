"""Reading task runs back through the Prefect API. The server records a task run's states from
the events its client sent, asynchronously: a read right after the flow run returned can still
see a task run Running. Tests poll for the final states instead of reading once."""

from __future__ import annotations

import time


def final_task_runs(flow_run_id, expected: int, timeout: float = 60.0) -> list:
    """The flow run's task runs once ``expected`` of them are in a final state (or at the
    deadline: whatever is final then, so the caller's assertion names what was missing)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.monotonic() > deadline:
                return final
            time.sleep(0.1)


def task_states(flow_run_id, expected: int, timeout: float = 60.0) -> dict[str, list[str]]:
    """Final task run state names by task name (``load-0`` is ``load``)."""
    out: dict[str, list[str]] = {}
    for run in final_task_runs(flow_run_id, expected, timeout):
        out.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)
    return out
