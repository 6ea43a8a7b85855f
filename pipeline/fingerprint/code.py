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
import sys
import sysconfig
import textwrap
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
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages")))
    roots.add(sys.prefix)
    roots.add(sys.base_prefix)
    return tuple(os.path.realpath(r) + os.sep for r in roots)


@functools.lru_cache(maxsize=4096)
def _module_is_local(modname: str) -> bool:
    top = modname.partition(".")[0]
    if top in _LIBRARY_PACKAGES or top in sys.stdlib_module_names or top == "builtins":
        return False
    if modname == "__main__":
        return True
    mod = sys.modules.get(modname)
    path = getattr(mod, "__file__", None)
    if path is None:
        return False
    return not os.path.realpath(path).startswith(_library_roots())


def is_project_local(obj: Any) -> bool:
    """True for functions, classes and modules defined in the user's project."""
    modname = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(modname, str) and _module_is_local(modname)


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


def _bytecode_digest(code: types.CodeType) -> str:
    enc = Encoder(_encode_const)
    for c in _code_objects(code):
        enc.blob(c.co_code)
        enc.text(repr(c.co_names))
        enc.text(repr([x for x in c.co_consts if not isinstance(x, types.CodeType)]))
    return enc.hexdigest()


def _encode_const(v: Any, enc: Encoder) -> None:  # pragma: no cover - only text/blob used
    enc.text(repr(v))


@functools.lru_cache(maxsize=4096)
def _own_digest(obj: Any, code: types.CodeType | None) -> tuple[str, frozenset[tuple[str, ...]]]:
    """(digest of the normalised AST or bytecode, names it references). Cached per code."""
    node = _parse(obj)
    if node is not None:
        digest = Encoder(_encode_const)
        digest.text(ast.dump(node, annotate_fields=False, include_attributes=False))
        chains = _referenced_names(node)
        if code is not None:
            local = {v for c in _code_objects(code) for v in c.co_varnames + c.co_cellvars}
            chains = {c for c in chains if c[0] not in local}
        return digest.hexdigest(), frozenset(chains)
    if code is not None:
        names = {n for c in _code_objects(code) for n in c.co_names}
        return _bytecode_digest(code), frozenset((n,) for n in names)
    if isinstance(obj, type):  # a class without source: its methods' bytecode
        enc = Encoder(_encode_const)
        names = set()
        for attr, member in sorted(vars(obj).items()):
            if isinstance(member, types.FunctionType):
                enc.text(attr)
                enc.text(_bytecode_digest(member.__code__))
                names.update(n for c in _code_objects(member.__code__) for n in c.co_names)
        return enc.hexdigest(), frozenset((n,) for n in names)
    raise FingerprintError(f"cannot read the code of {type_name(type(obj))} {obj!r}")


# -- the walk over references --------------------------------------------------------
@dataclasses.dataclass
class _Walk:
    components: dict[str, str] = dataclasses.field(default_factory=dict)

    def function(self, fn: Callable[..., Any]) -> None:
        fn = inspect.unwrap(fn)
        name = f"{getattr(fn, '__module__', None) or '<unknown>'}.{fn.__qualname__}"
        if name in self.components:
            return
        self.components[name] = ""  # mark before recursing: mutual recursion terminates
        code = getattr(fn, "__code__", None)
        digest, chains = _own_digest(fn, code)
        self.components[name] = digest
        self._references(fn.__globals__, chains, name)
        for var, cell in zip(code.co_freevars if code else (), fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (recursive closure not yet bound)
                continue
            self.reference(f"{name}.<closure {var}>", value)

    def klass(self, cls: type) -> None:
        name = type_name(cls)
        if name in self.components:
            return
        self.components[name] = ""
        digest, chains = _own_digest(cls, None)
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
        target = inspect.unwrap(value) if callable(value) else value
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
        else:
            self.components["global:" + label] = "instance of " + type_name(type(value))

    def _package(self, modname: str) -> None:
        version = package_version(modname) if modname else None
        if version is not None:
            self.components["pkg:" + modname.partition(".")[0]] = version


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


def code_components(func: Callable[..., Any]) -> dict[str, str]:
    """Every part the code fingerprint covers, by qualified name, sorted."""
    walk = _Walk()
    obj = inspect.unwrap(func)
    if isinstance(obj, functools.partial):
        obj = obj.func
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
