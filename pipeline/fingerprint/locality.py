"""Which code is the project's and which an installed library's, and a library's version.

Project-local code (functions, classes, modules defined in the user's project, ``__main__``
included) is hashed by what it is; library code (the standard library, anything installed
in a site-packages, and our own package) is versioned instead: ``major.minor`` of the
distribution that provides it (see :mod:`._dists` for the map cached across runs).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
from typing import Any

from . import _dists

__all__ = ["is_project_local", "is_library_module", "package_version"]

# Our own package is a library to the user's code: its edits are versioned, not hashed.
_LIBRARY_PACKAGES = {"pipeline"}


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Where installed code lives: the standard library and every site-packages.

    Not ``sys.prefix`` as a whole: a project may well live under ``/usr`` (``/usr/src/app``)."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages")))
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    roots.add(site.getusersitepackages())
    return tuple(os.path.realpath(r) + os.sep for r in roots)


@functools.lru_cache(maxsize=4096)
def _path_is_local(path: str) -> bool:
    return not os.path.realpath(path).startswith(_library_roots())


def _source_file(obj: Any) -> str | None:
    """The file ``obj`` was defined in: its code's own file first (right even for a module
    that was never put in ``sys.modules``), else the file its globals name (kept by
    cloudpickle), else its module's."""
    if isinstance(obj, types.ModuleType):
        return getattr(obj, "__file__", None)
    code = getattr(obj, "__code__", None)
    # (Cython functions carry a code object whose file is the relative .pyx path: not a file.)
    if isinstance(code, types.CodeType) and os.path.isabs(code.co_filename):
        return code.co_filename
    file = (getattr(obj, "__globals__", None) or {}).get("__file__")
    if isinstance(file, str):
        return file
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return getattr(module, "__file__", None)


def is_project_local(obj: Any) -> bool:
    """True for functions, classes and modules defined in the user's project."""
    modname = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(modname, str):
        return False
    top = modname.partition(".")[0]
    if top in _LIBRARY_PACKAGES or top in sys.stdlib_module_names or top == "builtins":
        return False
    if modname in ("__main__", "__mp_main__"):
        return True
    path = _source_file(obj)
    return isinstance(path, str) and _path_is_local(path)


def is_library_module(modname: str) -> bool:
    """Whether a module not imported yet would come from an installed library: found
    (without importing it) outside the project."""
    top = modname.partition(".")[0]
    if top in _LIBRARY_PACKAGES or top in sys.stdlib_module_names:
        return True
    loaded = sys.modules.get(top)
    if loaded is not None:
        return not is_project_local(loaded)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    where = spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or ()), None)
    return isinstance(where, str) and not _path_is_local(where)


@functools.lru_cache(maxsize=1024)
def package_version(modname: str) -> str | None:
    """``major.minor`` of the distribution that provides top-level module ``modname``.

    Which distribution provides it comes from a map cached across runs (see
    :mod:`._dists`); a module the cached map can't answer for recomputes it once."""
    top = modname.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return None
    version = _installed_version(top)
    if version is None and _dists.refresh():
        version = _installed_version(top)
    if version is not None:
        return ".".join(version.split(".")[:2])
    mod = sys.modules.get(top)
    version = getattr(mod, "__version__", None)
    return ".".join(str(version).split(".")[:2]) if version else "unknown"


def _installed_version(top: str) -> str | None:
    for dist in _dists.distributions_map().get(top, []):
        try:
            return _dists.version(dist)
        except importlib.metadata.PackageNotFoundError:  # a dist since removed: stale map
            continue
    return None
