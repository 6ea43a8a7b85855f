"""Settings, from ``[tool.pipeline]`` in pyproject.toml, then ``PIPELINE_*`` environment
variables, then explicit overrides (CLI flags): later sources win.

A relative store path from pyproject.toml or the environment is relative to the project
root (the folder of that pyproject.toml; the working directory when there is none); one
given as an override (``--store``) is relative to the working directory, as paths typed on
a command line are. Either way ``Settings.store`` holds it absolute. :func:`settings` loads
them once per process (per working directory and ``PIPELINE_*`` environment).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how the library behaves. Every field has a default."""

    store: str = "data/checkpoints"
    """Store URL or path (relative paths are relative to the project root)."""
    fsync: bool = True
    """fsync objects and manifests before they count as committed (power-loss safe)."""
    flow: str = "flows.ml_pipeline:ml_pipeline"
    """The flow ``python -m pipeline run`` runs, as ``module:function``."""
    server: str = "auto"
    """Prefect API for CLI runs: "auto" (reuse or start a local background server),
    "ephemeral" (Prefect's in-process server), or an http(s) URL."""
    params: str = ""
    """The flow's parameter file (empty: the flow's own default, params.toml of the project)."""
    mirrors: tuple[str, ...] = ()
    """Backup mirrors of the store (paths or fsspec URLs): each commit is copied to them and
    reads repair from them. ``PIPELINE_MIRRORS``: separated by commas or ``os.pathsep``."""
    mirror_mode: str = "sync"
    """"sync": a commit returns once the mirrors hold it; "background": a replicator thread copies."""
    signing_key: str = dataclasses.field(default="", repr=False)
    """A secret key (``PIPELINE_SIGNING_KEY``; never in pyproject.toml): manifests are sealed
    with an HMAC-SHA256 of it, joblib objects signed, and unsigned joblib objects refused."""
    signing_key_file: str = ""
    """A file holding the signing key (relative paths: from the project root)."""
    lease: bool = True
    """Lease a missing stage key while computing it, so other processes wait and load it
    instead of computing it too (``--no-lease`` / ``lease = false``: every process computes)."""
    runner: str = "threads"
    """Where a run's submitted stages and search trials run: "threads" (Prefect's thread
    pool in the run's process) or "dask" (a dask.distributed cluster, see dask_address)."""
    dask_address: str = ""
    """With runner "dask": the scheduler (tcp://host:8786); empty: a LocalCluster per run."""
    frames: str = "fast"
    """How frames of plain numbers are stored: "fast" (Arrow IPC, uncompressed: saved as fast
    as the bytes are written, loaded zero-copy) or "small" (Parquet, byte-stream-split + zstd:
    ~10% smaller on float features, loads decompress). Each object records its codec, so a
    store holds both and reads either."""
    commits: str = "background"
    """How a stage of a flow run commits a computed frame or small result: "background" (a
    writer thread writes it while the next stage computes; the flow run waits for every
    commit before it reports its final state) or "sync" (before its task run completes)."""

    @classmethod
    def load(
        cls,
        *,
        start: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings for the project around ``start`` (default: the working directory)."""
        values: dict[str, Any] = {}
        here = Path(start or os.getcwd()).absolute()
        pyproject = find_pyproject(here)
        if pyproject is not None:
            values.update(_from_pyproject(pyproject))
        env = os.environ if env is None else env
        for f in dataclasses.fields(cls):
            raw = env.get(f"PIPELINE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f.name, raw, f"environment variable PIPELINE_{f.name.upper()}")
        root = pyproject.parent if pyproject else here
        values["store"] = _absolute(values.get("store", cls.store), root)
        if isinstance(values.get("mirrors"), (list, tuple)):
            values["mirrors"] = tuple(_absolute(m, root) for m in values["mirrors"])
        if values.get("signing_key_file"):
            values["signing_key_file"] = _absolute(values["signing_key_file"], root)
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(given.get("store"), str):
            given["store"] = _absolute(given["store"], here)
        if isinstance(given.get("mirrors"), (list, tuple)):
            given["mirrors"] = tuple(_absolute(m, here) for m in given["mirrors"])
        values.update(given)
        _check(values, "settings")
        return cls(**values)

    def signing_secret(self) -> bytes | None:
        """The signing key's bytes (``signing_key``, else the file ``signing_key_file``); None: no key."""
        if self.signing_key:
            return self.signing_key.encode()
        if not self.signing_key_file:
            return None
        return _read_key_file(self.signing_key_file)


@functools.lru_cache(maxsize=4)
def _read_key_file(path: str) -> bytes:
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the signing key file {path}: {e.strerror} (check signing_key_file)") from None
    if not key:
        raise ConfigError(f"the signing key file {path} is empty (put a long random secret in it)")
    return key


def settings() -> Settings:
    """The settings of this process, loaded once per working directory and ``PIPELINE_*``
    environment (pyproject.toml is not re-read when it changes while the process runs)."""
    env = tuple((name, os.environ.get(name)) for name in _ENV_NAMES)  # a few lookups, not a scan
    return _load(os.getcwd(), env)


@functools.lru_cache(maxsize=8)
def _load(cwd: str, env: tuple[tuple[str, str | None], ...]) -> Settings:
    return Settings.load(start=cwd, env={k: v for k, v in env if v is not None})


_ENV_NAMES = tuple(f"PIPELINE_{f.name.upper()}" for f in dataclasses.fields(Settings))


def _absolute(store: Any, base: Path) -> Any:
    """A relative local store path made absolute against ``base``; URLs stay as they are."""
    if not isinstance(store, str) or "://" in store or not store:
        return store
    path = Path(store).expanduser()
    return str(path if path.is_absolute() else base / path)


def find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.resolve().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _from_pyproject(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    section = data.get("tool", {}).get("pipeline", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[tool.pipeline] in {path} must be a table")
    # Sub-tables ([tool.pipeline.tracking]…) belong to the settings of their own module.
    values = {k.replace("-", "_"): v for k, v in section.items() if not isinstance(v, dict)}
    if "signing_key" in values:
        raise ConfigError(
            f"signing_key in [tool.pipeline] of {path}: a secret does not belong in the project file; "
            "set PIPELINE_SIGNING_KEY or name a file with signing_key_file"
        )
    _check(values, f"[tool.pipeline] in {path}")
    return values


def sub_table(name: str, start: str | os.PathLike | None = None) -> tuple[dict[str, Any], str]:
    """``[tool.pipeline.<name>]`` of the project around ``start`` (empty when there is none)
    and where it was read (for error messages). Its module checks its contents."""
    pyproject = find_pyproject(Path(start or os.getcwd()).absolute())
    where = f"[tool.pipeline.{name}]" + (f" in {pyproject}" if pyproject else "")
    if pyproject is None:
        return {}, where
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {pyproject}: {e}") from None
    table = data.get("tool", {}).get("pipeline", {}).get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    return table, where


MIRROR_MODES = ("sync", "background")
CHOICES = {"runner": ("threads", "dask"), "commits": ("background", "sync"), "frames": ("fast", "small")}


def _check(values: dict[str, Any], where: str) -> None:
    types = {f.name: f.type for f in dataclasses.fields(Settings)}
    for name, value in values.items():
        if name not in types:
            raise ConfigError(f"unknown setting {name!r} in {where} (known: {', '.join(sorted(types))})")
        if name == "mirrors":
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)):
                raise ConfigError(f"setting 'mirrors' in {where} must be a list of paths or URLs, got {value!r}")
            continue
        if name == "mirror_mode" and value not in MIRROR_MODES:
            modes = ", ".join(MIRROR_MODES)
            raise ConfigError(f"setting 'mirror_mode' in {where} must be one of {modes}, got {value!r}")
        want = bool if types[name] in (bool, "bool") else str
        if not isinstance(value, want):
            raise ConfigError(f"setting {name!r} in {where} must be a {want.__name__}, got {value!r}")
        if name in CHOICES and value not in CHOICES[name]:
            raise ConfigError(f"setting {name!r} in {where} is {value!r}; use one of {', '.join(CHOICES[name])}")


def _coerce(name: str, raw: str, where: str) -> Any:
    if name == "mirrors":
        return mirror_list(raw)
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    if field.type in (bool, "bool"):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{where}={raw!r} is not a boolean (use 1/0, true/false)")
    return raw


def mirror_list(raw: str) -> tuple[str, ...]:
    """Mirror locations from one string (``PIPELINE_MIRRORS``): separated by commas or by
    ``os.pathsep``; a ``:`` that starts ``://`` belongs to a URL and separates nothing."""
    out: list[str] = []
    for part in raw.split(","):
        out.extend(p.strip() for p in _split_pathsep(part) if p.strip())
    return tuple(out)


def _split_pathsep(text: str) -> list[str]:
    pieces, start = [], 0
    for i, ch in enumerate(text):
        if ch == os.pathsep and not text.startswith("//", i + 1):
            pieces.append(text[start:i])
            start = i + 1
    return [*pieces, text[start:]]
