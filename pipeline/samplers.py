"""A search's space and sampler in Optuna's terms, checked before any trial runs (errors name
the entry at fault)."""

from __future__ import annotations

import functools
from typing import Any, Mapping

from .errors import ConfigError

SAMPLERS = ("tpe", "random", "grid")


def check_train_fn(train_fn: Any) -> None:
    """A training function takes ``(params, checkpointer)``: say so before any trial runs."""
    import inspect

    if not callable(train_fn):
        raise ConfigError(f"tune: the training function must be callable, got {train_fn!r}")
    try:
        inspect.signature(train_fn).bind({}, None)
    except TypeError as e:
        raise ConfigError(
            f"tune: the training function {getattr(train_fn, '__name__', train_fn)!r} must take (params, checkpointer) "
            f"and return the objective or (objective, model): {e}"
        ) from None
    except ValueError:  # builtins without a signature: let the call tell
        return


def distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    from optuna.distributions import BaseDistribution, CategoricalDistribution

    if not space:
        raise ConfigError("tune: the search space is empty; give at least one parameter")
    out = {}
    for name, dist in space.items():
        if isinstance(dist, BaseDistribution):
            out[name] = dist
        elif isinstance(dist, (list, tuple)) and dist:
            out[name] = CategoricalDistribution(list(dist))
        else:
            raise ConfigError(
                f"tune: search space entry {name!r} = {dist!r} is neither an optuna distribution nor a list of choices"
            )
    return out


def make_sampler(kind: str, seed: int, dists: Mapping[str, Any]) -> Any:
    import optuna
    from optuna.distributions import CategoricalDistribution

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        grid = {}
        for name, d in dists.items():
            if not isinstance(d, CategoricalDistribution):
                raise ConfigError(f"tune: grid search needs a list of choices for {name!r}, got {d!r}")
            grid[name] = list(d.choices)
        return _grid_sampler_class()(grid, seed=seed)
    raise ConfigError(f"tune: unknown sampler {kind!r} (use one of {', '.join(SAMPLERS)})")


@functools.cache
def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its ``study.stop()`` on exhaustion, which only
        works inside ``study.optimize``; ``tune`` stops at exhaustion itself."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridSampler


__all__ = ["SAMPLERS", "check_train_fn", "distributions", "make_sampler"]
