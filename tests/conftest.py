"""Shared fixtures: stores on a real local directory and on fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid

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
