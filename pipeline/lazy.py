"""Lazy hits: a cached stage result that is read from the store only when something uses it.

A hit returns :func:`serve` of its output tree: small JSON leaves are read at once (metrics,
dicts flow code branches on), every other leaf becomes a :class:`Lazy` — a ``wrapt``
object proxy that carries the fingerprint its manifest recorded. A downstream stage keys
on that fingerprint without reading anything (``__pipeline_fingerprint__``, the same hook
the dry-run placeholders use); the bytes are read and verified on first use (attribute,
operator, ``isinstance``, ``np.asarray``…), or by :func:`materialize`.

Correctness:
- Once read, the value keys by its *current* content (flow code may have changed it in
  place), not by the recorded fingerprint.
- A value found corrupt or missing when finally read is quarantined by the store and its
  stage recomputed (in the process that served it); the recomputed value must have the
  recorded fingerprint, since downstream keys were built from it — otherwise, and where no
  recompute is possible (a value shipped to another process), a clear IntegrityError.
- Pickling a lazy value pickles the reference (store, object, fingerprint), not the data.

The only coupling to the store's internals is :func:`_class_of` / :func:`_eager` (which
codecs decode to which class, which are read at once) and ``Store.load`` of a subtree.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import wrapt

from .errors import IntegrityError, StoreError
from .fingerprint import fingerprint
from .store import Store
from .store.tree import DictNode, Leaf, Tree, TupleNode

Path = tuple[Any, ...]
CLASSES = "classes"
"""The key of a stage manifest's ``extra`` under which :func:`classes_of` is kept."""
MODULES = "class_modules"
"""The key of a stage manifest's ``extra`` under which :func:`modules_of` is kept."""


class Recompute:
    """Runs a stage again, once, for every lazy leaf of one hit that turns out unreadable."""

    def __init__(self, stage: str, run: Callable[[], Any]) -> None:
        self.stage = stage
        self._run = run
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None

    def value(self) -> Any:
        with self._lock:
            if not self._done:
                self._value = self._run()
                self._done = True
            return self._value


@dataclass(frozen=True)
class Source:
    """Where a lazy leaf comes from: one object of one stage result."""

    store: Store
    tree: Leaf
    stage: str
    path: Path = ()
    recompute: Recompute | None = field(default=None, compare=False)
    cls: str = ""
    """``module:qualname`` of the value, as recorded when it was saved ("" when unknown)."""
    modules: tuple[str, ...] | None = None
    """The modules of the classes the value's class derives from (``object`` aside), as
    recorded when it was saved; None when unknown."""

    @property
    def fingerprint(self) -> str:
        return self.tree.fingerprint or ""

    def read(self) -> Any:
        try:
            return self.store.load(self.tree)
        except (IntegrityError, StoreError) as e:
            if self.recompute is None:
                raise IntegrityError(
                    f"the cached output of stage {self.stage!r} (object {self.tree.object}) became "
                    f"unreadable after it was served ({e}); it can't be recomputed here: rerun the flow"
                ) from e
            warnings.warn(f"stage {self.stage!r}: cached result unusable ({e}); recomputing", stacklevel=4)
        value = self.recompute.value()
        for step in self.path:
            value = value[step]
        if self.fingerprint and fingerprint(value) != self.fingerprint:
            raise IntegrityError(
                f"stage {self.stage!r} recomputed its unreadable cached output{_where(self.path)} with other content "
                f"than recorded ({self.fingerprint}); stages keyed on the recorded content can't use it: rerun the flow"
            )
        return value

    def __reduce__(self) -> Any:  # shipped to a worker: the reference, without the recompute
        return (Source, (self.store, self.tree, self.stage, self.path, None, self.cls))


def _where(path: Path) -> str:
    return "".join(f"[{p!r}]" for p in path)


class Lazy(wrapt.ObjectProxy):
    """A stage output that is read from the store on first use. Behaves as the value."""

    def __init__(self, source: Source) -> None:
        self._self_source = source
        self._self_lock = threading.Lock()
        self._self_loaded = False
        super().__init__(None)  # no wrapped object yet: __wrapped_get__ makes it on demand

    # wrapt's protocol for a deferred wrapped object (see wrapt.LazyObjectProxy)
    def __wrapped_factory__(self) -> Any:
        return self._self_source.read()

    def __wrapped_get__(self) -> Any:
        with self._self_lock:
            if not self._self_loaded:
                self.__wrapped__ = self.__wrapped_factory__()
                self._self_loaded = True
            return self.__wrapped__

    @property
    def __class__(self) -> type:  # type: ignore[override]
        # Answered from the codec while unread, so isinstance checks by frameworks passing
        # the value along (Prefect's parameter walk) don't read it.
        if not self._self_loaded:
            known = _class_of(self._self_source)
            if known is not None:
                return known
        return self.__wrapped__.__class__

    @property
    def __pipeline_fingerprint__(self) -> str:
        if not self._self_loaded and self._self_source.fingerprint:
            return self._self_source.fingerprint
        return fingerprint(self.__wrapped__, name=f"the output of stage {self._self_source.stage!r}")

    @property
    def __pipeline_loaded__(self) -> bool:
        return self._self_loaded

    def __reduce_ex__(self, protocol: int) -> Any:
        if self._self_loaded:  # flow code may have changed it in place: ship what it holds
            return self.__wrapped__.__reduce_ex__(protocol)
        return (Lazy, (self._self_source,))  # the reference, never the data

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        if self._self_loaded:  # what it holds now, changes included
            import copy

            return copy.copy(self.__wrapped__)
        return Lazy(self._self_source)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        import copy

        return copy.deepcopy(self.__wrapped__, memo)

    def __repr__(self) -> str:
        if self._self_loaded:
            return repr(self.__wrapped__)
        return f"<lazy output of stage {self._self_source.stage!r}{_where(self._self_source.path)}>"


