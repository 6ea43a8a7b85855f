"""Flow runs whose process was killed: found and marked ``Crashed`` by the next CLI run.

A process killed with SIGKILL cannot tell the Prefect API that its flow run ended, so the
run stays ``Running`` for ever (Prefect's own detection needs flow heartbeats, which cost
about a second per run, plus an automation on the server). Instead every CLI run tags its
flow run with the host and process that runs it (``pipeline-proc:<host>:<pid>:<start>``);
:func:`mark_crashed` asks the API for running flow runs with this host's tag whose process
is gone, and sets them — and their running task runs — ``Crashed``.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

TAG = "pipeline-cli"
_PROC = "pipeline-proc"


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux; "" elsewhere): tells a
    reused pid from the process that had it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


@dataclass(frozen=True)
class Process:
    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> Process:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_ticks(pid))

    @property
    def tag(self) -> str:
        return f"{_PROC}:{self.host}:{self.pid}:{self.start}"

    @classmethod
    def from_tags(cls, tags: list[str]) -> Process | None:
        for tag in tags:
            kind, _, rest = tag.partition(":")
            host, _, rest = rest.partition(":")
            pid, _, start = rest.partition(":")
            if kind == _PROC and pid.isdigit():
                return cls(host, int(pid), start)
        return None

    def alive(self) -> bool:
        """Whether this process still runs (only answerable on its own host: else True)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it exists
            pass
        return not self.start or _start_ticks(self.pid) in ("", self.start)


@contextmanager
def tagged() -> Iterator[None]:
    """Flow runs started in this block carry this process's tags."""
    from prefect import tags

    with tags(TAG, Process.current().tag):
        yield


@contextmanager
def untagged() -> Iterator[None]:
    """Task runs started in this block do not carry the tags of :func:`tagged`: only flow
    runs need them (:func:`mark_crashed` reads flow runs' tags), and each tag of a task run
    costs it two API round trips (Prefect takes and gives back a concurrency slot per tag)."""
    from prefect.context import TagsContext

    current = TagsContext.get().current_tags
    ours = {t for t in current if t == TAG or t.startswith(f"{_PROC}:")}
    if not ours:
        yield
        return
    with TagsContext(current_tags=current - ours):
        yield


def mark_crashed(limit: int = 200) -> list[str]:
    """Set ``Crashed`` every running flow run of this host whose CLI process is gone (and
    its unfinished task runs); returns their ids. Best effort: an API error marks nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
    marked: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
                tags=FlowRunFilterTags(all_=[TAG]),
            ),
            limit=limit,
        )
        for run in runs:
            proc = Process.from_tags(list(run.tags))
            if proc is None or proc.alive():
                continue
            message = f"the process that ran it (pid {proc.pid} on {proc.host}) is gone (killed)"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]),
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished)),
                )
            )
            for t in tasks:
                client.set_task_run_state(t.id, Crashed(message=message), force=True)
            marked.append(str(run.id))
    return marked


def sweep(console: Any = None) -> list[str]:
    """:func:`mark_crashed`, saying on ``console`` what it marked (or why it could not)."""
    try:
        marked = mark_crashed()
    except Exception as e:  # best effort: never fail a run for the sweep, but say so
        if console is not None:
            console.print(f"warning: could not look for killed flow runs: {type(e).__name__}: {e}", highlight=False)
        return []
    if marked and console is not None:
        console.print(f"marked {len(marked)} killed flow run(s) Crashed: {', '.join(marked)}", highlight=False)
    return marked
