"""A directory the store writes into may be removed meanwhile (an emptied checkpoint key's
directory goes with its last checkpoint, and gc removes old empty ones): a write whose
directory vanished between making it and renaming (or linking) its file into place makes it
again and lands. Real threads, real files: no write fails, none reported done is lost."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from pipeline import Store
from pipeline.store import layout
from pipeline.store.manifest import Manifest

ROUNDS = 400


def _race(write, remove, rounds: int = ROUNDS) -> list[BaseException]:
    """``write(i)`` for each round in one thread while another calls ``remove()`` until it ends,
    up to 2 ms apart (a remover spinning on one directory in this process would take the GIL at
    each of a writer's ``mkdir`` calls and so win every try: no real remover does that); the
    errors either raised."""
    errors: list[BaseException] = []
    done = threading.Event()

    def removing():
        try:
            while not done.is_set():
                remove()
                time.sleep(random.uniform(0, 2e-3))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    remover = threading.Thread(target=removing)
    remover.start()
    try:
        for i in range(rounds):
            write(i)
    except BaseException as e:  # noqa: BLE001
        errors.append(e)
    finally:
        done.set()
        remover.join()
    return errors


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomic_and_create_land_while_their_directory_is_removed(tmp_path, durable):
    store = Store(tmp_path / "s", fsync=durable)
    backend = store._backend
    directory = layout.checkpoint_dir("fit", "k")
    landed: list[bool] = []

    def write(i: int) -> None:
        rel = f"{directory}/{i}.json"
        backend.write_atomic(rel, b"%d" % i, durable=durable)
        landed.append(bytes(backend.read(rel)) == b"%d" % i)  # reported done: it is there
        backend.delete(rel)  # the directory is empty again: the remover may take it
        assert backend.create(rel, b"c%d" % i)
        landed.append(bytes(backend.read(rel)) == b"c%d" % i)
        backend.delete(rel)

    removed: list[bool] = []

    def remove() -> None:
        backend.remove_empty(directory, ())
        removed.append(not (tmp_path / "s" / directory).exists())

    assert _race(write, remove) == []
    assert landed == [True] * 2 * ROUNDS
    assert sum(removed) > 10  # the directory did go, time and again, while the writes went on


def test_checkpoints_commit_while_another_thread_drops_them_all(tmp_path):
    store = Store(tmp_path / "s")
    ck = store.checkpoints("fit", "k")
    tree = store.save_parts({"w": np.arange(3)})
    landed: list[bool] = []

    def write(i: int) -> None:
        ck.commit(Manifest(stage="fit", key="k", outputs=tree, step=i, kind="checkpoint"))
        landed.append(True)

    assert _race(write, ck.drop_all, rounds=150) == []
    assert len(landed) == 150
    ck.commit(Manifest(stage="fit", key="k", outputs=tree, step=1000, kind="checkpoint"))
    assert ck.steps()[-1] == 1000 and store.load(ck.read(1000).outputs)["w"].tolist() == [0, 1, 2]
