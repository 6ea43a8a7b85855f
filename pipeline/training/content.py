"""What a checkpoint holds: small frozen policies for ``Checkpointer(content=...)``.

::

    Checkpointer(content=Full())                      # every state entry + RNG streams (default)
    Checkpointer(content=Partial("model", "optimizer"))  # just these entries
    Checkpointer(content=Light())                     # metrics and hyperparameters only

A checkpoint records its content's ``kind`` (``"full"``, ``"partial"``, ``"light"``) in its
manifest, so restore knows what it can resume from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError


class Content:
    """What a checkpoint holds of the training state."""

    kind: str = ""
    rng = False
    """Whether the global RNG streams (python, numpy) are saved too."""
    resumable = True
    """Whether training can resume from such a checkpoint (it holds model state)."""

    def entries(self, available: Iterable[str]) -> list[str]:
        """The state entries to save, given the entries the state has."""
        raise NotImplementedError


@dataclass(frozen=True)
class Full(Content):
    """Every entry of the training state, plus the global RNG streams: resume is exact."""

    kind = "full"
    rng = True

    def entries(self, available: Iterable[str]) -> list[str]:
        return list(available)


@dataclass(frozen=True, init=False)
class Partial(Content):
    """Only the named entries (e.g. the model and optimizer, not a large replay buffer).

    Entries not saved, and the global RNG streams, keep whatever values the state was built
    with on restore."""

    names: tuple[str, ...]
    kind = "partial"

    def __init__(self, *names: str) -> None:
        if len(names) == 1 and isinstance(names[0], (list, tuple)):
            names = tuple(names[0])  # Partial(["model", "optimizer"]) reads the same
        if not names:
            raise ConfigError('Partial() needs the names of the state entries to save, e.g. Partial("model")')
        bad = [n for n in names if not isinstance(n, str) or not n or n.startswith("_")]
        if bad:
            raise ConfigError(f"Partial: entry names are non-empty strings not starting with '_', not {bad[0]!r}")
        object.__setattr__(self, "names", tuple(dict.fromkeys(names)))

    def entries(self, available: Iterable[str]) -> list[str]:
        present = set(available)
        missing = [n for n in self.names if n not in present]
        if missing:
            raise ConfigError(f"Partial: {missing} name no entry of the training state (entries: {sorted(present)})")
        return list(self.names)


@dataclass(frozen=True)
class Light(Content):
    """Metrics and hyperparameters only: a record of the run, nothing to resume from."""

    kind = "light"
    resumable = False

    def entries(self, available: Iterable[str]) -> list[str]:
        return []


def check_content(content: object) -> Content:
    if not isinstance(content, Content):
        raise ConfigError(f'content= takes Full(), Partial("model", ...) or Light(), not {content!r}')
    return content


__all__ = ["Content", "Full", "Partial", "Light", "check_content"]
