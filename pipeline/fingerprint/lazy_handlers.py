"""The handlers of numpy, pandas, pyarrow, scikit-learn and pydantic, registered lazily.

Each library's handlers live in a module of ours that registers them when imported; it is
imported the first time a value of that library is met, or before a top-level call once the
library itself is imported (so importing the hasher never imports pandas).
"""

from __future__ import annotations

import importlib
import sys
import threading

# Top-level package -> module of ours that registers its handlers when imported.
LAZY: dict[str, str] = {
    "numpy": "._numpy",
    "pandas": "._pandas",
    "pyarrow": "._arrow",
    "sklearn": "._sklearn",
    "sklearn.tree._tree": "._sklearn_tree",  # by its full name: see _sklearn_tree
    "pydantic": "._pydantic",
}

_lazy_lock = threading.Lock()


def load_lazy(top: str) -> None:
    """Import our handlers for library ``top``. Under a lock, and forgotten only once
    registered: a thread never sees a half-registered library (and hashes a DataFrame
    through the generic walk while another thread is still importing its handler)."""
    if top not in LAZY:
        return
    with _lazy_lock:
        mod = LAZY.get(top)
        if mod is not None:
            importlib.import_module(mod, __package__)
            del LAZY[top]


def register_imported() -> None:
    """Register handlers of every lazily-supported library that is already imported.

    Done before each top-level call so the handler chosen for a type never depends on
    which values happened to be hashed first (np.float64 subclasses float, say)."""
    for top in list(LAZY):
        if imported(top):
            load_lazy(top)


def imported(name: str) -> bool:
    """``name`` is imported and done: not still running its module code in another thread.
    (Importing our handler then would import the library's submodules beside that thread's
    own import of the package, which Python can break with "partially initialized module"
    errors in the other thread: seen as a stage body's ``import sklearn`` failing while a
    second thread hashed a value.) A value of its types can't exist before that anyway."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)
