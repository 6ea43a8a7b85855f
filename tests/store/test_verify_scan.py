"""``verify``'s lean pass (``pipeline.store.verify_scan``) and its worker processes: the lean
judge passes only manifests the full check serves, and a verify split over worker processes
finds, counts, names and quarantines exactly what a verify in one process does."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from pipeline import Manifest, Store
from pipeline.store import seal as seal_module
from pipeline.store import verify_scan
from pipeline.store.manifest import Unverified
from pipeline.store.seal import Checksum, Hmac
from pipeline.store.tree import leaves

from .test_store import flip_byte, object_rel, raw_bytes, write_raw


def _commit(store: Store, value, stage: str, i: int, step: int | None = None) -> Manifest:
    m = Manifest(stage=stage, key=f"xxh3:{i:032x}", outputs=store.save(value), step=step,
                 created=dt.datetime.now(dt.UTC).isoformat())  # fmt: skip
    store.commit(m)
    return m


def _resealed(store: Store, doc: dict) -> bytes:
    """``doc`` as the body of a manifest sealed by the store's own sealer (a seal that passes)."""
    return seal_module.seal(json.dumps(doc, indent=1, sort_keys=True).encode(), store._sealer)


def _full(store: Store, rel: str, raw: bytes):
    """What the full check makes of ``raw`` read at ``rel``: the served manifest, or the error."""
    try:
        return store._check_manifest(rel, raw)
    except (ValueError, TypeError, KeyError) as e:
        return e


def _variants(store: Store, m: Manifest) -> dict[str, bytes]:
    doc = json.loads(seal_module.body_of(m.to_json(store._sealer)))
    out: dict[str, bytes] = {"as written": m.to_json(store._sealer)}

    def tweak(name: str, **changes) -> None:
        d = json.loads(json.dumps(doc))
        for k, v in changes.items():
            if v is KeyError:
                d.pop(k, None)
            else:
                d[k] = v
        out[name] = _resealed(store, d)

    tweak("step -1", step=-1)
    tweak("step text", step="1")
    tweak("step true", step=True)
    tweak("stage int", stage=5)
    tweak("key none", key=None)
    tweak("format 1", format=1)
    tweak("format 3", format=3)
    tweak("no format", format=KeyError)
    tweak("no outputs", outputs=KeyError)
    tweak("no stage", stage=KeyError)
    tweak("bad codec", outputs={**doc["outputs"], "codec": "pickle5000"})
    tweak("bad object id", outputs={**doc["outputs"], "object": "AB" * 16})
    tweak("negative bytes", outputs={**doc["outputs"], "bytes": -1})
    tweak("fingerprint int", outputs={**doc["outputs"], "fingerprint": 7})
    tweak("components of two", code_components=[["code", "f"]])
    tweak("components not a list", code_components="x")
    tweak("components of ints", code_components=[[1, 2, 3]])
    tweak("components empty", code_components=[])
    tweak("no components", code_components=KeyError)
    tweak("components plain", code_components=[["code", "m.f", "xxh3:" + "0" * 32]])
    tweak("extra member", surprise={"a": 1})
    tweak("another key", key="xxh3:" + "f" * 32)
    tweak("another stage", stage="elsewhere")
    body = m.to_json(store._sealer)
    out["bit flip"] = body[:40] + bytes([body[40] ^ 1]) + body[41:]
    out["truncated"] = body[:-5]
    out["not sealed"] = json.dumps(doc).encode()
    out["another key's seal"] = m.to_json(Hmac(b"another key"))
    out["empty"] = b""
    return out


@pytest.mark.parametrize("sealer", [Checksum(), Hmac(b"the store's key")], ids=["checksum", "hmac"])
def test_the_lean_judge_passes_only_what_the_full_check_serves(tmp_path, sealer):
    store = Store(tmp_path / "store", sealer=sealer)
    manifests = [
        _commit(store, {"a": 1}, "one", 1),
        _commit(store, (np.arange(5), {"b": 2}), "tuple", 2),
        _commit(store, {"w": np.ones(3), "x": [1, 2]}, "dict", 3),
        _commit(store, {"c": 3}, "checkpoint", 4, step=7),
    ]
    judged = 0
    for m in manifests:
        rel = store.manifest_path(m.stage, m.key, m.step)
        for name, raw in _variants(store, m).items():
            lean, full = verify_scan.judge(rel, raw, store._sealer), _full(store, rel, raw)
            if lean is None:
                assert name != "as written", f"{m.stage}: the lean judge should pass a manifest as written"
                continue
            judged += 1
            assert isinstance(full, Manifest) and not isinstance(full, Unverified), (m.stage, name, full)
            who, objects = lean
            assert who == (full.stage, full.key, full.step), (m.stage, name)
            expected = [(object_rel(leaf), leaf.object, leaf.bytes) for leaf in leaves(full.outputs)]
            assert list(objects) == expected, (m.stage, name)
    assert judged >= 4 * 4  # as written, no format change, extra member, empty/plain components… pass


