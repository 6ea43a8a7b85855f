"""One part of a code fingerprint: a small typed record ``(kind, name, digest)``.

``explain`` and ``diff`` read these records as they are; nothing parses names back.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

from .encoder import Encoder

CODE = "code"  # a function's or class's own code (bytecode, names, constants, signature)
DEFAULTS = "defaults"  # the values of a function's defaults and keyword-only defaults
CLOSURE = "closure"  # the value in one closure cell of a function
GLOBAL = "global"  # a module global the code reads (see the module-constant rule in code.py)
STATE = "state"  # a global or cell the code itself rebinds: part of the key by name only
PACKAGE = "package"  # a third-party package the code calls into: its major.minor version
PINNED = "pinned"  # version="..." on a stage: the whole code part pinned by hand
RECURSIVE = "recursive"  # the function reached itself while its code was being hashed

KINDS = (CODE, DEFAULTS, CLOSURE, GLOBAL, STATE, PACKAGE, PINNED, RECURSIVE)


class Component(NamedTuple):
    """``kind`` (one of :data:`KINDS`), the qualified ``name`` of what it covers, and its
    ``digest`` (a fingerprint, or a version string for packages and pins)."""

    kind: str
    name: str
    digest: str


def digest_components(components: Iterable[Component]) -> str:
    """The code fingerprint of a set of components (order-independent)."""
    enc = Encoder(_no_values)
    enc.tag(b"code/2")
    for kind, name, digest in sorted(components):
        enc.text(kind)
        enc.text(name)
        enc.text(digest)
    return enc.hexdigest()


def _no_values(v: Any, enc: Encoder) -> None:  # pragma: no cover - only text is fed
    raise TypeError("digest_components feeds text only")


_LEGACY_PREFIXES = {"pkg:": PACKAGE, "global:": GLOBAL}


def read_components(raw: Any) -> tuple[Component, ...]:
    """Components as a manifest stores them: a list of ``[kind, name, digest]``. A manifest
    of the first key format stored a ``{name: digest}`` dict with ``pkg:``/``global:``
    prefixes; it is read into the same records (its key can't match a new key anyway)."""
    if isinstance(raw, dict):
        out = []
        for name, digest in raw.items():
            kind = CODE
            for prefix, k in _LEGACY_PREFIXES.items():
                if name.startswith(prefix):
                    kind, name = k, name[len(prefix) :]
            if name == "pinned":
                kind, name = PINNED, "version"
            out.append(Component(kind, str(name), str(digest)))
        return tuple(sorted(out))
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"code components are {type(raw).__name__}, not a list")
    out = []
    for item in raw:
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and all(isinstance(x, str) for x in item)):
            raise ValueError(f"bad code component {item!r}"[:200])
        out.append(Component(*item))
    return tuple(out)
