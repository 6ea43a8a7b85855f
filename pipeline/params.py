"""The pipeline's parameters: params.toml, then ``--set section.key=value`` overrides, checked
against the flow's parameter schema (every section and key known, of the expected type)."""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

DEFAULT_FILE = Path("params.toml")
_PLAIN = (bool, int, float, str)


@dataclass(frozen=True)
class ParamSchema:
    """The parameters a flow takes: dotted key (``train.epochs``) -> expected type, or
    ``None`` when any value goes. A section is a key whose type is ``dict``."""

    types: Mapping[str, type | None]

    @classmethod
    def from_example(cls, params: Mapping[str, Any]) -> ParamSchema:
        """The schema a complete parameter set (the flow's default file) implies."""
        types: dict[str, type | None] = {}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for k, v in node.items():
                types[prefix + k] = dict if isinstance(v, dict) else (type(v) if type(v) in _PLAIN else None)
                if isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")

        walk(params, "")
        return cls(types)

    @classmethod
    def from_file(cls, path: str | Path) -> ParamSchema:
        return cls.from_example(read_params(path))

    @classmethod
    def from_signature(cls, fn: Callable[..., Any]) -> ParamSchema:
        """A flow function's keyword parameters (typed where annotated with a plain type)."""
        types: dict[str, type | None] = {}
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = p.annotation if p.annotation in _PLAIN else None
            if ann is None and type(p.default) in _PLAIN:
                ann = type(p.default)
            types[name] = ann
        return cls(types)

    def check(self, params: Mapping[str, Any], where: str, *, complete: bool = True) -> None:
        """Raise ConfigError naming the first unknown, missing or mistyped key of ``params``
        (``where``: the file or flag they came from). ``complete=False``: keys may be missing."""
        self._check_node(params, "", where)
        if not complete:
            return
        for key, want in self.types.items():
            parent, _, leaf = key.rpartition(".")
            node = _get(params, parent)
            if isinstance(node, Mapping) and leaf not in node:
                what = f"section [{key}]" if want is dict else f"parameter {key}"
                raise ConfigError(f"{where}: missing {what} (the flow needs it; see the shipped params.toml)")

    def _check_node(self, node: Mapping[str, Any], prefix: str, where: str) -> None:
        for k, v in node.items():
            key = prefix + k
            if key not in self.types:
                raise ConfigError(f"{where}: {self.unknown(key)}")
            want = self.types[key]
            if want is dict:
                if not isinstance(v, dict):
                    raise ConfigError(f"{where}: {key} is a section; set one of its keys ({self._children(key)})")
                self._check_node(v, key + ".", where)
            elif want is not None and not _is_a(v, want):
                raise ConfigError(f"{where}: parameter {key} must be a {want.__name__}, got {v!r} ({type(v).__name__})")

    def unknown(self, key: str) -> str:
        """Why dotted ``key`` is not in the schema: its first unknown part, the closest match."""
        parts = key.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in self.types:
                what = "parameter" if i == len(parts) else "section"
                return f"unknown {what} {prefix}{self._suggest(prefix)}"
            if self.types[prefix] is not dict and i < len(parts):
                return f"{prefix} is a parameter, not a section"
        return f"{key} is known"

    def _suggest(self, key: str) -> str:
        parent = key.rpartition(".")[0]
        siblings = [k for k in self.types if k.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.5)
        if close:
            return f" (did you mean {close[0]}?)"
        if parent and parent not in self.types:
            return ""
        return f" (known: {', '.join(siblings)})" if siblings else ""

    def _children(self, section: str) -> str:
        return ", ".join(k for k in self.types if k.rpartition(".")[0] == section)


def _get(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split(".") if dotted else ():
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _is_a(value: Any, want: type) -> bool:
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, want)


def read_params(path: str | Path) -> dict[str, Any]:
    """A TOML parameter file as a dict (ConfigError when missing or malformed)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"parameter file {path} not found (pass --params FILE)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"parameter file {path} is not valid TOML: {e}") from None


def load_params(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    schema: ParamSchema | None = None,
) -> dict[str, Any]:
    """Read a TOML parameter file and apply ``key.path=value`` overrides (values parsed as
    TOML/JSON literals when they parse, else kept as strings). With a ``schema``, the file
    and then each override are checked against it."""
    path = Path(path) if path else DEFAULT_FILE
    params = read_params(path)
    if schema is not None:
        schema.check(params, f"parameter file {path}")
    return apply_overrides(params, overrides, schema)


def apply_overrides(
    params: dict[str, Any], overrides: list[str] | tuple[str, ...], schema: ParamSchema | None = None
) -> dict[str, Any]:
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key = key.strip()
        if schema is not None and key not in schema.types:
            raise ConfigError(f"--set {item!r}: {schema.unknown(key)}")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        old = node.get(leaf)
        if isinstance(old, dict) or (schema is not None and schema.types[key] is dict):
            raise ConfigError(f"--set {item!r}: {key} is a section; set one of its keys")
        node[leaf] = _parse_value(raw.strip(), old, item)
        if schema is not None:
            schema.check(out, f"--set {item!r}", complete=False)
    return out


def _parse_value(raw: str, old: Any, item: str) -> Any:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and not isinstance(value, type(old)) and not (isinstance(old, float) and isinstance(value, int)):
        raise ConfigError(f"--set {item!r}: expected a {type(old).__name__} like {old!r}")
    return value