def _damaged_store(root) -> tuple[Store, dict[str, Manifest]]:
    """A store of 40 results with every kind of damage verify reports."""
    store = Store(root)
    ms = {f"r{i}": _commit(store, {"i": i, "pad": "x" * i}, f"stage{i % 3}", i) for i in range(36)}
    ms["shared"] = _commit(store, {"i": 0, "pad": ""}, "stage9", 99)  # the same object as r0: a second user
    ms["big"] = _commit(store, {f"part{j}": np.full(3, j) for j in range(200)}, "big", 100)  # a manifest > 16 KB
    ms["ckpt"] = _commit(store, {"c": 1}, "stage1", 101, step=3)
    flip_byte(store, object_rel(ms["r0"].outputs))
    store._backend.delete(object_rel(ms["r5"].outputs))
    rel = object_rel(ms["r7"].outputs)
    write_raw(store, rel, raw_bytes(store, rel)[:-1])  # truncated
    flip_byte(store, object_rel(ms["big"].outputs["part9"]))
    flip_byte(store, store.manifest_path("stage2", ms["r8"].key))
    shutil.copyfile(
        root / store.manifest_path("stage1", ms["r1"].key), root / store.manifest_path("stage1", ms["r4"].key)
    )
    doc = json.loads(raw_bytes(store, store.manifest_path("stage0", ms["r3"].key)))
    doc.pop("seal")
    doc["format"] = 1
    write_raw(store, store.manifest_path("stage0", ms["r3"].key), json.dumps(doc).encode())  # format 1: unverified
    unsigned = Manifest(stage="stage0", key=f"xxh3:{200:032x}", outputs=ms["r6"].outputs)
    write_raw(store, store.manifest_path(unsigned.stage, unsigned.key), unsigned.to_json(Hmac(b"k")))
    assert len(raw_bytes(store, store.manifest_path("big", ms["big"].key))) > verify_scan.GUESS
    return store, ms


def _verified(store: Store, workers: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = store.verify(workers=workers)
    quarantined = sorted(name.split("-", 2)[-1] for name in os.listdir(os.path.join(store.url, "quarantine")))
    return report, quarantined, sorted(str(w.message).replace(store.url, "<store>") for w in caught)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_verify_split_over_worker_processes_finds_what_one_process_finds(tmp_path, workers):
    one, ms = _damaged_store(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "split", symlinks=True)
    split = Store(tmp_path / "split")
    alone, alone_quarantined, alone_warned = _verified(one, 0)
    report, quarantined, warned = _verified(split, workers)
    assert report == alone and quarantined == alone_quarantined and warned == alone_warned
    assert (report.corrupt, report.missing, report.bad_manifests, report.unverified, report.unsigned) == (3, 1, 2, 1, 1)
    users = {p.what: p.used_by for p in report.problems if p.kind != "bad manifest"}
    assert sorted(users[ms["r0"].outputs.object]) == [
        ("stage0", ms["r0"].key, None),
        ("stage9", ms["shared"].key, None),
    ]
    assert users[ms["r5"].outputs.object] == (("stage2", ms["r5"].key, None),)
    again, _, _ = _verified(split, workers)  # what was quarantined is missing now
    assert (again.corrupt, again.missing, again.bad_manifests) == (0, 4, 0)


def test_a_worker_process_finds_a_corrupt_object_of_its_share(tmp_path):
    store = Store(tmp_path / "store")
    ms = [_commit(store, {"i": i}, "s", i) for i in range(20)]
    flip_byte(store, object_rel(ms[-1].outputs))  # in the last share: the worker's
    rels = store._manifest_paths()
    shares = verify_scan.scan_all(store._backend, store._sealer, rels, workers=1)
    assert len(shares) == 2 and sum(s.fine for s in shares) == 20
    assert shares[1].failed == [object_rel(ms[-1].outputs)] and shares[0].failed == []
    assert [who for _rel, who in shares[1].users[object_rel(ms[-1].outputs)]] == [("s", ms[-1].key, None)]
    assert store.verify(workers=1).corrupt == 1 and store.verify(workers=1).missing == 1


def test_a_worker_that_cannot_start_leaves_its_share_to_this_process(tmp_path):
    class Unpicklable(Checksum):
        """A sealer that can't be pickled to a worker (a class local to a test)."""

    store = Store(tmp_path / "store", sealer=Unpicklable())
    ms = [_commit(store, {"i": i}, "s", i) for i in range(10)]
    flip_byte(store, object_rel(ms[-1].outputs))
    with pytest.warns(UserWarning, match="verify worker process failed"):
        report = store.verify(workers=1)
    assert (report.manifests, report.ok, report.corrupt) == (10, 9, 1)


def test_workers_are_used_only_for_large_local_stores(tmp_path):
    store = Store(tmp_path / "store")
    assert verify_scan.workers_for(store._backend, verify_scan.MIN_SHARE) == 0
    assert verify_scan.workers_for(Store("memory://verify-scan")._backend, 10**6) == 0
    assert verify_scan.workers_for(store._backend, 10**6) <= min(verify_scan.MAX_WORKERS, (os.cpu_count() or 1) - 1)


class _DiesInTheWorker(Checksum):
    """The plain checksum here; unpickled in a worker process, it ends that process (exit 3)."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_worker_process_that_dies_leaves_its_share_to_this_process(tmp_path):
    store = Store(tmp_path / "store", sealer=_DiesInTheWorker())
    ms = [_commit(store, {"i": i}, "s", i) for i in range(10)]
    flip_byte(store, object_rel(ms[-1].outputs))  # in the dead worker's share
    with pytest.warns(UserWarning, match=r"verify worker process failed \(exit code 3\)"):
        report = store.verify(workers=1)
    assert (report.manifests, report.ok, report.corrupt) == (10, 9, 1)
    assert [p.what for p in report.problems] == [ms[-1].outputs.object]
