"""The local backend's lean paths (fewer system calls a write, a listing, a sweep) do what the
full ones did: a temp directory removed after the first write is made again, a listing by path
lists what a scan does (no link followed), and a sweep's own tidy-up removes only its empty
directories."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from pipeline import Store
from pipeline.store import layout
from pipeline.store.local import SMALL, LocalBackend


def test_a_temp_directory_removed_after_the_first_write_is_made_again(tmp_path):
    store = Store(str(tmp_path / "s"))
    first = store.put({"a": 1}, what="first")
    shutil.rmtree(tmp_path / "s" / layout.TMP)  # by hand, or a test: the backend checked it once
    small = store.put({"b": 2}, what="small")  # staged in memory, written through a temp file
    large = store.put({"c": np.arange(SMALL // 4, dtype=np.int64)}, what="large")  # spooled to a temp file
    assert store.load(first) == {"a": 1} and store.load(small) == {"b": 2}
    assert np.array_equal(store.load(large)["c"], np.arange(SMALL // 4, dtype=np.int64))


def test_a_listing_lists_what_a_scan_does_and_follows_no_link(tmp_path):
    root = tmp_path / "s"
    backend = LocalBackend(str(root))
    for rel in ("stages/a/1.json", "stages/a/b/2.json", "stages/c.json"):
        backend.write_atomic(rel, b"{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_bytes(b"{}")
    os.symlink(outside, root / "stages" / "linked")  # a link to a directory: neither entered nor listed
    os.symlink(outside / "x.json", root / "stages" / "file-link.json")  # a link to a file: listed (reads refuse it)
    listed = sorted(backend.list("stages"))
    assert listed == sorted(rel for rel, _ in backend.scan("stages"))
    assert listed == ["stages/a/1.json", "stages/a/b/2.json", "stages/c.json", "stages/file-link.json"]
    assert list(backend.list("missing")) == []


def test_a_sweeps_tidy_up_removes_only_its_empty_directories(tmp_path):
    root = tmp_path / "s"
    backend = LocalBackend(str(root))

    def trash_path(sweep: str, rel: str) -> str:  # nested, as sweeps before the flat layout left them
        return f"{layout.TRASH}/{sweep}/{rel}"

    mine = [trash_path("1-mine", f"objects/{d}/{d * 15}.json") for d in ("ab", "cd")]
    backend.write_atomic(trash_path("2-other", "objects/ef/x.json"), b"{}")  # another sweep's, in use
    for rel in mine:
        backend.write_atomic(rel, b"{}")
    backend.write_atomic(trash_path("1-mine", "objects/cd/kept.json"), b"{}")  # put back later, say
    for rel in mine:
        backend.delete(rel)
    backend.remove_empty(layout.TRASH, mine)
    assert not (root / trash_path("1-mine", "objects/ab")).exists()
    assert (root / trash_path("1-mine", "objects/cd/kept.json")).exists()  # not empty: stays
    assert (root / trash_path("2-other", "objects/ef/x.json")).exists()
    backend.delete(trash_path("1-mine", "objects/cd/kept.json"))
    backend.delete(trash_path("2-other", "objects/ef/x.json"))
    backend.remove_empty(layout.TRASH, [trash_path("1-mine", "objects/cd/kept.json")])
    assert not (root / trash_path("1-mine", "")).exists()  # its tree went, up to gc/ (not empty)
    assert (root / layout.TRASH).exists()
    backend.remove_empty(layout.TRASH)  # the full walk: every empty directory, gc/ itself last
    assert not (root / layout.TRASH).exists()


def test_a_move_into_made_directories_makes_one_removed_since_and_misses_a_missing_file(tmp_path):
    root = tmp_path / "s"
    backend = LocalBackend(str(root))
    obj = "objects/ab/" + "a" * 30 + ".json"
    backend.write_atomic(obj, b"{}")
    dest = layout.trash_path("1-s", obj)
    backend.make_parents([dest])
    shutil.rmtree(root / layout.TRASH)  # removed between make_parents and the move (another sweep's tidy-up)
    backend.move(obj, dest, made=True)
    assert (root / dest).read_bytes() == b"{}" and not (root / obj).exists()
    with pytest.raises(FileNotFoundError):
        backend.move(obj, dest, made=True)
