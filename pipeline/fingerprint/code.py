"""function -> code fingerprint: its canonical code plus every project-local thing it reaches.

The fingerprint of a function covers
- its code object, the canonical form that survives ``cloudpickle`` (which ships
  ``__main__`` and local functions by value, without their source): bytecode, names,
  constants, argument names and calling convention (positional-only, keyword-only,
  ``*args``/``**kwargs``, generator/coroutine), nested functions and lambdas, recursively.
  Docstrings, comments, formatting, line numbers and decorators are not part of it;
- the *values* of its defaults and keyword-only defaults, and of its closure cells;
- recursively, each project-local function and class it references through its globals,
  attribute chains (``helpers.clean``), ``from x import y`` in its body, or closure cells;
- the module globals it reads, by the module-constant rule below;
- for each third-party package it calls into, that package's ``major.minor`` version
  (what is the project's and what a library's: :mod:`.locality`).

The module-constant rule (the same for closure cells and defaults):
- an immutable value (number, string, bytes, None, enum member, tuple/frozenset of such)
  and any value under an UPPER_CASE name (a constant, PEP 8) is hashed as it is now:
  ``THRESHOLD = 0.5 -> 0.6`` or an edited ``LABELS = {...}`` changes the key;
- any other value (a lowercase list, dict, set, array, frame or object: a memo, a call
  counter, a registry) is hashed as this process first saw it: the key does not follow what
  the program does to it afterwards, so a stage that appends to a module-level list still
  hits, while an edit of its initial value in the source (seen by the next run) misses;
- a name the code itself rebinds (``global n; n += 1``, ``nonlocal``) is state: it is
  part of the key by name only;
- an object of a project class also brings its class's code; one whose state can't be
  hashed is its class alone. An object of a library class that is not data (a client, a
  logger, ``os.environ``) and anything reached through a library module
  (``np.linalg.norm``, ``os.environ``) contribute that package's version only.

``__main__`` is named by its file, as the import system would name it (``my_flow``,
``flows.train``), so ``python my_flow.py`` and ``--flow my_flow:flow`` give one key.

``code_components(func)`` returns typed :class:`~.component.Component` records, so a
changed key can be explained ("code of flows.preprocess.clean changed");
``code_fingerprint`` hashes them. Importing this module registers the function and
class handlers of the value registry (:mod:`.values` never imports this module).
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import dataclasses
import decimal
import dis
import enum
import functools
import importlib.util
import sys
import threading
import types
from typing import Any, Callable, Iterator

from ..errors import FingerprintError
from .component import (
    CLOSURE,
    CODE,
    DEFAULTS,
    GLOBAL,
    PACKAGE,
    PINNED,
    RECURSIVE,
    STATE,
    Component,
    digest_components,
)
from .encoder import Encoder, type_name
from .locality import is_library_module, is_project_local, package_version
from .names import module_name, qualified_name
from .values import encode, fingerprint

__all__ = ["code_fingerprint", "code_components", "remembering_code", "is_project_local", "module_name"]

_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset, list, dict, set, enum.Enum)
_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, range, enum.Enum, decimal.Decimal)
# co_flags that change what a call does: *args, **kwargs, generator, coroutine, async generator
_BEHAVIOUR_FLAGS = 0x04 | 0x08 | 0x20 | 0x80 | 0x100 | 0x200
_CO_OPTIMIZED = 0x01
_COMPREHENSIONS = {"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"}
_CLASS_SKIP = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__",
               "__dataclass_fields__", "__dataclass_params__", "__match_args__", "__firstlineno__",
               "__static_attributes__", "__slots__", "__slotnames__", "__orig_bases__", "__parameters__"}  # fmt: skip


# -- one code object -----------------------------------------------------------------
def _const_token(x: Any) -> str:
    """A code constant's spelling, independent of the hash seed (``x in {"a", "b"}``
    compiles to a frozenset constant whose repr order varies between processes)."""
    if isinstance(x, (frozenset, set)):
        return type(x).__name__ + "{" + ",".join(sorted(map(_const_token, x))) + "}"
    if isinstance(x, tuple):
        return "(" + ",".join(map(_const_token, x)) + ",)"
    return f"{type(x).__name__}:{x!r}"


def _feed_code(code: types.CodeType, enc: Encoder) -> None:
    """A code object as what it does: everything but line numbers, file and docstring."""
    enc.tag(b"code")
    enc.text(code.co_name)
    for n in (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags & _BEHAVIOUR_FLAGS):
        enc.int(n)
    for names in (code.co_varnames, code.co_freevars, code.co_cellvars, code.co_names):
        enc.int(len(names))
        for name in names:
            enc.text(name)
    enc.blob(code.co_code)
    consts = code.co_consts
    if consts and isinstance(consts[0], str) and code.co_flags & _CO_OPTIMIZED and code.co_name not in _COMPREHENSIONS:
        consts = (None, *consts[1:])  # a function's first constant is its docstring (or None)
    enc.int(len(consts))
    for c in consts:
        if isinstance(c, types.CodeType):
            _feed_code(c, enc)
        else:
            enc.text(_const_token(c))


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    out = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(_code_objects(const))
    return out


@dataclasses.dataclass(frozen=True)
class _Reads:
    """What a code object (with its nested code) refers to."""

    chains: frozenset[tuple[str, ...]]  # global names and attribute chains: np.linalg.norm
    imports: frozenset[tuple[int, str, str]]  # (level, module, name) of `from module import name`
    stores: frozenset[str]  # globals it rebinds (`global n`)
    cell_stores: frozenset[str]  # closure cells it rebinds (`nonlocal n`)


@functools.lru_cache(maxsize=4096)
def _own(code: types.CodeType) -> tuple[str, _Reads]:
    """(digest of the code object, what it reads). Cached per code object."""
    enc = Encoder(_no_values)
    _feed_code(code, enc)
    chains: set[tuple[str, ...]] = set()
    imports: set[tuple[int, str, str]] = set()
    stores: set[str] = set()
    cell_stores: set[str] = set()
    for c in _code_objects(code):
        chain: list[str] | None = None
        consts: list[Any] = []
        module: tuple[int, str] | None = None
        for ins in dis.get_instructions(c):
            op = ins.opname
            if op in ("LOAD_ATTR", "LOAD_METHOD") and chain is not None:
                chain.append(ins.argval)
                continue
            if chain:
                chains.add(tuple(chain))
            chain = [ins.argval] if op in ("LOAD_GLOBAL", "LOAD_NAME") else None
            if op == "LOAD_CONST":
                consts.append(ins.argval)
            elif op == "IMPORT_NAME":
                level = consts[-2] if len(consts) >= 2 and isinstance(consts[-2], int) else 0
                module = (level, ins.argval)
                imports.add((*module, ""))  # `import numpy` in a body: the module itself
            elif op == "IMPORT_FROM" and module is not None:
                imports.add((*module, ins.argval))
            elif op in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                stores.add(ins.argval)
            elif op in ("STORE_DEREF", "DELETE_DEREF") and c is code:
                cell_stores.add(ins.argval)
        if chain:
            chains.add(tuple(chain))
    reads = _Reads(frozenset(chains), frozenset(imports), frozenset(stores), frozenset(cell_stores))
    return enc.hexdigest(), reads


def _no_values(v: Any, enc: Encoder) -> None:  # pragma: no cover - only text/blob used
    raise TypeError("code digests feed text and bytes only")


# -- the module-constant rule --------------------------------------------------------
def _immutable(v: Any, depth: int = 0) -> bool:
    if isinstance(v, _IMMUTABLE) or (type(v).__module__ == "numpy" and not hasattr(v, "__len__")):
        return True  # (a numpy scalar: np.float64(0.5))
    if type(v) in (tuple, frozenset) and depth < 4:
        return all(_immutable(x, depth + 1) for x in v)
    return False


def _is_data(value: Any) -> bool:
    if isinstance(value, _DATA_TYPES) or dataclasses.is_dataclass(value):
        return True
    return type(value).__module__.partition(".")[0] in ("numpy", "pandas", "pyarrow", "sklearn", "pydantic")


def _constant(value: Any) -> str:
    try:
        return fingerprint(value)
    except FingerprintError:
        return "instance of " + type_name(type(value))


# (id(holder), slot) -> (holder, value, digest): mutable data as this process first saw it.
# The holder (a module namespace, a closure cell, a function) is kept alive, so its id
# can't be reused while the entry exists.
# Bounded: closures made per call would otherwise be kept alive forever; a dropped entry is
# taken again at its next use (at worst a spurious miss, never a stale hit).
_snapshots: dict[tuple[int, str], tuple[Any, Any, str]] = {}
_SNAPSHOTS_MAX = 4096


def _data_digest(name: str, value: Any, holder: Any, slot: str) -> str:
    if _immutable(value) or name.lstrip("_").isupper():
        return _constant(value)
    entry = _snapshots.get((id(holder), slot))
    if entry is not None and entry[0] is holder and entry[1] is value:
        return entry[2]
    digest = _constant(value)
    if len(_snapshots) >= _SNAPSHOTS_MAX:
        del _snapshots[next(iter(_snapshots))]
    _snapshots[(id(holder), slot)] = (holder, value, digest)
    return digest


# -- the walk over references --------------------------------------------------------
@dataclasses.dataclass
class _Walk:
    parts: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    seen: set[int] = dataclasses.field(default_factory=set)

    def add(self, kind: str, name: str, digest: str) -> None:
        self.parts[(kind, name)] = digest

    def _claim(self, obj: Any, base: str) -> str | None:
        """A component name for ``obj``, None when it was already walked. Two objects
        with one qualified name (lambdas of a module, closures of one factory) get
        ``#2``, ``#3`` in walk order, which is deterministic."""
        if id(obj) in self.seen:
            return None
        self.seen.add(id(obj))
        name, k = base, 2
        while (CODE, name) in self.parts:
            name, k = f"{base}#{k}", k + 1
        self.parts[(CODE, name)] = ""  # claimed before recursing: mutual recursion terminates
        return name

    def function(self, fn: types.FunctionType) -> None:
        name = self._claim(fn, qualified_name(fn))
        if name is None:
            return
        code = fn.__code__
        digest, reads = _own(code)
        self.parts[(CODE, name)] = digest
        if fn.__defaults__ or fn.__kwdefaults__:
            defaults = {**dict(enumerate(fn.__defaults__ or ())), **(fn.__kwdefaults__ or {})}
            self.add(DEFAULTS, name, self._values(defaults, fn, name))
        module = module_name(fn)
        namespace = fn.__globals__
        for chain in sorted(reads.chains):
            if chain[0] in namespace:  # else a builtin, or a global not defined (yet)
                self._chain(namespace, chain, module, reads.stores)
        for level, modname, attr in sorted(reads.imports):
            self._imported(namespace, level, modname, attr)
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            label = f"{name}.<closure {var}>"
            if var in reads.cell_stores:
                self.add(STATE, label, "rebound by the code")
                continue
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (recursive closure not yet bound)
                continue
            self.reference(label, value, CLOSURE, lambda v, c=cell, n=var: _data_digest(n, v, c, "cell"))

    def _values(self, defaults: dict[Any, Any], fn: types.FunctionType, name: str) -> str:
        """Defaults by the module-constant rule: a mutable default (``memo={}``) as first seen."""
        out = {}
        for k, v in defaults.items():
            callee = _unwrap(v) if callable(v) else v
            if isinstance(callee, (types.FunctionType, type)) and is_project_local(callee):
                self.reference(f"{name}.<default {k}>", v, CLOSURE, _constant)
                out[k] = "code"
            else:
                out[k] = _data_digest(str(k), v, fn, f"default {k}")
        return _constant(out)

    def _chain(self, namespace: dict[str, Any], chain: tuple[str, ...], module: str, stores: frozenset[str]) -> None:
        value, holder = namespace[chain[0]], namespace
        label = chain[0]
        for attr in chain[1:]:  # follow project module attributes: helpers.clean, config.LR
            if not isinstance(value, types.ModuleType) or not hasattr(value, attr):
                break
            if not is_project_local(value):  # np.linalg.norm, os.environ: the library's own
                break
            value, holder = getattr(value, attr), vars(value)
            label += "." + attr
        if label == chain[0] and chain[0] in stores:
            self.add(STATE, f"{module}.{label}", "rebound by the code")
            return
        last = label.rpartition(".")[2]
        self.reference(f"{module}.{label}", value, GLOBAL, lambda v: _data_digest(last, v, holder, last))

    def _imported(self, namespace: dict[str, Any], level: int, modname: str, attr: str) -> None:
        try:
            package = namespace.get("__package__")
            full = importlib.util.resolve_name("." * level + modname, package) if level else modname
        except (ImportError, ValueError):
            return
        mod = sys.modules.get(full)
        if mod is None:  # imported lazily in a body that has not run yet: still versioned
            if not level and is_library_module(full):
                self._package(full)
            return
        if not is_project_local(mod):
            self._package(full)
        elif attr and hasattr(mod, attr):
            value = getattr(mod, attr)
            self.reference(f"{full}.{attr}", value, GLOBAL, lambda v: _data_digest(attr, v, vars(mod), attr))

    def reference(self, label: str, value: Any, kind: str, digest: Callable[[Any], str]) -> None:
        """Account for one referenced object: recurse, version, or hash as data."""
        if isinstance(value, types.ModuleType):
            if not is_project_local(value):
                self._package(value.__name__)
            return
        if isinstance(value, functools.partial):
            self.reference(label + ".func", value.func, kind, _constant)
            self.add(kind, label, _constant((value.args, value.keywords)))
            return
        target = _unwrap(value) if callable(value) else value
        if isinstance(target, (types.FunctionType, type)) or (
            callable(target) and hasattr(target, "__module__") and hasattr(target, "__qualname__")
        ):
            modname = getattr(target, "__module__", None) or ""
            if is_project_local(target):
                if isinstance(target, type):
                    self.klass(target)
                elif isinstance(target, types.FunctionType):
                    self.function(target)
                else:  # a project-local callable object without code of its own
                    self.add(kind, label, _constant(target))
            elif not isinstance(target, (types.FunctionType, type)) and _is_data(target):
                self._package(type(target).__module__)  # np.frompyfunc(f), np.vectorize(f): by f
                self.add(kind, label, digest(value))
            elif target is not getattr(builtins, getattr(target, "__name__", ""), None):
                self._package(modname)
            return
        tp = type(value)
        if _is_data(value) or is_project_local(tp):  # data, or an object of a project class
            if is_project_local(tp):
                self.klass(tp)
            self.add(kind, label, digest(value))
            return
        # An object of a library class that is not data (a client, a logger, os.environ):
        # its package's version; its state is the library's business, not code.
        self._package(tp.__module__)
        self.add(kind, label, "instance of " + type_name(tp))

    def klass(self, cls: type) -> None:
        name = self._claim(cls, qualified_name(cls))
        if name is None:
            return
        enc = Encoder(_no_values)
        enc.tag(b"class")
        enc.int(len(cls.__bases__))
        for base in cls.__bases__:
            enc.text(qualified_name(base))
        for attr, member in sorted(vars(cls).items()):
            if attr in _CLASS_SKIP:
                continue
            enc.text(attr)
            for fn in _functions_of(member):
                enc.text(qualified_name(fn))
                self.function(fn)
            if isinstance(member, type):
                enc.text(qualified_name(member))
                self.reference(f"{name}.{attr}", member, GLOBAL, _constant)
            elif not _functions_of(member):  # a class attribute: by the module-constant rule
                data = _is_data(member) or is_project_local(type(member))
                enc.text(_data_digest(attr, member, cls, attr) if data else "instance of " + type_name(type(member)))
        self.parts[(CODE, name)] = enc.hexdigest()
        for base in cls.__bases__:
            self.reference(qualified_name(base), base, GLOBAL, _constant)

    def _package(self, modname: str) -> None:
        version = package_version(modname) if modname else None
        if version is not None:
            self.add(PACKAGE, modname.partition(".")[0], version)


