"""function -> code fingerprint: normalised AST plus every project-local thing it reaches.

The fingerprint of a function covers
- its own normalised AST (docstrings, comments, formatting and its decorators ignored),
- recursively, each project-local function and class it references through its globals
  or closure cells, and each module-level constant of a project-local module it reads,
- for each third-party package it calls into, that package's ``major.minor`` version.

``code_components(func)`` returns these parts by name, so a changed key can be
explained ("code of flows.preprocess.clean changed"); ``code_fingerprint`` hashes them.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import enum
import functools
import importlib.metadata
import inspect
import os
import site
import sys
import sysconfig
import textwrap
import threading
import types
from typing import Any, Callable

from ..errors import FingerprintError
from .encoder import Encoder, type_name

__all__ = ["code_fingerprint", "code_components", "is_project_local"]

# Our own package is a library to the user's code: its edits are versioned, not hashed.
_LIBRARY_PACKAGES = {"pipeline"}
_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset, list, dict, set, enum.Enum)


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
    that was never put in ``sys.modules``), else its module's."""
    if isinstance(obj, types.ModuleType):
        return getattr(obj, "__file__", None)
    code = getattr(obj, "__code__", None)
    # (Cython functions carry a code object whose file is the relative .pyx path: not a file.)
    if isinstance(code, types.CodeType) and os.path.isabs(code.co_filename):
        return code.co_filename
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
    if modname == "__main__":
        return True
    path = _source_file(obj)
    return isinstance(path, str) and _path_is_local(path)


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=1024)
def package_version(modname: str) -> str | None:
    """``major.minor`` of the distribution that provides top-level module ``modname``."""
    top = modname.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return None
    for dist in _distributions().get(top, []):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            continue
        return ".".join(version.split(".")[:2])
    mod = sys.modules.get(top)
    version = getattr(mod, "__version__", None)
    return ".".join(str(version).split(".")[:2]) if version else "unknown"


# -- one function's own AST ----------------------------------------------------------
def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]


