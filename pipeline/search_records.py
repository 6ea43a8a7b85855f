"""What a search leaves in the store and how it is read back (:mod:`pipeline.tuning` runs
searches): each trial's facts in its manifest, the best-so-far record, the trial table, and
which search a question (``show``, ``load_best``) is about."""

from __future__ import annotations

import time
from typing import Any, Iterable

from .context import open_store
from .errors import ConfigError, PipelineError
from .runs import run_summaries
from .store import DictNode, Manifest, Store
from .store.tree import part
from .trials import Best, SearchRef, TrialFacts, TrialRecord

FACTS = "trial"
"""The key of a trial manifest's ``extra`` that holds its facts (a TrialFacts as JSON)."""


def trial_facts(store: Store, trial: Manifest) -> TrialFacts | None:
    """The facts of a committed trial (None: unreadable, or not a trial record)."""
    try:
        doc = trial.extra.get(FACTS)
        if doc is None:  # a trial committed before its facts moved into its manifest
            parts = store.load(part(trial.outputs, "record"))
            doc = parts.get("record", parts)
        return TrialFacts.from_json(doc)
    except (PipelineError, KeyError, ValueError, TypeError, AttributeError):
        return None


def commit_best(store: Store, name: str, search_key: str, best: Best) -> None:
    """Atomically replace the "best so far" record of a search: one manifest whose outputs
    are the best trial's result objects (already in the store: nothing is pickled again)."""
    import datetime as dt

    store.commit(
        Manifest(
            stage=f"{name}.best",
            key=search_key,
            outputs=DictNode.of({"trial": best.tree}),
            created=dt.datetime.now(dt.UTC).isoformat(),
            kind="best",
            extra={"params": best.params, "value": best.value, "trial": best.trial},
        )
    )


def write_index(store: Store, name: str, search_key: str, meta: dict[str, Any], records: list[TrialRecord]) -> None:
    """The search's trial table as this run left it (``python -m pipeline show <name>``).

    Informational, like run events: rewritten without fsync after the first finished trial,
    then at most every ``tuning.INDEX_EVERY`` seconds and when the run ends (a SIGKILLed run's table
    may miss its last second of trials until the next run replays them); the trials themselves
    are the committed stage results."""
    rows = [{"trial": t.number, "params": t.params, "value": t.value, "state": t.state, "source": t.source,
             "reason": t.reason} for t in sorted(records, key=lambda t: t.number)]  # fmt: skip
    doc = {**meta, "updated": time.time(), "trials": rows}
    store.searches.write_index(name, search_key, doc)


def search_index(store: Store, name: str) -> dict[str, Any] | None:
    """The trial table of the newest search named ``name`` (None: no search wrote one)."""
    return store.searches.newest_index(name)


def search_indexes(store: Store, name: str) -> list[dict[str, Any]]:
    """The trial tables of every search named ``name``, the most recently updated first."""
    return store.searches.indexes(name)


def which_search(store: Store | str, name: str = "tune", *, key: str | None = None) -> SearchRef | None:
    """The search named ``name`` that a question is about, and why that one.

    With ``key`` (a search key, or a prefix of its hex digits): that search. Else the search
    the latest run used — the run that trained or replayed its trials, or that served the
    stage running it from the store — going back run by run to the latest one that used a
    search of this name. Without run records: the most recently updated search. None: there
    is no search of that name."""
    store = open_store(store)
    docs = search_indexes(store, name)
    if key is not None:
        return _search_by_key(store, name, key, docs)
    for n, run in enumerate(run_summaries(store) if docs else ()):
        run_id = run.get("run_id")
        stages = {(e.get("stage"), e.get("key")) for e in run["stages"]}
        for doc in docs:
            used_by = {tuple(u) for u in doc.get("used_by", []) if isinstance(u, list) and len(u) == 2}
            if doc.get("run_id") == run_id or used_by & stages:
                why = f"used by the latest run {run_id}" if n == 0 else f"used by run {run_id}, the latest using one"
                return SearchRef(name, doc["key"], why, run_id, doc)
    if docs:
        return SearchRef(name, docs[0]["key"], "the most recently updated search; no run record names one", None,
                         docs[0])  # fmt: skip
    best = store.latest(f"{name}.best")  # a store written before search indexes existed
    return None if best is None else SearchRef(name, best.key, "the newest best-so-far record", None, None)


def _search_by_key(store: Store, name: str, key: str, docs: list[dict[str, Any]]) -> SearchRef:
    digest = key.partition(":")[2] if key.startswith("xxh3:") else key
    keys: dict[str, Any] = {m.key: None for m in store.manifests(f"{name}.best")}
    keys.update({d["key"]: d for d in docs})
    matches = [k for k in keys if k.partition(":")[2].startswith(digest)] if digest else []
    if not matches:
        known = ", ".join(sorted(k[:17] for k in keys)) or "none"
        raise ConfigError(f"no search {name!r} with key {key!r} in {store.url} (its searches: {known})")
    if len(matches) > 1:
        raise ConfigError(f"search key prefix {key!r} is ambiguous ({len(matches)} searches named {name!r})")
    return SearchRef(name, matches[0], "named by key", None, keys[matches[0]])


def load_best(store: Store | str, name: str = "tune", *, key: str | None = None) -> Best | None:
    """The best-so-far record of the search ``which_search(store, name, key=key)`` picks (the
    latest run's, unless ``key`` names one), with its model; ``.search`` says which search."""
    store = open_store(store)
    ref = which_search(store, name, key=key)
    manifest = None if ref is None else store.manifest(f"{name}.best", ref.key)
    if manifest is None:
        return None
    extra = manifest.extra
    loaded = store.load(manifest.outputs)
    model = loaded["trial"]["model"] if "trial" in loaded else loaded.get("model")
    return Best(dict(extra.get("params") or {}), extra.get("value"), extra.get("trial"), model, manifest.outputs, ref)


def trials_of(store: Store | str, name: str = "tune") -> Iterable[Manifest]:
    """Manifests of every trial of search ``name`` in the store."""
    store = open_store(store)
    return store.manifests(f"{name}.trial")


__all__ = ["FACTS", "trial_facts", "commit_best", "write_index", "search_index", "search_indexes",
           "which_search", "load_best", "trials_of"]  # fmt: skip