def is_lazy(value: Any) -> bool:
    return isinstance(type(value), type) and issubclass(type(value), Lazy)


def is_unread(value: Any) -> bool:
    return is_lazy(value) and not value.__pipeline_loaded__


def materialize(value: Any) -> Any:
    """The real object behind a lazy stage output (read and verified now); ``value`` itself
    when it is not lazy. Lists, tuples and dicts are materialized item by item."""
    if is_lazy(value):
        return value.__wrapped__
    if type(value) in (list, tuple):
        items = [materialize(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    if type(value) is dict:
        items = {k: materialize(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    return value


def serve(
    store: Store,
    tree: Tree,
    stage: str,
    recompute: Recompute | None,
    classes: dict[str, str] | None = None,
    path: Path = (),
    modules: dict[str, list[str]] | None = None,
) -> Any:
    """A cached result as flow code receives it: its tuple/dict structure real, its small
    JSON leaves read now (raises when they can't be), every other leaf lazy. ``classes`` and
    ``modules``: what :func:`classes_of` and :func:`modules_of` recorded at save time."""
    classes, modules = classes or {}, modules or {}
    if isinstance(tree, TupleNode):
        return tuple(serve(store, t, stage, recompute, classes, (*path, i), modules) for i, t in enumerate(tree.items))
    if isinstance(tree, DictNode):
        return {k: serve(store, t, stage, recompute, classes, (*path, k), modules) for k, t in tree.entries}
    if _eager(tree):
        return store.load(tree)
    mods = modules.get(tree.object)
    known = tuple(str(m) for m in mods) if isinstance(mods, list) else None
    return Lazy(Source(store, tree, stage, path, recompute, str(classes.get(tree.object, "")), known))


def _leaf_values(value: Any, tree: Tree) -> Iterator[tuple[str, Any]]:
    """(object id, value) of each leaf of a saved value."""
    if isinstance(tree, TupleNode):
        for v, t in zip(value, tree.items):
            yield from _leaf_values(v, t)
    elif isinstance(tree, DictNode):
        for k, t in tree.entries:
            yield from _leaf_values(value[k], t)
    else:
        yield tree.object, value


def classes_of(value: Any, tree: Tree) -> dict[str, str]:
    """object id -> ``module:qualname`` of each leaf of a saved value (kept in its manifest),
    so that ``isinstance`` on an unread lazy leaf needs no read."""
    return {o: f"{type(v).__module__}:{type(v).__qualname__}" for o, v in _leaf_values(value, tree)}


def modules_of(value: Any, tree: Tree) -> dict[str, list[str]]:
    """object id -> the modules of every class in the MRO of each leaf's class but
    ``object`` (kept in its manifest): while none of them is imported, no class the value is
    an instance of exists in the process, and ``isinstance`` on it needs no import either."""
    return {o: sorted({c.__module__ for c in type(v).__mro__ if c is not object}) for o, v in _leaf_values(value, tree)}


# -- the coupling to the store's output trees and codecs ------------------------------
_EAGER_CODECS = {"json"}
_CLASS_OF = {
    "parquet-pandas": ("pandas", "DataFrame"),
    "arrow-pandas": ("pandas", "DataFrame"),
    "parquet-series": ("pandas", "Series"),
    "parquet-arrow": ("pyarrow.lib", "Table"),
}


def _eager(tree: Leaf) -> bool:
    return tree.codec in _EAGER_CODECS


def _class_of(source: Source) -> type | None:
    """The class a leaf decodes to: as recorded at save time, else as its codec tells; None
    when unknown (the caller reads the value)."""
    if source.cls:
        module, _, qualname = source.cls.partition(":")
    else:
        module, qualname = _CLASS_OF.get(source.tree.codec, ("", ""))
    if not module:
        return None
    if module not in sys.modules and source.modules is not None:
        if not any(m in sys.modules for m in source.modules):
            return _stand_in(source.cls)  # nothing it derives from is imported: no import needed
    try:  # reading the object would import its module too
        obj: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # moved, renamed, a local class: read the value instead
        return None
    return obj if isinstance(obj, type) else None


class _StandIn(type):
    """The metaclass of a stand-in for a class whose module (and every base class's) is not
    imported: ``isinstance(lazy, K)`` for an imported class ``K`` is then False, except for
    ``object`` — unless ``K`` is an ABC that recognises classes by their methods; its
    ``__subclasshook__`` reads ``__mro__``, which imports the real class and gives its."""

    _real: str

    @property
    def __mro__(cls) -> tuple[type, ...]:  # type: ignore[override]
        module, _, qualname = cls._real.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj.__mro__
        except Exception:  # moved or renamed since: the stand-in's own (itself, object)
            return type.__dict__["__mro__"].__get__(cls)


_STAND_INS: dict[str, type] = {}


def _stand_in(cls: str) -> type:
    with _STAND_IN_LOCK:
        if cls not in _STAND_INS:
            module, _, qualname = cls.partition(":")
            body = {"__module__": module, "__qualname__": qualname, "_real": cls, "__slots__": ()}
            _STAND_INS[cls] = _StandIn(qualname.rpartition(".")[2], (), body)
        return _STAND_INS[cls]


_STAND_IN_LOCK = threading.Lock()


__all__ = ["Lazy", "Source", "Recompute", "serve", "classes_of", "modules_of", "materialize", "is_lazy", "is_unread"]
