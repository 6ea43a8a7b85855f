"""The pipeline's parameters: params.toml, then ``--set section.key=value`` overrides."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_FILE = Path("params.toml")


def load_params(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a TOML parameter file and apply ``key.path=value`` overrides (values parsed as
    TOML/JSON literals when they parse, else kept as strings)."""
    path = Path(path) if path else DEFAULT_FILE
    try:
        params = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"parameter file {path} not found (pass --params FILE)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"parameter file {path} is not valid TOML: {e}") from None
    return apply_overrides(params, overrides)


def apply_overrides(params: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(params)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        old = node.get(leaf)
        if isinstance(old, dict):
            raise ConfigError(f"--set {item!r}: {key} is a section; set one of its keys")
        node[leaf] = _parse_value(raw.strip(), old, item)
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
