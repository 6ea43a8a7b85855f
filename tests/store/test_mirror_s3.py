"""The mirror damage matrix with one side on the real S3 server (SeaweedFS, tests/s3server.py):
primary local + mirror on S3, and primary on S3 + mirror local. Every case of ``CASES``
(delete, truncate, bit-flip an object or a manifest in the primary, the mirror or both) is
served right (repaired from the good copy, recomputed when there is none) and detected
and repaired by ``verify`` + ``repair`` / ``push --check``."""

from __future__ import annotations

import pytest

from pipeline import Manifest, StageCache, Store, materialize
from pipeline.store.mirror_sync import push, status
from tests.store.test_mirror import CASES, CHECKS, make_value, runs, setup
from tests.store.test_store import assert_same

LAYOUTS = ["local-primary+s3-mirror", "s3-primary+local-mirror"]


@pytest.fixture(params=LAYOUTS)
def s3_setup(request, s3_server, tmp_path):
    log = tmp_path / "runs.log"
    if request.param == "local-primary+s3-mirror":
        return setup(str(tmp_path / "primary"), Store(s3_server.new_url(), **s3_server.storage_options), log)
    return setup(s3_server.new_url(), Store(tmp_path / "mirror"), log, **s3_server.storage_options)


@pytest.mark.parametrize("check", CHECKS, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_damage_matrix_s3(s3_setup, case, check):
    CHECKS[check](s3_setup, case)


def test_push_to_s3_catches_up_and_the_s3_mirror_is_a_store(s3_server, tmp_path):
    log = tmp_path / "log"
    primary = Store(tmp_path / "p")
    stage = StageCache(primary).wrap(make_value_stage, ignore=["log"])
    for seed in range(3):
        stage(seed, str(log))
    url = s3_server.new_url()
    with_mirror = Store(tmp_path / "p", mirrors=[Store(url, **s3_server.storage_options)])
    [st] = status(with_mirror, with_mirror.mirrors)
    assert st.missing_in_mirror.entries == 3 and st.missing_in_mirror.objects == 6
    [pushed] = push(with_mirror, with_mirror.mirrors)
    assert pushed.entries == 3 and pushed.objects == 6 and not pushed.failed
    direct = Store(url, create=False, **s3_server.storage_options)  # the mirror, opened as a store
    report = direct.verify()
    assert report.clean and report.manifests == 3 and report.ok == 6
    served = StageCache(direct).wrap(make_value_stage, ignore=["log"]).call(1, str(log))
    assert served.hit and runs(log) == 3
    for a, b in zip(materialize(served.value), make_value(1)):
        assert_same(a, b)


def make_value_stage(seed: int, log: str) -> tuple:
    with open(log, "a") as f:
        f.write("ran\n")
    return make_value(seed)


def test_an_s3_primary_replicates_the_bytes_it_just_wrote_without_reading_them_back(s3_server, tmp_path):
    primary = Store(s3_server.new_url(), mirrors=[tmp_path / "m"], **s3_server.storage_options)
    tree = primary.save(make_value(5))
    assert len(primary.mirrors.recent._items) == 2  # kept for the replication of the commit
    primary.commit(Manifest(stage="s", key="xxh3:" + "ef" * 16, outputs=tree))
    assert not primary.mirrors.recent._items  # replicated: let go
    report = Store(tmp_path / "m").verify()
    assert report.clean and report.ok == 2 and report.manifests == 1
