"""The write protocol's order, checked on the calls a real local store makes (``os.mkdir``,
``os.fsync``, ``os.replace``, recorded as they happen and passed through): a crash at any instant
leaves no committed manifest that names a missing or partial object.

- a file is fsynced (under its temp name) before it is renamed into place;
- a directory made is fsynced into its parent before anything is renamed into it;
- a directory that gained a name is fsynced before the manifest naming what it holds is renamed
  into place (objects before their manifest), and the manifest's own directory before ``commit``
  returns.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline import Manifest, Store
from pipeline.store.local import SMALL


class Recorder:
    def __init__(self, monkeypatch, root: str) -> None:
        self.root = os.path.realpath(root)
        self.events: list[tuple[str, str, str]] = []
        real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.events.append(("fsync", self.rel(os.readlink(f"/proc/self/fd/{fd}")), ""))

        def replace(src, dst, *args, **kwargs) -> None:
            real_replace(src, dst, *args, **kwargs)
            self.events.append(("replace", self.rel(src), self.rel(dst)))

        def mkdir(path, *args, **kwargs) -> None:
            real_mkdir(path, *args, **kwargs)
            self.events.append(("mkdir", self.rel(path), ""))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def rel(self, path) -> str:
        return os.path.relpath(os.path.realpath(os.fspath(path)), self.root)

    def check(self, manifest_rel: str) -> None:
        """Every rule of the module docstring, over the events recorded; ``manifest_rel``: the
        manifest committed last (all renamed objects must be durable before it)."""
        ev = self.events
        synced_at = {}  # path -> index of its last fsync
        made_at = {}  # directory -> index of its mkdir
        dirty: dict[str, int] = {}  # directory -> index of the rename into it not yet fsynced
        committed = False
        for i, (kind, a, b) in enumerate(ev):
            if kind == "fsync":
                synced_at[a] = i
                dirty.pop(a, None)
            elif kind == "mkdir":
                made_at[a] = i
                dirty[parent(a)] = i
            else:
                assert synced_at.get(a, -1) >= 0, f"{a} renamed to {b} unsynced: {ev[: i + 1]}"
                target_dir = parent(b)
                d = target_dir
                while d not in ("", "."):
                    if d in made_at:
                        assert synced_at.get(parent(d), -1) > made_at[d], (
                            f"{b} renamed into {d} before {d} was made durable in its parent: {ev[: i + 1]}"
                        )
                    d = parent(d)
                if b == manifest_rel:
                    assert not dirty, f"manifest {b} renamed while {sorted(dirty)} are not durable: {ev[: i + 1]}"
                    committed = True
                dirty[target_dir] = i
        assert committed, f"the manifest {manifest_rel} was never renamed into place: {ev}"
        assert not dirty, f"commit returned with {sorted(dirty)} not durable: {ev}"


def parent(rel: str) -> str:
    return os.path.dirname(rel) or "."


VALUES = {
    "small objects (staged in memory)": {"model": {"w": np.arange(10.0)}, "rng": [1, 2, 3]},
    "an object beyond the in-memory size (streamed to its temp file)": {"big": np.zeros(SMALL // 8 + 1000)},
    "a tuple of both": (np.arange(5), np.ones(SMALL // 4)),
}


@pytest.mark.parametrize("name", sorted(VALUES))
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh store", "existing directories"])
def test_a_commit_makes_its_objects_and_directories_durable_before_its_manifest(tmp_path, monkeypatch, name, fresh):
    root = tmp_path / "store"
    store = Store(root)
    key = "xxh3:" + "ab" * 16
    if not fresh:  # the directories there already: only files and the names they gain
        store.commit(Manifest(stage="s", key="xxh3:" + "cd" * 16, outputs=store.save(VALUES[name])))
        for i in range(256):
            os.makedirs(root / "objects" / f"{i:02x}", exist_ok=True)
        value = VALUES[name]
        value = {"again": value, "more": np.arange(3.0)}
    else:
        value = VALUES[name]
    recorder = Recorder(monkeypatch, root)
    outputs = store.save(value)
    store.commit(Manifest(stage="s", key=key, outputs=outputs))
    recorder.check(store.manifest_path("s", key))
    assert recorder.events, "nothing was recorded: the test tests nothing"


def test_the_recorder_catches_a_rename_before_its_fsync(tmp_path, monkeypatch):
    """The checker itself: a protocol that renames an object before fsyncing it fails it."""
    root = tmp_path / "store"
    Store(root)
    recorder = Recorder(monkeypatch, root)
    (root / "objects" / "tmp" / "t").write_bytes(b"x")
    os.mkdir(root / "stages")
    os.replace(root / "objects" / "tmp" / "t", root / "stages" / "m.json")
    with pytest.raises(AssertionError, match="unsynced"):
        recorder.check("stages/m.json")
