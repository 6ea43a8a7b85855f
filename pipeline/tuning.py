"""Resumable hyperparameter search: Optuna samples, every trial is a cached stage.

How a search resumes. The study is not stored: it is *replayed*. A rerun creates the same
sampler with the same seed and asks it for trial 0, 1, 2…; each trial is a stage keyed by its
parameters and by the code (and data, through the training function's closure or partial
arguments) of the training function, so a finished trial is served from the store and told
to the study again with its recorded value and intermediate values — no retraining — and the
sampler, having seen the same history, proposes exactly what it proposed the first time.
The interrupted trial has the same key again, so its Checkpointer resumes from its last
epoch checkpoint. Trials a killed process left running can't become zombies: there is no
persisted RUNNING state, only committed trial results. The budget ``n_trials`` counts trials
of the whole search across reruns. When the search space changes, finished trials whose
parameters still lie in the new space are added to the study first and count toward the budget.

After every finished trial that improves on the best, a "best so far" result (model, params,
value) is committed atomically under stage ``<name>.best``, so killing the search at any
instant leaves a loadable best model.
"""

from __future__ import annotations

import contextvars
import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .cache import StageCache, current_stage
from .errors import ConfigError, PipelineError
from .fingerprint import fingerprint
from .runs import record_trial
from .store import DictNode, Manifest, Store
from .store.tree import part

