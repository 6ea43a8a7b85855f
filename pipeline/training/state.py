"""TrainState: the named things a training loop resumes from, plus where it stands."""

from __future__ import annotations

import warnings
from typing import Any, Iterator, Mapping

from ..errors import CheckpointError, ConfigError

_OWN = ("epoch", "history", "stopped", "resumed_from")


class TrainState:
    """Named entries (model, optimizer, scheduler, RNG generators, counters…) and progress.

    ``state.model`` / ``state["model"]`` read an entry; assigning a new attribute adds one.
    Besides its entries a state knows ``epoch`` (epochs completed = the next epoch index to
    run), ``history`` (one metrics dict per completed epoch), ``stopped`` (early stopping
    said stop) and ``resumed_from`` (the checkpoint step it was restored from, or None).

    Restoring fills the entries *in place* where the type allows (a torch module gets
    ``load_state_dict``, an estimator its fitted attributes, a Generator its bit state), so
    objects built before ``restore`` (an optimizer over the model's parameters) stay wired.
    """

    def __init__(self, epoch: int = 0, **entries: Any) -> None:
        object.__setattr__(self, "_entries", dict(entries))
        object.__setattr__(self, "epoch", int(epoch))
        object.__setattr__(self, "history", [])
        object.__setattr__(self, "stopped", False)
        object.__setattr__(self, "resumed_from", None)

    @classmethod
    def of(cls, value: TrainState | Mapping[str, Any], *, role: str = "a training state") -> TrainState:
        """``value`` itself, or a plain mapping of entries made a TrainState.

        In a mapping, the keys a TrainState keeps itself (``epoch``, ``history``, ``stopped``,
        ``resumed_from``) are not entries: ``{"model": m, "epoch": 3}`` is a state at epoch 3
        with one entry, ``model``."""
        if isinstance(value, TrainState):
            return value
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str) or not k or k.startswith("_")]
            if bad:
                raise ConfigError(f"{role}: entry names are strings not starting with '_', not {bad[0]!r}")
            state = cls(**{k: v for k, v in value.items() if k not in _OWN})
            epoch = value.get("epoch", 0)
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ConfigError(f"{role}: 'epoch' counts completed epochs (an int >= 0), not {epoch!r}")
            state.epoch = epoch
            return state
        raise ConfigError(f"{role} must be a TrainState or a dict of entries, not {type(value).__name__}")

    def __getattr__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise AttributeError(f"TrainState has no entry {name!r} (entries: {sorted(self._entries)})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        elif name.startswith("_"):
            raise AttributeError(f"TrainState entry names must not start with '_': {name!r}")
        else:
            self._entries[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._entries.items())

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}={type(v).__name__}" for k, v in self._entries.items())
        return f"TrainState(epoch={self.epoch}, {kinds}{', stopped' if self.stopped else ''})"


class ClosesOnExit:
    """``with checkpointer:`` closes it at the end; when training raised, a close that fails
    too is a warning, so the exception that ended training is the one you see."""

    def close(self) -> None:  # pragma: no cover - every checkpointer defines its own
        raise NotImplementedError

    def __enter__(self):  # returns the subclass instance
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except CheckpointError as e:  # don't hide the exception that ended training
            warnings.warn(f"{e}", stacklevel=2)