def _parse(obj: Any) -> ast.AST | None:
    """The normalised AST node of a function or class, or None when there is no source."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None  # a lambda inside a larger statement: fall back to its bytecode
    if getattr(obj, "__name__", None) != node.name:
        return None
    if not isinstance(node, ast.ClassDef):
        node.decorator_list = []  # @stage(retries=3) is not code of the stage
    _strip_docstrings(node)
    return node


def _referenced_names(node: ast.AST) -> set[tuple[str, ...]]:
    """Global names and dotted attribute chains (``np.linalg.norm``) read in ``node``."""
    chains: set[tuple[str, ...]] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            parts: list[str] = []
            cur: ast.AST = sub
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                chains.add((cur.id, *reversed(parts)))
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            chains.add((sub.id,))
    return chains


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    out = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(_code_objects(const))
    return out


def _const_token(x: Any) -> str:
    """A code constant's spelling, independent of the hash seed (``x in {"a", "b"}``
    compiles to a frozenset constant whose repr order varies between processes)."""
    if isinstance(x, (frozenset, set)):
        return type(x).__name__ + "{" + ",".join(sorted(map(_const_token, x))) + "}"
    if isinstance(x, tuple):
        return "(" + ",".join(map(_const_token, x)) + ",)"
    if isinstance(x, types.CodeType):
        return "<code>"
    return f"{type(x).__name__}:{x!r}"


def _bytecode_digest(code: types.CodeType) -> str:
    enc = Encoder(_encode_const)
    for c in _code_objects(code):
        enc.blob(c.co_code)
        enc.text(repr(c.co_names))
        enc.text(_const_token(c.co_consts))
    return enc.hexdigest()


def _encode_const(v: Any, enc: Encoder) -> None:  # pragma: no cover - only text/blob used
    enc.text(repr(v))


@functools.lru_cache(maxsize=4096)
def _own_digest(obj: Any, code: types.CodeType | None) -> tuple[str, frozenset[tuple[str, ...]], bool]:
    """(digest of the normalised AST or bytecode, names it references, from source?).
    Cached per object: the code that runs is the code that was read."""
    node = _parse(obj)
    if node is not None:
        digest = Encoder(_encode_const)
        digest.text(ast.dump(node, annotate_fields=False, include_attributes=False))
        chains = _referenced_names(node)
        if code is not None:
            local = {v for c in _code_objects(code) for v in c.co_varnames + c.co_cellvars}
            chains = {c for c in chains if c[0] not in local}
        return digest.hexdigest(), frozenset(chains), True
    if code is not None:
        names = {n for c in _code_objects(code) for n in c.co_names}
        return _bytecode_digest(code), frozenset((n,) for n in names), False
    if isinstance(obj, type):  # a class without source: its methods' bytecode
        enc = Encoder(_encode_const)
        names = set()
        for attr, member in sorted(vars(obj).items()):
            if isinstance(member, types.FunctionType):
                enc.text(attr)
                enc.text(_bytecode_digest(member.__code__))
                names.update(n for c in _code_objects(member.__code__) for n in c.co_names)
        return enc.hexdigest(), frozenset((n,) for n in names), False
    raise FingerprintError(f"cannot read the code of {type_name(type(obj))} {obj!r}")


# -- the walk over references --------------------------------------------------------
@dataclasses.dataclass
class _Walk:
    components: dict[str, str] = dataclasses.field(default_factory=dict)
    seen: set[int] = dataclasses.field(default_factory=set)

    def _name(self, obj: Any, base: str) -> str | None:
        """A component name for ``obj``, None when it was already walked. Two objects
        with one qualified name (lambdas of a module, closures of one factory) get
        ``#2``, ``#3`` in walk order, which is deterministic."""
        if id(obj) in self.seen:
            return None
        self.seen.add(id(obj))
        name, k = base, 2
        while name in self.components:
            name, k = f"{base}#{k}", k + 1
        self.components[name] = ""  # claimed before recursing: mutual recursion terminates
        return name

    def function(self, fn: Callable[..., Any]) -> None:
        fn = _unwrap(fn)
        name = self._name(fn, f"{getattr(fn, '__module__', None) or '<unknown>'}.{fn.__qualname__}")
        if name is None:
            return
        code = getattr(fn, "__code__", None)
        digest, chains, from_source = _own_digest(fn, code)
        self.components[name] = digest
        if not from_source and (fn.__defaults__ or fn.__kwdefaults__):  # not in bytecode
            self.components[name + ".<defaults>"] = _constant((fn.__defaults__, fn.__kwdefaults__))
        self._references(fn.__globals__, chains, name)
        for var, cell in zip(code.co_freevars if code else (), fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (recursive closure not yet bound)
                continue
            self.reference(f"{name}.<closure {var}>", value)

    def klass(self, cls: type) -> None:
        name = self._name(cls, type_name(cls))
        if name is None:
            return
        digest, chains, _ = _own_digest(cls, None)
        self.components[name] = digest
        module = sys.modules.get(cls.__module__)
        self._references(vars(module) if module else {}, chains, name)

    def _references(self, namespace: dict[str, Any], chains: frozenset[tuple[str, ...]], owner: str) -> None:
        for chain in sorted(chains):
            if chain[0] not in namespace:
                continue  # a builtin, a local, or an attribute of something unresolvable
            value = namespace[chain[0]]
            label = chain[0]
            for attr in chain[1:]:  # follow module attributes: helpers.clean, np.linalg.norm
                if not isinstance(value, types.ModuleType) or not hasattr(value, attr):
                    break
                value = getattr(value, attr)
                label += "." + attr
            module = namespace.get("__name__", owner)
            self.reference(f"{module}.{label}", value)

    def reference(self, label: str, value: Any) -> None:
        """Account for one referenced object: recurse, version, or hash as a constant."""
        if isinstance(value, types.ModuleType):
            if not is_project_local(value):
                self._package(value.__name__)
            return
        if isinstance(value, functools.partial):
            self.reference(label + ".func", value.func)
            self.components["global:" + label] = _constant((value.args, value.keywords))
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
                    self.components["global:" + label] = _constant(target)
            elif target is not getattr(builtins, getattr(target, "__name__", ""), None):
                self._package(modname)
            return
        if _is_data(value):
            self.components["global:" + label] = _constant(value)
            return
        # Any other object (a model, a client, a counter): its class's code or package
        # version, not its state — state that changes as it is used would change the key.
        tp = type(value)
        if is_project_local(tp):
            self.klass(tp)
        else:
            self._package(tp.__module__)
        self.components["global:" + label] = "instance of " + type_name(tp)

    def _package(self, modname: str) -> None:
        version = package_version(modname) if modname else None
        if version is not None:
            self.components["pkg:" + modname.partition(".")[0]] = version


def _unwrap(value: Any) -> Any:
    try:
        return inspect.unwrap(value)
    except ValueError:  # a __wrapped__ chain that loops
        return value


def _is_data(value: Any) -> bool:
    if isinstance(value, _DATA_TYPES) or dataclasses.is_dataclass(value):
        return True
    return type(value).__module__.partition(".")[0] in ("numpy", "pandas", "pyarrow", "sklearn", "pydantic")


def _constant(value: Any) -> str:
    from .values import fingerprint

    try:
        return fingerprint(value)
    except FingerprintError:
        return "instance of " + type_name(type(value))


_active = threading.local()  # objects whose code is being walked, per thread


def code_components(func: Callable[..., Any]) -> dict[str, str]:
    """Every part the code fingerprint covers, by qualified name, sorted."""
    obj = _unwrap(func)
    if isinstance(obj, functools.partial):
        obj = obj.func
    # f reads HANDLERS = {"f": f}: hashing that constant asks for f's code again
    active: set[int] = _active.__dict__.setdefault("ids", set())
    if id(obj) in active:
        return {"recursive": f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', '?')}"}
    active.add(id(obj))
    try:
        return _walk(obj)
    finally:
        active.discard(id(obj))


def _walk(obj: Any) -> dict[str, str]:
    walk = _Walk()
    if isinstance(obj, type):
        walk.klass(obj)
    elif isinstance(obj, types.MethodType):
        walk.function(obj.__func__)
    elif isinstance(obj, types.FunctionType):
        walk.function(obj)
    elif callable(obj) and isinstance(vars(type(obj)).get("__call__"), types.FunctionType):
        walk.klass(type(obj))
    else:
        walk.reference(type_name(type(obj)), obj)
    return dict(sorted(walk.components.items()))


def digest_components(components: dict[str, str]) -> str:
    enc = Encoder(_encode_const)
    enc.tag(b"code/1")
    for k, v in sorted(components.items()):
        enc.text(k)
        enc.text(v)
    return enc.hexdigest()


def code_fingerprint(func: Callable[..., Any], *, version: str | None = None) -> str:
    """Fingerprint of a function's code and of the project code it reaches.

    ``version`` pins it by hand: the key then changes only when you change ``version``."""
    if version is not None:
        return digest_components({"pinned": str(version)})
    return digest_components(code_components(func))
