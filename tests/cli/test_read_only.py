"""Read-only commands write nothing: ``ls``, ``show``, ``diff``, ``verify`` (of a clean store),
``gc --dry-run`` and ``mirror status`` leave the store and its mirrors byte for byte as they
were (every file's size, mtime and bytes, every directory's mtime), create no missing mirror,
and in a read-only store a damaged manifest or object is reported and served as a miss,
never a crash (quarantine needs a writable store)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from pipeline import StageCache, Store
from pipeline.store.objects import leaf_path
from pipeline.store.tree import leaves
from tests.cli.test_errors import _read_only, cli, in_process
from tests.store.test_mirror import produce
from tests.store.test_store import flip_byte


def tagged_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store of 3 results (one tagged) and its mirror, in sync."""
    p, m = tmp_path / "p", tmp_path / "m"
    store = Store(p, mirrors=[m])
    stage = StageCache(store).wrap(produce, ignore=["log"])
    for seed in range(3):
        stage(seed, str(tmp_path / "log"))
    first = next(store.manifests())
    store.tags.add("prod", first.stage, first.key)
    return p, m


def snapshot(root: Path) -> dict[str, tuple]:
    """Every directory's mtime and every file's size, mtime and bytes under ``root``."""
    out: dict[str, tuple] = {}
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = (os.stat(dirpath).st_mtime_ns,)
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            with open(path, "rb") as f:
                out[os.path.join(rel, name)] = (st.st_size, st.st_mtime_ns, xxhash.xxh3_64_hexdigest(f.read()))
    return out


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def read_only_commands(keys: list[str]) -> list[list[str]]:
    a, b = (k[5:15] for k in keys[:2])
    return [["ls"], ["show", a], ["show", "produce"], ["diff", a, b], ["verify"],
            ["gc", "--dry-run"], ["gc", "--dry-run", "--keep-latest", "1"], ["mirror", "status"], ["runs"],
            ["history", "produce"], ["status", "--flow", "tests.cli.flows:chain"]]  # fmt: skip


def test_read_only_commands_change_nothing_in_the_store_or_its_mirrors(tmp_path, monkeypatch):
    p, m = tagged_store(tmp_path)
    keys = [x.key for x in Store(p).manifests()]
    monkeypatch.setenv("PIPELINE_MIRRORS", str(m))
    monkeypatch.setenv("PIPELINE_LISTING_CACHE", str(tmp_path / "listing-cache"))
    for damaged in (False, True):
        if damaged:  # a torn manifest, a corrupt object: reported, left for `verify` to quarantine
            flip_byte(Store(p), leaf_path(next(leaves(Store(p).manifest("produce", keys[1]).outputs))))
            next(f for f in (p / "stages").rglob("*.json") if keys[0][5:] in f.name).write_text("{ torn")
        before = {"store": snapshot(p), "mirror": snapshot(m)}
        for command in read_only_commands(keys):
            if damaged and command == ["verify"]:
                continue  # verify quarantines what it finds damaged: its job
            done = in_process(*command, "--store", str(p))
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            after = {"store": snapshot(p), "mirror": snapshot(m)}
            for where in before:
                assert not changed(before[where], after[where]), (command, where, changed(before[where], after[where]))


def test_mirror_status_creates_no_missing_mirror(tmp_path):
    p, _m = tagged_store(tmp_path)
    missing = tmp_path / "not-yet"
    done = in_process("mirror", "status", "--store", str(p), "--mirror", str(missing))
    assert done.returncode == 0 and "3 entries" in done.stdout, done.stdout + done.stderr
    assert not missing.exists()  # a push creates it, a status does not


@pytest.mark.slow
def test_a_damaged_entry_in_a_read_only_store_is_reported_and_served_as_a_miss(tmp_path):
    p, m = tagged_store(tmp_path)
    store = Store(p)
    first, second = list(store.manifests())[:2]
    torn = next(f for f in (p / "stages").rglob("*.json") if first.key[5:] in f.name)
    torn.write_text("{ torn")
    ro = _read_only(p)
    for command in (["ls"], ["show", second.key[5:15]], ["verify"], ["gc", "--dry-run"]):
        done = cli(*command, "--store", str(p), prefix=ro)
        assert "Traceback" not in done.stderr + done.stdout, (command, done.stderr)
        assert done.returncode == (1 if command == ["verify"] else 0), (command, done.stdout, done.stderr)
        if command != ["gc", "--dry-run"]:  # gc reads manifests' object names only: it keeps what they name
            assert "unreadable" in done.stderr and "left in place" in done.stderr, (command, done.stderr)
    listing = cli("ls", "--store", str(p), prefix=ro)
    assert listing.returncode == 0 and second.key in listing.stdout and first.key not in listing.stdout
    assert torn.read_text() == "{ torn"  # left where it is: the store is read-only
