"""``python -m pipeline ls`` pages: the newest 50 by default, ``--all``, ``--stage``, ``--since``,
``-n``, and a line saying how many results are not shown."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from pipeline import Manifest, Store
from pipeline.cli_ls import parse_since
from pipeline.store import layout
from tests.cli.test_errors import in_process, one_clear_line

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def store_path(tmp_path) -> str:
    """70 results of stages a, b: result i created i hours ago (0 = now); b's are the multiples of 5.
    Written in the reverse order of their creation times, so file times mislead."""
    store = Store(tmp_path / "store", fsync=False)
    for i in range(70):
        stage = "b" if i % 5 == 0 else "a"
        m = Manifest(stage=stage, key=f"xxh3:{i:032x}", outputs=store.put({"i": i}),
                     created=(NOW - dt.timedelta(hours=i)).isoformat())  # fmt: skip
        store.commit(m)
        t = (NOW - dt.timedelta(seconds=70 - i)).timestamp()  # the oldest created was written last
        os.utime(store._backend._path(layout.manifest_path(m.stage, m.key)), (t, t))
    return str(tmp_path / "store")


def listed(output: str) -> list[int]:
    """The result numbers in the listing, in order."""
    return [int(line.split()[1][5:], 16) for line in output.splitlines() if line.split()[1:2] and "xxh3:" in line]


def ls(*args: str) -> str:
    done = in_process("ls", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_default_page_is_the_newest_50_and_says_how_many_more(store_path):
    out = ls("--store", store_path)
    assert listed(out) == list(range(50))
    assert out.splitlines()[0].split() == ["stage", "key", "created", "bytes", "compute", "s"]
    assert "50 shown, 20 not shown of the 70 results in the store: --all lists every one" in out


def test_all_lists_every_result_newest_first(store_path):
    out = ls("--store", store_path, "--all")
    assert listed(out) == list(range(70)) and "not shown" not in out


def test_stage_and_limit(store_path):
    out = ls("--store", store_path, "--stage", "b", "-n", "3")
    assert listed(out) == [0, 5, 10]
    assert "3 shown, 11 not shown of the 14 results of stage b in the store" in out
    assert listed(ls("--store", store_path, "--stage", "b")) == list(range(0, 70, 5))
    assert "not shown" not in ls("--store", store_path, "--stage", "b")
    assert "no results of stage nope in" in ls("--store", store_path, "--stage", "nope")


def test_since_a_duration_or_a_date(store_path):
    out = ls("--store", store_path, "--since", "10h")  # created 0..10 hours ago (10 on the edge: not)
    assert listed(out) in (list(range(10)), list(range(11)))
    assert "not shown of the 70 results in the store (shown: created since 10h)" in out
    assert listed(ls("--store", store_path, "--since", "2d", "-n", "5")) == list(range(5))
    day = (NOW - dt.timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S")
    assert listed(ls("--store", store_path, "--since", day, "--all")) == list(range(31))
    assert listed(ls("--store", store_path, "--stage", "b", "--since", "1d", "--all")) == [0, 5, 10, 15, 20]


def test_a_bad_since_is_one_clear_line(store_path):
    one_clear_line(in_process("ls", "--store", store_path, "--since", "yesterday"), "--since 'yesterday'", "2h")


def test_parse_since():
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2h", now) == (now - dt.timedelta(hours=2)).timestamp()
    assert parse_since("3d", now) == (now - dt.timedelta(days=3)).timestamp()
    assert parse_since("90s", now) == now.timestamp() - 90
    assert parse_since("1w", now) == (now - dt.timedelta(weeks=1)).timestamp()
    assert parse_since("2026-11-30", now) == dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    assert parse_since("2026-11-30T12:00+01:00", now) == dt.datetime(2026, 11, 30, 11, tzinfo=dt.UTC).timestamp()


def test_a_damaged_newest_manifest_is_not_listed(store_path):
    m = Store(store_path).manifest("b", f"xxh3:{0:032x}")
    path = os.path.join(store_path, *layout.manifest_path(m.stage, m.key).split("/"))
    with open(path, "r+b") as f:
        f.seek(60)
        byte = f.read(1)
        f.seek(60)
        f.write(bytes([byte[0] ^ 1]))
    done = in_process("ls", "--store", store_path, "-n", "3")
    assert listed(done.stdout) == [1, 2, 3]
    assert "unreadable" in done.stderr and "left in place" in done.stderr  # ls is read-only: verify quarantines


def test_an_empty_store(tmp_path):
    Store(tmp_path / "empty")
    assert "no results in" in ls("--store", str(tmp_path / "empty"))
