"""``Store.newest``: the newest results by creation time, reading few manifests, never one the
store would not serve; ``live_objects`` reads only what manifests name, and misses nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import warnings

import pytest

from pipeline import Manifest, Store
from pipeline.store import layout, listing
from pipeline.store.listing import created_at

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def commit(store: Store, i: int, *, created: dt.datetime, stage: str | None = None) -> Manifest:
    outputs = store.put({"result": i}, what=f"result {i}")
    m = Manifest(stage=stage or f"s{i % 3}", key=f"xxh3:{i:032x}", outputs=outputs, created=created.isoformat())
    return store.commit(m)


def exact(store: Store, stage: str | None = None, limit: int = 50, since: float | None = None) -> list[str]:
    """The page by definition: every servable result, sorted by creation time."""
    found = [m for m in store.manifests(stage) if since is None or created_at(m) >= since]
    return [m.key for m in sorted(found, key=lambda m: (created_at(m), m.stage, m.key), reverse=True)[:limit]]


def keys(page: listing.Page) -> list[str]:
    return [m.key for m in page.manifests]


def set_written(store: Store, m: Manifest, when: float) -> None:
    os.utime(store._backend._path(layout.manifest_path(m.stage, m.key)), (when, when))


@pytest.mark.parametrize("seed", range(4))
def test_the_page_is_exact_whatever_the_file_times_say(tmp_path, seed):
    """Manifests written (file times) in any order and at any delay after their creation:
    copied without times, restored, written in bursts. The page is what sorting every
    manifest gives."""
    rng = random.Random(seed)
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i, created=T0 + dt.timedelta(minutes=rng.randrange(10_000))) for i in range(120)]
    now = dt.datetime.now(dt.UTC).timestamp()
    for m in made:
        lag = rng.choice([0.0, 0.5, 30.0, 86400.0 * rng.random() * 30])  # written soon after, or long after
        set_written(store, m, min(now, created_at(m) + lag))
    if seed == 3:  # a copy without times: every manifest written "now"
        for m in made:
            set_written(store, m, now)
    for limit in (0, 1, 7, 50, 200):
        page = store.newest(limit=limit)
        assert keys(page) == exact(store, limit=limit)
        assert page.total == 120 and page.not_shown == 120 - min(limit, 120)
    assert keys(store.newest("s1", limit=5)) == exact(store, "s1", limit=5)
    since = (T0 + dt.timedelta(minutes=5_000)).timestamp()
    assert keys(store.newest(limit=500, since=since)) == exact(store, limit=500, since=since)
    assert {m.key for m in store.manifests(since=since)} == set(exact(store, limit=500, since=since))
    assert store.latest("s2").key == exact(store, "s2", limit=1)[0]


def test_a_page_reads_few_manifests(tmp_path):
    """Written as they were created (the usual case): the newest 5 of 2,000 decode 5 manifests."""
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i, created=T0 + dt.timedelta(minutes=i)) for i in range(2000)]
    for m in made:
        set_written(store, m, created_at(m) + 0.01)
    checked = []
    accept = store._accept
    store._accept = lambda rel, raw: checked.append(rel) or accept(rel, raw)  # counts; still the real check
    assert keys(store.newest(limit=5)) == [m.key for m in made[::-1][:5]]
    assert len(checked) == 5


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "another key's manifest", "format 1", "deleted"])
def test_a_page_never_holds_a_manifest_the_store_would_not_serve(tmp_path, damage):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i, created=T0 + dt.timedelta(minutes=i)) for i in range(10)]
    newest, other = made[-1], made[0]
    path = store._backend._path(layout.manifest_path(newest.stage, newest.key))
    raw = open(path, "rb").read()
    if damage == "bit flip":
        at = len(raw) // 2
        raw = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "another key's manifest":
        raw = open(store._backend._path(layout.manifest_path(other.stage, other.key)), "rb").read()
    elif damage == "format 1":
        doc = json.loads(raw)
        doc.pop("seal")
        doc["format"] = 1
        raw = json.dumps(doc, indent=1, sort_keys=True).encode()
    if damage == "deleted":
        os.unlink(path)
    else:
        with open(path, "wb") as f:
            f.write(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = store.newest(limit=3)
    assert keys(page) == [m.key for m in made[-2:-5:-1]]  # the next three instead
    assert newest.key not in {m.key for m in store.manifests()}
    assert page.total == 9 and page.not_shown == 6


def test_a_manifest_gone_between_listing_and_reading_is_left_out(tmp_path):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i, created=T0 + dt.timedelta(minutes=i)) for i in range(6)]
    candidates = list(listing._stream(listing._dirs(store, layout.STAGES), -float("inf")))
    store.delete_manifest(made[-1])  # after the listing, before the read
    page = listing._Page(store, None, 2, None)
    page.read(iter(candidates))
    assert [m.key for m in page.manifests()] == [made[-2].key, made[-3].key] and page.lost == 1


def test_newest_on_a_memory_store(store):
    """The same on any fsspec filesystem (its listing's times)."""
    made = [commit(store, i, created=T0 + dt.timedelta(minutes=i)) for i in range(30)]
    assert keys(store.newest(limit=4)) == [m.key for m in made[::-1][:4]]
    assert store.newest(limit=4).total == 30
    assert keys(store.newest("s0", limit=100)) == exact(store, "s0", limit=100)


def test_live_objects_decodes_only_outputs_and_misses_nothing(tmp_path):
    """Whatever decoding shortcut it takes, live_objects names exactly what the manifests'
    outputs name: not fooled by an ``extra`` holding an ``outputs`` of its own (nor by text that
    looks like the member), and it misses nothing of a manifest laid out otherwise (one line),
    a damaged one (kept until verify quarantines it) or one of format 1."""
    store = Store(tmp_path / "store", fsync=False)
    path = {}

    def put(name):
        leaf = store.put({name: 1})
        path[name] = layout.object_path(leaf.object, "json")
        return leaf

    real, decoy = put("real"), put("decoy")
    decoy_doc = {"object": decoy.object, "codec": decoy.codec, "bytes": decoy.bytes}
    tricky = {"outputs": decoy_doc, "text": '\n "outputs": ' + json.dumps(decoy_doc)}
    store.commit(Manifest(stage="a", key="xxh3:" + "1" * 32, outputs=real, extra=tricky))
    assert store.live_objects() == {path["real"]}

    flat = Manifest(stage="b", key="xxh3:" + "2" * 32, outputs=put("flat"))
    doc = json.loads(flat.to_json())
    store._backend.write_atomic(layout.manifest_path(flat.stage, flat.key), json.dumps(doc).encode())  # one line

    bad = Manifest(
        stage="c", key="xxh3:" + "3" * 32, outputs=put("damaged"), params={"p": {"fingerprint": "f", "repr": "1"}}
    )
    raw = bad.to_json().replace(b'"repr": "1"', b'"repr": "2"')  # the seal no longer matches
    store._backend.write_atomic(layout.manifest_path(bad.stage, bad.key), raw)

    old = Manifest(stage="d", key="xxh3:" + "4" * 32, outputs=put("format 1"))
    doc = json.loads(old.to_json())
    doc.pop("seal")
    doc["format"] = 1
    store._backend.write_atomic(
        layout.manifest_path(old.stage, old.key), json.dumps(doc, indent=1, sort_keys=True).encode()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.manifest(bad.stage, bad.key) is None and store.manifest(old.stage, old.key) is None  # not served
    store._backend.write_atomic(layout.manifest_path(bad.stage, bad.key), raw)  # (it was quarantined)
    assert store.live_objects() == {path[n] for n in ("real", "flat", "damaged", "format 1")}