def _functions_of(member: Any) -> list[types.FunctionType]:
    """The Python functions a class attribute runs: a method, a static/class method, the
    accessors of a property."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel) if isinstance(f, types.FunctionType)]
    member = _unwrap(member)
    return [member] if isinstance(member, types.FunctionType) else []


def _unwrap(value: Any) -> Any:
    try:
        return _inspect_unwrap(value)
    except ValueError:  # a __wrapped__ chain that loops
        return value


def _inspect_unwrap(value: Any) -> Any:
    import inspect

    return inspect.unwrap(value)


_active = threading.local()  # objects whose code is being walked, per thread
# Within ``remembering_code()``: id(object) -> (the object, its components), in this context only.
_memo: contextvars.ContextVar[dict[int, tuple[Any, tuple[Component, ...]]] | None] = contextvars.ContextVar(
    "pipeline_code_memo", default=None
)


@contextlib.contextmanager
def remembering_code() -> Iterator[None]:
    """Inside the block, each function's (or class's) code fingerprint is computed once and
    then remembered by object: for a loop that keys many calls of the same code in a row (a
    search's trials), where nobody edits code or UPPER_CASE constants in between. Only the
    current context (thread) remembers; nested blocks share the outer memo."""
    if _memo.get() is not None:
        yield
        return
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def code_components(func: Callable[..., Any], *, version: str | None = None) -> tuple[Component, ...]:
    """Every part the code fingerprint covers, as typed records sorted by (kind, name).

    ``version`` pins the code by hand: the only component is then the pin."""
    if version is not None:
        return (Component(PINNED, "version", str(version)),)
    obj = _unwrap(func)
    if isinstance(obj, functools.partial):
        obj = obj.func
    memo = _memo.get()
    if memo is None or _active.__dict__.get("ids"):
        # (Inside another walk a result may hold recursion markers: only whole walks are remembered.)
        return _components(obj)
    seen = memo.get(id(obj))
    if seen is not None and seen[0] is obj:
        return seen[1]
    components = _components(obj)
    memo[id(obj)] = (obj, components)  # the object is held: its id is not reused meanwhile
    return components


def _components(obj: Any) -> tuple[Component, ...]:
    # f reads HANDLERS = {"f": f}: hashing that constant asks for f's code again
    active: set[int] = _active.__dict__.setdefault("ids", set())
    if id(obj) in active:
        return (Component(RECURSIVE, qualified_name(obj), ""),)
    active.add(id(obj))
    try:
        walk = _walk(obj)
    finally:
        active.discard(id(obj))
    return tuple(sorted(Component(kind, name, digest) for (kind, name), digest in walk.parts.items()))


def _walk(obj: Any) -> _Walk:
    walk = _Walk()
    if isinstance(obj, type):
        walk.klass(obj)
    elif isinstance(obj, types.MethodType) and isinstance(obj.__func__, types.FunctionType):
        walk.function(obj.__func__)
    elif isinstance(obj, types.FunctionType):
        walk.function(obj)
    elif callable(obj) and isinstance(vars(type(obj)).get("__call__"), types.FunctionType):
        walk.klass(type(obj))
    else:
        walk.reference(type_name(type(obj)), obj, GLOBAL, _constant)
    return walk


def code_fingerprint(func: Callable[..., Any], *, version: str | None = None) -> str:
    """Fingerprint of a function's code and of the project code it reaches.

    ``version`` pins it by hand: the key then changes only when you change ``version``."""
    return digest_components(code_components(func, version=version))


# -- handlers of the value registry ----------------------------------------------------
@encode.register(types.FunctionType)
def _function(v: types.FunctionType, enc: Encoder) -> None:
    enc.tag(b"function")
    enc.text(code_fingerprint(v))


@encode.register(type)
def _type(v: type, enc: Encoder) -> None:
    enc.tag(b"type")
    enc.text(type_name(v))
    if is_project_local(v):
        enc.text(code_fingerprint(v))
