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

A finished trial is one object (its model) and one manifest carrying its facts (state, value,
params, intermediate values), each fsynced with its directory, the object first. Its epoch
checkpoints (unfsynced unless ``durable=True``) are dropped once it has committed; their
objects are freed by the search together, one gc sweep every ``FREE_EVERY`` seconds and one
at the end of the run, instead of one sweep per prune. A search run in one process commits
each trial in a background thread while the next one trains (:mod:`pipeline.trial_commits`),
and reports it (``on_trial``, the result) once that commit has landed.

::

    search = Search("tune", SPACE, train, n_trials=20, sampler="tpe", seed=0,
                    checkpointing=TrialCheckpointing(save=EveryNEpochs(5), keep=LatestN(1)))
    result = search.run(store)          # a SearchResult: .best (a Best), .trials (TrialRecords)
    load_best(store, "tune")            # the best of the latest run's search, and which one it is

``tune(train, SPACE, n_trials=20, ...)`` is the same in one call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .cache import StageCache, current_stage
from .context import current, current_store, open_store
from .errors import ConfigError, PipelineError
from .fingerprint import fingerprint
from .fingerprint.code import remembering_code
from .keys import search_key as search_key_of
from .runs import record_trial
from .samplers import check_train_fn, distributions, make_sampler
from .search_records import (
    commit_best,
    load_best,
    search_index,
    search_indexes,
    trial_facts,
    trials_of,
    which_search,
    write_index,
)
from .store import Manifest, Store
from .store.checkpoints import Known, free_objects
from .training.policies import EarlyStopping
from .training.writer import sharing
from .trial_commits import DEFERRED, Commit, Committer, Deferred
from .trial_run import RELEASED, TRIAL, TrialStage, run_trial
from .trials import Best, SearchRef, SearchResult, TrialCheckpointing, TrialFacts, TrialRecord, TuneResult

INDEX_EVERY = 1.0
"""Seconds between rewrites of a search's trial table while it runs (and once at its end):
the table is informational, the committed trials are the record, and rewriting all of it
after every short trial cost milliseconds each."""
FREE_EVERY = 30.0
"""Seconds at least between two sweeps that free the objects of trials' dropped epoch
checkpoints (and at least 20 times the last sweep took: a sweep reads every manifest of the
store). Each sweep is gc's set-aside protocol; one per search run at its end too. A killed
run leaves what it had not freed yet to ``gc`` (unreferenced objects, never a result's)."""
MapFn = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


