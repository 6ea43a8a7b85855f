"""gc deletes only what no manifest references, and nothing younger than the grace period."""

from __future__ import annotations

import numpy as np

from pipeline import StageCache
from pipeline.store.retention import gc


def test_gc_keeps_referenced_and_young_objects_deletes_orphans(store):
    cache = StageCache(store)
    stage = cache.wrap(lambda n: np.arange(n), name="arange")
    stage(10)
    stage(20)
    orphan = store.put(np.ones(7), what="an orphan")  # committed object, no manifest
    assert gc(store, grace_seconds=3600).deleted_objects == 0  # too young: a writer may be mid-commit

    dry = gc(store, dry_run=True, grace_seconds=0)
    assert dry.deleted_objects == 1 and dry.live_objects == 2
    assert gc(store, dry_run=True, grace_seconds=0).deleted_objects == 1  # dry run deleted nothing

    report = gc(store, grace_seconds=0)
    assert report.deleted_objects == 1 and report.deleted_bytes > 0
    verify = store.verify()
    assert verify.clean and verify.ok == 2 and verify.orphans == 0
    assert not store._backend.exists(f"objects/{orphan.object[:2]}/{orphan.object[2:]}.joblib")
    outcome = stage.call(10)
    assert outcome.hit  # still served from the store
    np.testing.assert_array_equal(outcome.value, np.arange(10))
