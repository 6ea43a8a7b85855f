"""A flow whose process leaves work for exit time: an atexit handler and a non-daemon thread."""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path


def leaves_work(out: str = "") -> int:
    where = Path(out or os.environ["EXIT_FLOW_DIR"])

    def late() -> None:
        time.sleep(0.5)
        (where / "thread").write_text("joined")

    threading.Thread(target=late, daemon=False).start()
    atexit.register(lambda: (where / "atexit").write_text("ran"))
    return 1