_TRIAL: contextvars.ContextVar[Any] = contextvars.ContextVar("pipeline_optuna_trial", default=None)
SAMPLERS = ("tpe", "random", "grid")


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    """"complete", "pruned" or "failed"."""
    source: str
    """"done" (trained in this run), "cached" (replayed from the store) or "resumed"."""
    reason: str = ""
    intermediate: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    best_model: Any
    trials: list[TrialRecord]
    study: Any

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: number, params, value, state, source."""
        return [
            {"trial": t.number, **t.params, "value": t.value, "state": t.state, "source": t.source} for t in self.trials
        ]


def _check_train_fn(train_fn: Any) -> None:
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


def _distributions(space: Mapping[str, Any]) -> dict[str, Any]:
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


def _sampler(kind: str, seed: int, dists: Mapping[str, Any]) -> Any:
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


class TrialCheckpointer:
    """The Checkpointer a trial's training function gets: it also reports the monitored
    metric to Optuna each epoch and stops a trial the pruner prunes."""

    def __init__(self, inner: Any, monitor: str | None, intermediate: dict[int, float]) -> None:
        self._inner = inner
        self._monitor = monitor
        self._intermediate = intermediate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def step(self, epoch: int, state: Any, metrics: Mapping[str, float]) -> bool:
        stop = self._inner.step(epoch, state, metrics)
        trial = _TRIAL.get()
        if self._monitor is None or self._monitor not in metrics:
            return stop
        value = float(metrics[self._monitor])
        self._intermediate[epoch] = value
        if trial is not None:
            import optuna

            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self._monitor}={value:.6g}")
        return stop


def _run_trial(
    train_fn: Callable[..., Any],
    params: dict[str, Any],
    monitor: str | None,
    checkpoint: Mapping[str, Any],
    catch: tuple[type[BaseException], ...] = (),
    early_stopping: Any = None,
) -> dict[str, Any]:
    """The body of a trial stage: train once; return state, value, intermediate values, model.

    Of the Checkpointer's options only ``early_stopping`` can change a trial's result, so it is
    an argument of its own, part of the trial's key; ``checkpoint`` (how often and how a trial
    checkpoints) is not, and may change between runs without retraining finished trials."""
    import optuna

    intermediate: dict[int, float] = {}
    inner = _make_checkpointer({**checkpoint, "early_stopping": early_stopping})
    ckpt = TrialCheckpointer(inner, monitor, intermediate)

    def record(state: str, value: float | None, reason: str = "", model: Any = None) -> dict[str, Any]:
        # Two objects per trial at most: the small facts as one JSON object, and the model.
        resumed = getattr(inner, "resumed_from", None) is not None
        facts = {"state": state, "value": value, "reason": reason, "intermediate": _keys(intermediate),
                 "resumed": resumed, "params": dict(params)}  # fmt: skip
        return {"record": facts, "model": model}

    try:
        out = train_fn(dict(params), ckpt)
    except optuna.TrialPruned as e:
        return record("pruned", None, str(e))
    except catch as e:
        return record("failed", None, f"{type(e).__name__}: {e}")
    finally:
        inner.close()
    value, model = out if isinstance(out, tuple) else (out, None)
    if isinstance(value, (list, tuple, dict)) or value is None:
        raise PipelineError(f"tune: the training function must return a number or (number, model), got {out!r}")
    value = float(value)
    if math.isnan(value):
        return record("failed", None, "objective is NaN", model)
    return record("complete", value, "", model)


def _keys(d: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in d.items()}


def _make_checkpointer(options: Mapping[str, Any]) -> Any:
    """The trial's Checkpointer, under the trial stage's key.

    Epoch checkpoints of a trial are written without fsync unless ``durable=True``: a power
    cut can then tear only checkpoints, which restore verifies and skips (resuming from an
    older one or from scratch), while the trial's committed result stays fsynced. This keeps
    per-trial overhead near zero on disks where fsync costs tens of milliseconds. The
    checkpoint after the last epoch is skipped (``save_last=False``): the trial's result,
    committed right after, supersedes it."""
    from .training import Checkpointer

    kwargs = {"save_last": False, **{k: v for k, v in options.items() if k != "durable"}}
    running = current_stage()
    if running is not None and not options.get("durable", False) and "store" not in kwargs:
        kwargs.update(store=running.store.relaxed(), name=running.stage, key=running.key)
    return Checkpointer(**kwargs)


def tune(
    train_fn: Callable[..., Any],
    space: Mapping[str, Any],
    *,
    n_trials: int,
    sampler: str = "tpe",
    seed: int = 0,
    direction: str = "minimize",
    store: Store | str | None = None,
    name: str = "tune",
    pruner: Any = None,
    monitor: str | None = "val_loss",
    checkpoint: Mapping[str, Any] | None = None,
    catch: Sequence[type[BaseException]] = (),
    parallel: int = 1,
    map_fn: Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]] | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Run (or resume) a search of ``n_trials`` trials; see the module docstring.

    ``train_fn(params, checkpointer) -> value`` or ``(value, model)``; each call is a stage
    named ``<name>.trial``. ``parallel`` trials are asked at once and run through ``map_fn``
    (e.g. Prefect task runners, see ``pipeline.integrations.prefect.prefect_map``); results
    equal the sequential run for grid and random search. Trials run through ``map_fn`` are
    not pruned.
    """
    import optuna

    if not isinstance(n_trials, int) or n_trials <= 0:
        raise ConfigError(f"tune: n_trials must be a positive integer, got {n_trials!r}")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"tune: direction must be 'minimize' or 'maximize', got {direction!r}")
    if parallel < 1:
        raise ConfigError(f"tune: parallel must be >= 1, got {parallel!r}")
    if pruner is not None and parallel > 1 and map_fn is not None:
        warnings.warn(
            f"tune: search {name!r} runs {parallel} trials at once through map_fn, where the pruner can't "
            "see them: they run unpruned (use parallel=1 to prune)",
            stacklevel=2,
        )
    _check_train_fn(train_fn)
    dists = _distributions(space)
    the_sampler = _sampler(sampler, seed, dists)
    if store is None:
        from .config import Settings

        store = Settings.load().store
    running = current_stage()  # a search inside a stage reports its trials to that run
    cache = StageCache(store if isinstance(store, Store) else Store(store), run_id=running.run_id if running else None)
    trial_stage = cache.wrap(_run_trial, name=f"{name}.trial", ignore=["catch", "checkpoint"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # No pruning unless asked for (Optuna's default would be a MedianPruner).
    study = optuna.create_study(sampler=the_sampler, pruner=pruner or optuna.pruners.NopPruner(), direction=direction)
    checkpoint = dict(checkpoint or {})
    stopping = checkpoint.pop("early_stopping", None)
    space_text = space_repr(dists)
    search_key = fingerprint(["search/1", name, space_text, sampler, seed, direction, train_fn, monitor,
                              stopping])  # fmt: skip
    records: list[TrialRecord] = []
    best: dict[str, Any] | None = None
    sign = 1.0 if direction == "minimize" else -1.0

    stored_best = cache.store.manifest(f"{name}.best", search_key)
    index = {"search": name, "key": search_key, "sampler": sampler, "seed": seed, "direction": direction,
             "n_trials": n_trials, "space": space_text}  # fmt: skip

    def finish(trial: Any, outcome: Any, seconds: float) -> None:
        nonlocal best
        facts, model = outcome.value["record"], outcome.value["model"]
        inter = {int(k): v for k, v in facts["intermediate"].items()}
        if outcome.hit:
            for step, v in sorted(inter.items()):
                trial.report(v, step)
        state = facts["state"]
        if state == "complete":
            study.tell(trial, facts["value"])
        else:
            study.tell(
                trial, state=optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL
            )
        source = "cached" if outcome.hit else ("resumed" if facts.get("resumed") else "done")
        record = TrialRecord(trial.number, dict(trial.params), facts["value"], state, source, facts["reason"], inter,
                             seconds)  # fmt: skip
        records.append(record)
        _drop_checkpoints(cache.store, outcome.manifest)  # the committed trial supersedes them
        if state == "complete" and (best is None or sign * record.value < sign * best["value"]):
            best = {"params": record.params, "value": record.value, "trial": record.number, "model": model,
                    "tree": outcome.manifest.outputs}  # fmt: skip
            previous = stored_best.extra.get("value") if stored_best is not None else None
            if previous is None or sign * record.value < sign * previous:  # a replay rewrites nothing
                _commit_best(cache.store, name, search_key, best)
        if running is not None:
            record_trial(cache.store, running.run_id, name, record)
        _write_index(cache.store, name, search_key, index, records)
        if on_trial is not None:
            on_trial(record)

    if sampler != "grid" and stored_best is None:
        # Not a rerun of this very search: seed it with finished trials of earlier searches of
        # the same name, training function and options whose parameters lie in the new space.
        # (A grid search needs no seeding: its points are asked again and served as hits.)
        for prior in _compatible_trials(cache.store, name, dists, train_fn, monitor, stopping):
            study.add_trial(prior)
            frozen = study.trials[-1]
            inter = dict(prior.intermediate_values)
            records.append(TrialRecord(frozen.number, dict(prior.params), prior.value, "complete", "cached", "",
                                       inter))  # fmt: skip
            if best is None or sign * prior.value < sign * best["value"]:
                best = {"params": dict(prior.params), "value": prior.value, "trial": frozen.number,
                        "model": None, "tree": prior.user_attrs["tree"]}  # fmt: skip
            if len(records) >= n_trials:
                break
        if best is not None:
            _commit_best(cache.store, name, search_key, best)
            _write_index(cache.store, name, search_key, index, records)
    exhausted = getattr(the_sampler, "is_exhausted", lambda _study: False)
    while len(records) < n_trials and not exhausted(study):
        batch = [study.ask(dists) for _ in range(min(parallel, n_trials - len(records)))]
        calls = [(train_fn, dict(t.params), monitor, checkpoint, tuple(catch), stopping) for t in batch]
        t0 = time.perf_counter()
        if len(batch) == 1 or map_fn is None:
            outcomes = []
            for t, args in zip(batch, calls):
                token = _TRIAL.set(t)
                try:
                    outcomes.append(trial_stage.call(*args))
                finally:
                    _TRIAL.reset(token)
        else:
            outcomes = map_fn(trial_stage.call, calls)
        seconds = (time.perf_counter() - t0) / len(batch)
        for t, outcome in zip(batch, outcomes):
            finish(t, outcome, seconds)

    if best is None:
        raise PipelineError(f"tune: none of the {n_trials} trials of search {name!r} completed (see result.trials)")
    if best["model"] is None:  # the best is a reused trial of an earlier search: load its model now
        best["model"] = cache.store.load(best["tree"])["model"]
    return TuneResult(best["params"], best["value"], best["model"], records, study)


def _compatible_trials(
    store: Store,
    name: str,
    dists: Mapping[str, Any],
    train_fn: Callable[..., Any],
    monitor: str | None,
    stopping: Any,
) -> list[Any]:
    """Finished trials of searches named ``name`` that this search may reuse, oldest first:
    same training function, monitored metric and early stopping."""
    import optuna

    want = {"train_fn": fingerprint(train_fn), "monitor": fingerprint(monitor), "early_stopping": fingerprint(stopping)}
    out: list[Any] = []
    for m in sorted(store.manifests(f"{name}.trial"), key=lambda m: m.created):
        if any(m.argument(arg) != fp for arg, fp in want.items()):
            continue
        try:  # the small record only; the model is loaded if it turns out to be the best
            parts = store.load(part(m.outputs, "record"))
        except PipelineError:
            continue
        parts = parts.get("record", parts)
        params = parts.get("params")
        if parts.get("state") != "complete" or not isinstance(params, dict) or set(params) != set(dists):
            continue
        if not all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in params.items()):
            continue
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions=dict(dists),
                value=parts["value"],
                intermediate_values={int(k): v for k, v in parts.get("intermediate", {}).items()},
                user_attrs={"tree": m.outputs},
            )
        )
    return out


