"""The manifest: the commit record of one stage result (or training checkpoint).

It names every object of the result with its checksum and codec, records every
component of the key (so ``explain`` can say what changed), and carries timings,
sizes, the run id, the creation time and library versions. JSON on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterator

from ..fingerprint.component import Component, read_components
from .codecs import CODECS

FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    stage: str
    key: str
    outputs: dict[str, Any]
    """Tree of output references: ``{"object": id, "codec", "bytes", "fingerprint"}``
    leaves under ``{"tuple": [...]}`` / ``{"dict": {...}}`` nodes."""
    code: str = ""
    code_components: tuple[Component, ...] = ()
    """Typed ``(kind, name, digest)`` records of the code key; JSON: ``[kind, name, digest]``."""
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    """name -> {"fingerprint", "repr"}: arguments recorded by value (small, plain)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """name -> fingerprint: arguments recorded by content only (data, models)."""
    created: str = ""
    run_id: str = ""
    compute_seconds: float = 0.0
    save_seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    kind: str = "stage"
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def bytes(self) -> int:
        return sum(leaf["bytes"] for leaf in iter_leaves(self.outputs))

    @property
    def output_fingerprint(self) -> str:
        return self.outputs.get("fingerprint", "")

    def argument(self, name: str) -> str | None:
        """The fingerprint argument ``name`` contributed to the key (a param or an input)."""
        if name in self.params:
            return self.params[name].get("fingerprint")
        return self.inputs.get(name)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format') if isinstance(raw, dict) else raw!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        raw["code_components"] = read_components(raw.get("code_components", ()))
        manifest = cls(**{k: v for k, v in raw.items() if k in names})
        if not (isinstance(manifest.stage, str) and isinstance(manifest.key, str)):
            raise ValueError("stage and key must be strings")
        check_outputs(manifest.outputs)
        return manifest


_OID = re.compile(r"[0-9a-f]{32}")


def check_outputs(tree: Any) -> None:
    """Raise ValueError unless ``tree`` is a well-formed output tree of known codecs."""
    if not isinstance(tree, dict):
        raise ValueError(f"output tree node is {type(tree).__name__}, not an object")
    if "tuple" in tree and isinstance(tree["tuple"], list):
        for child in tree["tuple"]:
            check_outputs(child)
    elif "dict" in tree and isinstance(tree["dict"], dict):
        for child in tree["dict"].values():
            check_outputs(child)
    elif not (
        isinstance(tree.get("object"), str)
        and _OID.fullmatch(tree["object"])
        and tree.get("codec") in CODECS
        and type(tree.get("bytes")) is int
    ):
        raise ValueError(f"bad object reference {tree!r}"[:200])


def iter_leaves(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object reference in an output tree."""
    if "object" in tree:
        yield tree
    for child in tree.get("tuple", ()):
        yield from iter_leaves(child)
    for child in tree.get("dict", {}).values():
        yield from iter_leaves(child)


_VERSIONED = ("pipeline", "prefect", "pandas", "pyarrow", "numpy", "scikit-learn", "joblib")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
