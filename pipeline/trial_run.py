"""One trial of a search: the stage that trains it once and what its training function gets.

The trial stage's body (``run_trial``) trains with a :class:`TrialCheckpointer` (a
Checkpointer that also reports the monitored metric to Optuna each epoch and stops a trial the
pruner prunes) and returns the trial's facts and its model; :class:`TrialStage` stores them as
one object and one manifest. The search loop (:mod:`pipeline.tuning`) sets the Optuna trial
(``TRIAL``) and the sink for pruned checkpoints' objects (``RELEASED``) around each call.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any, Callable, Mapping

from .cache import current_stage
from .errors import PipelineError
from .search_records import FACTS
from .store import Manifest, Store
from .store.checkpoints import free_objects
from .training.policies import EarlyStopping
from .trial_commits import DEFERRED, DeferringStage
from .trials import TrialCheckpointing, TrialFacts

TRIAL: contextvars.ContextVar[Any] = contextvars.ContextVar("pipeline_optuna_trial", default=None)
RELEASED: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("pipeline_released", default=None)


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
        if self._monitor is None or self._monitor not in metrics:
            return stop
        value = float(metrics[self._monitor])
        self._intermediate[epoch] = value
        trial = TRIAL.get()
        if trial is not None:
            trial.report(value, epoch)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self._monitor}={value:.6g}")
        return stop


def run_trial(
    train_fn: Callable[..., Any],
    params: dict[str, Any],
    monitor: str | None,
    checkpointing: TrialCheckpointing,
    catch: tuple[type[BaseException], ...] = (),
    early_stopping: EarlyStopping | None = None,
) -> dict[str, Any]:
    """The body of a trial stage: train once; return the trial's facts (a TrialFacts as JSON,
    committed inside the trial's manifest) and its model (the trial's one object).

    Of the Checkpointer's settings only ``early_stopping`` can change a trial's result, so it is
    an argument of its own, part of the trial's key; ``checkpointing`` (how often and how a
    trial checkpoints) is not, and may change between runs without retraining finished trials."""
    import optuna

    intermediate: dict[int, float] = {}
    inner = make_checkpointer(checkpointing, early_stopping)
    ckpt = TrialCheckpointer(inner, monitor, intermediate)

    def record(state: str, value: float | None, reason: str = "", model: Any = None) -> dict[str, Any]:
        facts = TrialFacts(state, value, dict(params), reason, dict(intermediate), inner.resumed_from is not None)
        return {"record": facts.to_json(), "model": model}

    try:
        out = train_fn(dict(params), ckpt)
    except optuna.TrialPruned as e:
        return record("pruned", None, str(e))
    except catch as e:
        return record("failed", None, f"{type(e).__name__}: {e}")
    finally:
        try:
            inner.close()
        finally:
            release(inner.store, inner.released())
            if (deferred := DEFERRED.get()) is not None:
                deferred.checkpoints = inner.known()
    value, model = out if isinstance(out, tuple) else (out, None)
    if isinstance(value, (list, tuple, dict)) or value is None:
        raise PipelineError(f"tune: the training function must return a number or (number, model), got {out!r}")
    value = float(value)
    if math.isnan(value):
        return record("failed", None, "objective is NaN", model)
    return record("complete", value, "", model)


class TrialStage(DeferringStage):
    """The trial stage: its facts ride in its manifest's ``extra``, its model is its one object
    (a finished trial is one object and one manifest: two files, each fsynced with its directory).
    A search run in one process defers its commit to the committer thread (``DeferringStage``)."""

    def split_result(self, value: Any) -> tuple[Any, dict[str, Any]]:
        return {"model": value["model"]}, {FACTS: value["record"]}

    def join_result(self, manifest: Manifest, served: Any) -> Any:
        facts = manifest.extra.get(FACTS)
        if facts is None:  # committed before the facts moved into the manifest: a record object
            return served
        return {"record": facts, "model": served["model"]}


def release(store: Store, objects: dict[str, int]) -> None:
    """Objects of a trial's pruned epoch checkpoints: to the search running it, which frees
    them with others in one sweep; else (a trial in a worker process) freed now."""
    sink = RELEASED.get()
    if sink is not None:
        sink.update(objects)
    elif objects:
        free_objects(store, objects)


def make_checkpointer(checkpointing: TrialCheckpointing, early_stopping: EarlyStopping | None) -> Any:
    """The trial's Checkpointer, under the trial stage's key.

    Epoch checkpoints of a trial are written without fsync unless ``durable=True``: a power
    cut can then tear only checkpoints, which restore verifies and skips (resuming from an
    older one or from scratch), while the trial's committed result stays fsynced. This keeps
    per-trial overhead near zero on disks where fsync costs tens of milliseconds. The
    checkpoint after the last epoch is skipped (``SkipFinal``): the trial's result, committed
    right after, supersedes it. Pruned checkpoints' objects are not freed one gc sweep per
    prune (each sweep reads every manifest of the store) but handed to ``release``."""
    from .training import Checkpointer

    kwargs = {**checkpointing.options(early_stopping), "free_pruned": False}  # freed by release
    running = current_stage()
    if running is not None and not checkpointing.durable:
        kwargs.update(store=running.store.relaxed(), name=running.stage, key=running.key)
    return Checkpointer(**kwargs)
