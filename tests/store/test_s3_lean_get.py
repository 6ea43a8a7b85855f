"""S3 reads through ``pipeline.store.s3._LeanGet`` (a GET signed by botocore's signer, sent on a
warm urllib3 pool) and ``verify`` on S3: the real server (which checks the signature) serves
the bytes, a wrong secret is refused and left to the client, and verify of a
damaged S3 store finds, quarantines and names exactly what it does on local disk."""

from __future__ import annotations

import pytest

from pipeline import Store
from pipeline.store.s3 import S3Reader
from tests.store.test_store import flip_byte, object_rel, raw_bytes, write_raw
from tests.store.test_verify_scan import _commit


def test_the_server_serves_a_lean_get_and_refuses_a_wrong_secret(s3_server):
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    m = _commit(store, {"a": 1}, "s", 1)
    reader = store._backend._reader
    assert reader is not None and reader._lean is not None
    got = reader._lean.get(reader._key(object_rel(m.outputs)))
    assert got is not None and got.data == raw_bytes(store, object_rel(m.outputs))
    wrong = S3Reader.open(store.url.removeprefix("s3://"), {**s3_server.storage_options, "secret": "wrong"})
    assert wrong is not None and wrong._lean is not None
    assert wrong._lean.get(wrong._key(object_rel(m.outputs))) is None  # refused (403): the client says why


def test_a_missing_key_is_file_not_found_on_a_lean_get(s3_server):
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    reader = store._backend._reader
    with pytest.raises(FileNotFoundError):
        reader._lean.get(reader._key("objects/00/" + "0" * 30 + ".json"))


def test_verify_on_s3_finds_what_it_finds_on_local_disk(s3_server, tmp_path):
    """Many objects read at once over the lean GETs: each damage found, quarantined, named."""
    s3 = Store(s3_server.new_url(), **s3_server.storage_options)
    local = Store(tmp_path / "local")
    for store in (s3, local):
        ms = [_commit(store, {"i": i, "pad": "y" * i}, f"stage{i % 4}", i) for i in range(300)]
        ms.append(_commit(store, {"i": 0, "pad": ""}, "again", 1000))  # a second user of ms[0]'s object
        flip_byte(store, object_rel(ms[0].outputs))
        store._backend.delete(object_rel(ms[150].outputs))
        rel = object_rel(ms[299].outputs)
        write_raw(store, rel, raw_bytes(store, rel)[:-3])
        flip_byte(store, store.manifest_path("stage1", ms[5].key))
    with pytest.warns(UserWarning, match="unreadable"):
        found = {name: store.verify() for name, store in (("s3", s3), ("local", local))}
    assert found["s3"] == found["local"]
    report = found["s3"]
    assert (report.manifests, report.ok, report.corrupt, report.missing, report.bad_manifests) == (300, 296, 2, 1, 1)
    assert report.quarantined == 3
    users = {p.what: sorted(stage for stage, _key, _step in p.used_by) for p in report.problems}
    assert users[ms[0].outputs.object] == ["again", "stage0"] and users[ms[150].outputs.object] == ["stage2"]
    again = s3.verify()
    assert (again.corrupt, again.missing, again.bad_manifests, again.ok) == (0, 3, 0, 296)
