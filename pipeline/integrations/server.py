"""Which Prefect API a CLI run talks to (see README "Prefect server")."""

from __future__ import annotations

import os
from typing import Any


def ensure_server(console: Any = None) -> None:
    """Quiet, offline-safe Prefect defaults for the CLI (set before Prefect is imported)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