def _drop_checkpoints(store: Store, trial: Manifest) -> None:
    """Delete the epoch checkpoints of a committed trial (its result holds what counts)."""
    store.checkpoints(trial.stage, trial.key).delete_all()


def space_repr(dists: Mapping[str, Any]) -> dict[str, str]:
    return {k: repr(v) for k, v in sorted(dists.items())}


def _commit_best(store: Store, name: str, search_key: str, best: dict[str, Any]) -> None:
    """Atomically replace the "best so far" record of a search: one manifest whose outputs
    are the best trial's result objects (already in the store: nothing is pickled again)."""
    import datetime as dt

    store.commit(
        Manifest(
            stage=f"{name}.best",
            key=search_key,
            outputs=DictNode.of({"trial": best["tree"]}),
            created=dt.datetime.now(dt.UTC).isoformat(),
            kind="best",
            extra={"params": best["params"], "value": best["value"], "trial": best["trial"]},
        )
    )


def _write_index(store: Store, name: str, search_key: str, meta: dict[str, Any], records: list[TrialRecord]) -> None:
    """The search's trial table as this run left it (``python -m pipeline show <name>``).

    Informational, like run events: rewritten after every trial without fsync; the trials
    themselves are the committed stage results."""
    rows = [{"trial": t.number, "params": t.params, "value": t.value, "state": t.state, "source": t.source,
             "reason": t.reason} for t in sorted(records, key=lambda t: t.number)]  # fmt: skip
    doc = {**meta, "updated": time.time(), "trials": rows}
    store.searches.write_index(name, search_key, doc)


def search_index(store: Store, name: str) -> dict[str, Any] | None:
    """The trial table of the newest search named ``name`` (None: no search wrote one)."""
    return store.searches.newest_index(name)


def load_best(store: Store | str, name: str = "tune") -> dict[str, Any] | None:
    """The newest "best so far" record of search ``name``: params, value, trial, model."""
    store = store if isinstance(store, Store) else Store(store)
    manifest = store.latest(f"{name}.best")
    if manifest is None:
        return None
    facts = {k: manifest.extra.get(k) for k in ("params", "value", "trial")}
    loaded = store.load(manifest.outputs)
    return {**facts, "model": loaded["trial"]["model"] if "trial" in loaded else loaded.get("model")}


def trials_of(store: Store | str, name: str = "tune") -> Iterable[Manifest]:
    """Manifests of every trial of search ``name`` in the store."""
    store = store if isinstance(store, Store) else Store(store)
    return store.manifests(f"{name}.trial")
