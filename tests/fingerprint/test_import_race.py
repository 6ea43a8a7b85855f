"""Hashing in one thread while another thread imports a lazily-supported library: the
handler of a library is not imported while the library itself is still being imported
(Python can then fail the other thread's import with "partially initialized module")."""

from __future__ import annotations

import sys
import types

from pipeline.fingerprint import fingerprint, lazy_handlers


def test_a_library_still_importing_in_another_thread_is_not_registered(monkeypatch):
    spec = types.SimpleNamespace(_initializing=True)  # what importlib sets while the module runs
    half = types.ModuleType("pydantic")
    half.__spec__ = spec  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "pydantic", half)
    monkeypatch.setitem(lazy_handlers.LAZY, "pydantic", "._pydantic_never_imported")
    fingerprint(1)  # would import the handler module (and fail: it does not exist) if registered
    assert "pydantic" in lazy_handlers.LAZY
    spec._initializing = False  # the import finished: its handler is registered from now on
    assert lazy_handlers.imported("pydantic")
