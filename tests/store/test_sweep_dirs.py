"""A gc sweep sets its objects aside in one directory of its own (``gc/<sweep>/<object
name>``), not in a copy of the objects' shard tree: one ``mkdir`` a sweep, not one per shard
(the end of a search freed ~60 objects across ~55 shards, each a directory made and removed).
Objects a killed sweep set aside come back from either layout."""

from __future__ import annotations

import os

import numpy as np

from pipeline import Store
from pipeline.cache import StageCache
from pipeline.lazy import materialize
from pipeline.store import layout
from pipeline.store.objects import leaf_path
from pipeline.store.retention import free, gc
from pipeline.store.tree import leaves


def test_a_sweep_makes_one_directory_however_many_shards_it_frees(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "s"))
    rels = {leaf_path(store.put(np.arange(n), what=f"v{n}")) for n in range(12)}
    assert len({rel.split("/")[1] for rel in rels}) > 3  # spread over shards
    size = sum(os.path.getsize(tmp_path / "s" / rel) for rel in rels)
    made: list[str] = []
    real = os.mkdir
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: (made.append(os.fspath(path)), real(path, *a, **k))[1])
    assert free(store, rels) == (12, size)
    trash = [p for p in made if f"{os.sep}{layout.TRASH}" in p]
    assert len(trash) <= 2, trash  # gc/ (absent before) and this sweep's directory
    assert not any(store._backend.exists(rel) for rel in rels)
    assert not (tmp_path / "s" / layout.TRASH).exists() or not os.listdir(tmp_path / "s" / layout.TRASH)


def test_an_object_a_killed_sweep_set_aside_comes_back_from_either_layout(tmp_path):
    store = Store(str(tmp_path / "s"))
    stage = StageCache(store).wrap(lambda n: np.arange(n), name="a")
    (leaf,) = leaves(stage.call(5).manifest.outputs)
    rel = leaf_path(leaf)
    for aside in (layout.trash_path("1-killed", rel), f"{layout.TRASH}/2-killed/{rel}"):  # this layout, the old one
        assert layout.untrash(aside) == rel
        store._backend.move(rel, aside)
        served = stage.call(5)  # a hit is lazy: reading it puts the object back
        assert served.hit and (materialize(served.value) == np.arange(5)).all()
        store._backend.move(rel, aside)
        assert gc(store, grace_seconds=0).deleted_objects == 0  # so does the next gc
        assert store._backend.exists(rel) and store.verify().clean
    assert layout.untrash(f"{layout.TRASH}/1-s/{'a' * 32}") is None  # no suffix: not an object
    assert layout.untrash(f"{layout.TRASH}/1-s/x/{'a' * 32}.json") is None
