"""Names that do not depend on how the program was started.

``python my_flow.py`` runs ``my_flow`` as ``__main__``; ``--flow my_flow:flow`` imports it as
``my_flow``; a process-pool or Dask worker receives its functions by value (cloudpickle),
still named ``__main__``. Everything a key holds names ``__main__`` by its file instead, the
way the import system would (``my_flow``, or ``flows.train`` inside a package).
"""

from __future__ import annotations

import functools
import os
import sys
import types
from typing import Any

_MAIN = ("__main__", "__mp_main__")


@functools.lru_cache(maxsize=256)
def name_from_path(path: str) -> str | None:
    """The module name the import system gives ``path``: its stem, under every enclosing
    package (a directory with ``__init__.py``)."""
    if not path.endswith(".py") or not os.path.isabs(path):
        return None
    folder, stem = os.path.split(path[:-3])
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, pkg = os.path.split(folder)
        parts.append(pkg)
    return ".".join(reversed(parts)) or None


def _main_file(obj: Any) -> str | None:
    file = (getattr(obj, "__globals__", None) or {}).get("__file__")
    if isinstance(file, str):  # a function, also when shipped by value to another process
        return file
    if isinstance(obj, type):  # a class: the file its methods were defined in
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)
            if isinstance(member, types.FunctionType):
                return _main_file(member)
    main = sys.modules.get(getattr(obj, "__module__", None) or "")
    return getattr(main, "__file__", None)


def module_name(obj: Any) -> str:
    """``obj.__module__``, except that ``__main__`` is named by its file (``my_flow``)."""
    mod = getattr(obj, "__module__", None) or "<unknown>"
    if mod in _MAIN:
        file = _main_file(obj)
        return (name_from_path(os.path.realpath(file)) if file else None) or mod
    return mod


def qualified_name(obj: Any) -> str:
    return f"{module_name(obj)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
