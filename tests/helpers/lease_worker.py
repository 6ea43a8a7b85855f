"""One process asking for one stage key (``python -m tests.helpers.lease_worker SPEC``), for
the lease tests. SPEC is JSON: store URL and options, a folder where the stage body leaves one
file per execution, how many processes to wait for at the start line, the lease policy.
Prints ``hit`` or ``computed``."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from pipeline import StageCache, Store
from pipeline.context import run_context
from pipeline.store.locks import Leasing


def slow_square(x: int, runs: str, seconds: float) -> dict:
    os.close(os.open(os.path.join(runs, f"{os.getpid()}-{uuid.uuid4().hex}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    print("started", flush=True)
    time.sleep(seconds)
    return {"square": x * x, "by": os.getpid()}


def main() -> None:
    spec = json.loads(sys.argv[1])
    store = Store(spec["url"], **spec.get("options", {}))
    start = spec["start"]  # every process arrives, then all ask at once
    open(os.path.join(start, f"{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(start)) < spec["processes"] and time.monotonic() < deadline:
        time.sleep(0.02)
    lease = Leasing(**spec["leasing"]) if spec.get("leasing") is not None else None
    with run_context(store=store, lease=lease):
        outcome = StageCache(store).wrap(slow_square, ignore=["seconds"]).call(7, spec["runs"], spec["seconds"])
    assert outcome.value["square"] == 49
    print("hit" if outcome.hit else "computed", flush=True)


if __name__ == "__main__":
    main()