@dataclass(frozen=True)
class Search:
    """A resumable hyperparameter search (see the module docstring); ``run()`` runs or resumes it.

    ``train_fn(params, checkpointer) -> value`` or ``(value, model)``; each call is a stage
    named ``<name>.trial``, keyed by the parameters, the training function's code and data,
    ``monitor`` and ``early_stopping``. ``n_trials`` is the budget of the whole search, across
    reruns. ``monitor`` is the metric reported to the pruner each epoch; ``catch`` lists the
    exceptions that fail a trial instead of the search; ``checkpointing`` is how trials
    checkpoint (not part of any key)."""

    name: str
    space: Mapping[str, Any]
    train_fn: Callable[..., Any]
    n_trials: int
    sampler: str = "tpe"
    seed: int = 0
    direction: str = "minimize"
    monitor: str | None = "val_loss"
    early_stopping: EarlyStopping | None = None
    pruner: Any = None
    catch: tuple[type[BaseException], ...] = ()
    checkpointing: TrialCheckpointing = TrialCheckpointing()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"tune: a search needs a name (a non-empty string), not {self.name!r}")
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials <= 0:
            raise ConfigError(f"tune: n_trials must be a positive integer, got {self.n_trials!r}")
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"tune: direction must be 'minimize' or 'maximize', got {self.direction!r}")
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise ConfigError(f"tune: early_stopping= takes an EarlyStopping(...), not {self.early_stopping!r}")
        if not isinstance(self.checkpointing, TrialCheckpointing):
            raise ConfigError(
                f"tune: checkpointing= takes a TrialCheckpointing(save=..., keep=...), not {self.checkpointing!r}"
            )
        stopping, content = self.early_stopping, self.checkpointing.content
        if stopping is not None and stopping.restore_best and not content.resumable:
            raise ConfigError(
                f"tune: EarlyStopping(restore_best=True) needs model state, which {content!r} does not save"
            )
        check_train_fn(self.train_fn)
        object.__setattr__(self, "catch", tuple(self.catch))
        object.__setattr__(self, "_dists", distributions(self.space))
        make_sampler(self.sampler, self.seed, self._dists)  # a bad sampler or grid fails here, not mid-run

    @functools.cached_property
    def key(self) -> str:
        """What identifies the search (not the budget, pruner or checkpointing)."""
        return search_key_of(self.name, self.train_fn, space=space_repr(self._dists), sampler=self.sampler,
                             seed=self.seed, direction=self.direction, monitor=self.monitor,
                             early_stopping=self.early_stopping)  # fmt: skip

    def run(
        self,
        store: Store | str | None = None,
        *,
        parallel: int | None = None,
        map_fn: MapFn | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> SearchResult:
        """Run (or resume) the search on ``store`` (default: the configured store).

        ``parallel`` trials are asked at once (None: as many as the run's task runner runs at
        once, 1 outside a ``--runner dask`` run); with ``map_fn`` (e.g.
        ``pipeline.integrations.prefect.prefect_map()``) they run through it side by side, and
        unpruned; without, one by one. Results equal the sequential run: grid and random
        proposals don't depend on the trials told before them, and a TPE search asks in
        batches only during its random start-up trials, one at a time after.
        ``on_trial`` hears every finished trial once it is committed (trained in this process: in
        the background, while the next trial trains, so it hears of a trial after the next one
        trained)."""
        if parallel is None:
            parallel = current().parallel if map_fn is not None else 1
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError(f"tune: parallel must be >= 1, got {parallel!r}")
        if self.pruner is not None and parallel > 1 and map_fn is not None:
            warnings.warn(
                f"tune: search {self.name!r} runs {parallel} trials at once through map_fn, where the pruner can't "
                "see them: they run unpruned (use parallel=1 to prune)",
                stacklevel=2,
            )
        return _SearchRun(self, _open_store(store), parallel, map_fn, on_trial).run()


def _open_store(store: Store | str | None) -> Store:
    if store is None:
        return current_store()
    return open_store(store)


class _SearchRun:
    """One run of a search: the study, the trials finished so far, the best so far."""

    def __init__(self, search: Search, store: Store, parallel: int, map_fn: MapFn | None, on_trial: Any) -> None:
        import optuna

        self.search, self.parallel, self.map_fn, self.on_trial = search, parallel, map_fn, on_trial
        self.running = current_stage()  # a search inside a stage reports its trials to that run
        self.cache = StageCache(store, run_id=self.running.run_id if self.running else None)
        self.store = self.cache.store
        self.stage = TrialStage(self.cache, run_trial, name=f"{search.name}.trial", version=None,
                                 ignore=["catch", "checkpointing"])  # fmt: skip
        self.dists = search._dists
        self.sampler = make_sampler(search.sampler, search.seed, self.dists)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # No pruning unless asked for (Optuna's default would be a MedianPruner).
        pruner = search.pruner or optuna.pruners.NopPruner()
        self.study = optuna.create_study(sampler=self.sampler, pruner=pruner, direction=search.direction)
        self.sign = 1.0 if search.direction == "minimize" else -1.0
        self.key = search.key
        self.records: list[TrialRecord] = []
        self.best: Best | None = None
        self.stored_best = self.store.manifest(f"{search.name}.best", self.key)
        self.index = self._index_meta()
        self._index_written = -math.inf  # the first finished trial writes the index at once
        self._index_dirty = False
        self.released: dict[str, int] = {}  # objects of dropped epoch checkpoints, not freed yet
        self._free_at = time.monotonic() + FREE_EVERY
        self.committer = Committer()

    def _index_meta(self) -> dict[str, Any]:
        """The search index's header: what the search is, the run that last worked on it, and
        every (stage, key) that ran it — so a run that served that stage from the store can be
        told which search it used."""
        s = self.search
        used_by: list[list[str]] = []
        for doc in search_indexes(self.store, s.name):
            if doc.get("key") == self.key:
                used_by = [list(u) for u in doc.get("used_by", []) if isinstance(u, list)]
                break
        if self.running is not None and [self.running.stage, self.running.key] not in used_by:
            used_by.append([self.running.stage, self.running.key])
        return {"search": s.name, "key": self.key, "sampler": s.sampler, "seed": s.seed, "direction": s.direction,
                "n_trials": s.n_trials, "space": space_repr(self.dists), "run_id": self.cache.run_id,
                "used_by": used_by}  # fmt: skip

    def _flush_index(self) -> None:
        write_index(self.store, self.search.name, self.key, self.index, self.records)
        self._index_written, self._index_dirty = time.monotonic(), False

    def _batch(self) -> int:
        """How many trials to ask before telling any: ``parallel``, except where the sampler's
        next proposal depends on the trials told before it (TPE after its random start-up
        trials), so that the search proposes what the sequential search proposes."""
        import optuna

        startup = getattr(self.sampler, "_n_startup_trials", None)
        if self.parallel == 1 or not isinstance(self.sampler, optuna.samplers.TPESampler) or startup is None:
            return self.parallel
        counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # as TPE counts them
        told = len(self.study.get_trials(deepcopy=False, states=counted))
        return max(1, min(self.parallel, startup - told))

    def _free_released(self) -> None:
        """One sweep over the objects of the epoch checkpoints dropped since the last one."""
        if not self.released:
            return
        t0 = time.monotonic()
        objects = dict(self.released)
        self.released.clear()  # (the dict the trials running in this process add to)
        free_objects(self.store, objects)
        took = time.monotonic() - t0
        self._free_at = time.monotonic() + max(FREE_EVERY, 20 * took)

    def _improves(self, value: float) -> bool:
        return self.best is None or self.sign * value < self.sign * self.best.value

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        # Every trial keys the same training code: its code fingerprint is computed once per run.
        with remembering_code():
            token = RELEASED.set(self.released)
            done = False
            try:
                self._run_trials()
                done = True
            finally:
                try:
                    self.committer.close(report=done)  # the last trial's commit lands (and is reported)
                finally:
                    RELEASED.reset(token)
                    if self._index_dirty:  # the trial table as this run leaves it, also when a trial raised
                        self._flush_index()
                    self._free_released()
        best = self.best
        if best is None:
            raise PipelineError(
                f"tune: none of the {self.search.n_trials} trials of search {self.search.name!r} completed (see trials)"
            )
        if best.model is None and best.tree is not None:  # a reused trial of an earlier search: load its model
            best = dataclasses.replace(best, model=self.store.load(best.tree)["model"])
        return SearchResult(self.search.name, self.key, best, self.records, self.study)

    def _run_trials(self) -> None:
        s = self.search
        if s.sampler != "grid" and self.stored_best is None:
            self._seed_from_earlier_searches()
        exhausted = getattr(self.sampler, "is_exhausted", lambda _study: False)
        while len(self.records) < s.n_trials and not exhausted(self.study):
            batch = [self.study.ask(self.dists) for _ in range(min(self._batch(), s.n_trials - len(self.records)))]
            calls = [(s.train_fn, dict(t.params), s.monitor, s.checkpointing, s.catch, s.early_stopping) for t in batch]
            t0 = time.perf_counter()
            if len(batch) == 1:
                outcomes = [self._call(batch[0], calls[0])]
            elif self.map_fn is None:  # asked together, told together: each committed in its call
                outcomes = [(self._call(t, args, defer=False)[0], None) for t, args in zip(batch, calls)]
            else:
                outcomes = [(outcome, None) for outcome in self.map_fn(self.stage.call, calls)]
            seconds = (time.perf_counter() - t0) / len(batch)
            for i, (t, (outcome, deferred)) in enumerate(zip(batch, outcomes)):
                try:
                    self._finish(t, outcome, seconds, deferred)
                except BaseException:
                    for _, later in outcomes[i + 1 :]:
                        if later is not None:
                            later.release()  # not committed: trained again by the next run
                    raise

    def _call(self, trial: Any, args: tuple[Any, ...], defer: bool = True) -> tuple[Any, Deferred | None]:
        """Run (or serve) one trial in this process; with ``defer``, a computed result's commit
        is left to :meth:`_finish` (the committer thread). Not within a batch: a trial must not
        wait for the lease of one asked with it whose commit has not started."""
        deferred = Deferred() if defer else None
        tokens = TRIAL.set(trial), DEFERRED.set(deferred)
        try:
            with sharing(self.committer.lane()):  # its checkpoints are written on the committer's thread
                return self.stage.call(*args), deferred
        except BaseException:
            if deferred is not None:
                deferred.release()  # (not committed: trained again by the next run)
            raise
        finally:
            DEFERRED.reset(tokens[1])
            TRIAL.reset(tokens[0])

    def _seed_from_earlier_searches(self) -> None:
        """Not a rerun of this very search: seed it with finished trials of earlier searches of
        the same name, training function and options whose parameters lie in the new space.
        (A grid search needs no seeding: its points are asked again and served as hits.)"""
        s = self.search
        for prior in _compatible_trials(self.store, s.name, self.dists, s.train_fn, s.monitor, s.early_stopping):
            self.study.add_trial(prior)
            number = self.study.trials[-1].number
            inter = dict(prior.intermediate_values)
            self.records.append(TrialRecord(number, dict(prior.params), prior.value, "complete", "cached", "", inter))
            if self._improves(prior.value):
                self.best = Best(dict(prior.params), prior.value, number, None, prior.user_attrs["tree"])
            if len(self.records) >= s.n_trials:
                break
        if self.best is not None:
            commit_best(self.store, s.name, self.key, self.best)
            self._flush_index()

    def _finish(self, trial: Any, outcome: Any, seconds: float, deferred: Deferred | None = None) -> None:
        """Land the previous trial's commit (and report that trial); tell the study, record
        the trial, commit it with a new best (in the committer thread when its save was
        deferred: the next trial trains meanwhile), report it once committed."""
        try:
            self.committer.land()
            record, new_best = self._tell(trial, outcome, seconds)
        except BaseException:
            if deferred is not None:
                deferred.release()  # not committed: trained again by the next run
            raise
        if deferred is None or deferred.save is None:  # committed in the call: a hit, a forced or a worker's trial
            self._landed(record, outcome.manifest, self._after_commit(outcome.manifest, record, new_best), True)
            return
        key, value, compute_seconds = deferred.save
        known = deferred.checkpoints
        landed: dict[str, Any] = {}

        def save() -> None:
            try:
                landed["manifest"] = self.stage.commit_now(key, value, compute_seconds)
            finally:
                deferred.release()

        def after() -> None:
            landed["dropped"] = self._after_commit(landed["manifest"], record, new_best, known)

        def then(report: bool) -> None:
            self._landed(record, landed["manifest"], landed["dropped"], report)

        self.committer.submit(Commit(f"trial {record.number} of search {self.search.name!r}", [save, after], then))

    def _tell(self, trial: Any, outcome: Any, seconds: float) -> tuple[TrialRecord, Best | None]:
        """Tell the study how the trial went; its record, and the new best to commit (if it is one)."""
        import optuna

        facts = TrialFacts.from_json(outcome.value["record"])
        if outcome.hit:
            for step, v in sorted(facts.intermediate.items()):
                trial.report(v, step)
        if facts.state == "complete":
            self.study.tell(trial, facts.value)
        else:
            failed = optuna.trial.TrialState.PRUNED if facts.state == "pruned" else optuna.trial.TrialState.FAIL
            self.study.tell(trial, state=failed)
        source = "cached" if outcome.hit else ("resumed" if facts.resumed else "done")
        record = TrialRecord(trial.number, dict(trial.params), facts.value, facts.state, source, facts.reason,
                             facts.intermediate, seconds)  # fmt: skip
        self.records.append(record)
        new_best = None
        if facts.state == "complete" and self._improves(record.value):
            self.best = Best(record.params, record.value, record.number, outcome.value["model"])
            previous = self.stored_best.extra.get("value") if self.stored_best is not None else None
            forced = self.running is not None and self.running.forced  # a forced search replaces its old best
            improves = previous is None or self.sign * record.value < self.sign * previous  # a replay rewrites nothing
            new_best = self.best if forced or improves else None
        return record, new_best

    def _after_commit(
        self, manifest: Manifest, record: TrialRecord, best: Best | None, known: Known | None = None
    ) -> dict[str, int]:
        """Once a trial is committed (in the committer thread when deferred): drop its epoch
        checkpoints (its result supersedes them; their objects are returned, to be freed; ``known``:
        what its Checkpointer knew of them), commit it as the new best, record the run's trial event."""
        dropped = _drop_checkpoints(self.store, manifest, known)
        if best is not None:
            commit_best(self.store, self.search.name, self.key, dataclasses.replace(best, tree=manifest.outputs))
        if self.running is not None:
            record_trial(self.store, self.running.run_id, self.search.name, record)
        return dropped

    def _landed(self, record: TrialRecord, manifest: Manifest, dropped: dict[str, int], report: bool) -> None:
        """A trial's commit has landed: the search's bookkeeping, then report the trial."""
        self.released.update(dropped)
        if self.best is not None and self.best.trial == record.number and self.best.tree is None:
            self.best = dataclasses.replace(self.best, tree=manifest.outputs)
        if time.monotonic() >= self._free_at:
            self._free_released()
        self._index_dirty = True
        if not report:
            return
        if time.monotonic() - self._index_written >= INDEX_EVERY:
            self._flush_index()
        if self.on_trial is not None:
            self.on_trial(record)


_GONE = {"checkpoint": "checkpointing=TrialCheckpointing(save=..., keep=..., writer=...), and early_stopping=..."}


def tune(
    train_fn: Callable[..., Any],
    space: Mapping[str, Any],
    *,
    n_trials: int,
    store: Store | str | None = None,
    name: str = "tune",
    parallel: int = 1,
    map_fn: MapFn | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    **options: Any,
) -> SearchResult:
    """``Search(name, space, train_fn, n_trials, **options).run(store, parallel=, map_fn=, on_trial=)``
    in one call: run (or resume) a search; see :class:`Search` for the options."""
    for gone, instead in _GONE.items():
        if gone in options:
            raise ConfigError(f"tune({gone}=...) is gone: options became policies; pass {instead}")
    fields = {f.name for f in dataclasses.fields(Search)} - {"name", "space", "train_fn", "n_trials"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"tune() got unexpected argument(s) {unknown} (its options: {', '.join(sorted(fields))})")
    search = Search(name, space, train_fn, n_trials, **options)
    return search.run(store, parallel=parallel, map_fn=map_fn, on_trial=on_trial)


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
        facts = trial_facts(store, m)  # the small record only; the model is loaded if it is the best
        if facts is None or facts.state != "complete" or set(facts.params) != set(dists):
            continue
        if not all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in facts.params.items()):
            continue
        out.append(
            optuna.trial.create_trial(
                params=facts.params,
                distributions=dict(dists),
                value=facts.value,
                intermediate_values=dict(facts.intermediate),
                user_attrs={"tree": m.outputs},
            )
        )
    return out


def _drop_checkpoints(store: Store, trial: Manifest, known: Known | None = None) -> dict[str, int]:
    """Delete the epoch checkpoints of a committed trial (its result holds what counts); the
    objects they referenced, to be freed."""
    checkpoints = store.checkpoints(trial.stage, trial.key)
    return checkpoints.drop_all() if known is None else checkpoints.drop(known.steps, known)


def space_repr(dists: Mapping[str, Any]) -> dict[str, str]:
    return {k: repr(v) for k, v in sorted(dists.items())}


__all__ = ["Search", "tune", "TrialCheckpointing", "SearchResult", "TuneResult", "TrialRecord", "Best", "SearchRef",
           "load_best", "which_search", "search_index", "search_indexes", "trials_of", "trial_facts",
           "space_repr"]  # fmt: skip
