"""The flusher (``pipeline.store.flush``): a durable local save hands written ranges to the disk
while it goes on writing. The file must hold exactly the bytes written, the thread must end
with the file, and a writer SIGKILLed in the middle of a large save must never leave a committed
manifest that points at a short or partial object."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from pipeline import Manifest, Store, fingerprint
from pipeline.store import flush
from pipeline.store.flush import STEP, FlushingFile

pytestmark = pytest.mark.skipif(flush.sync_file_range() is None, reason="sync_file_range is Linux only")


def test_a_file_of_several_steps_holds_exactly_the_bytes_written_and_its_flusher_ends(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, int(2.6 * STEP), dtype=np.uint8).tobytes()
    sizes = [1, 4095, STEP - 3, 7, STEP + 11, 1 << 20]
    path = tmp_path / "f"
    with FlushingFile(str(path)) as f:
        pos = 0
        for n in sizes + [len(data)]:
            chunk = memoryview(data)[pos : pos + n]
            while chunk.nbytes:  # a raw write may take only part of the bytes
                chunk = chunk[f.write(chunk) :]
            pos = min(pos + n, len(data))
        thread = f._thread
        assert thread is not None and thread.is_alive(), "no flusher started for a file of several steps"
    assert not thread.is_alive()
    assert path.read_bytes() == data


def test_a_file_smaller_than_a_step_starts_no_thread(tmp_path):
    with FlushingFile(str(tmp_path / "f")) as f:
        f.write(b"x" * (STEP - 1))
        assert f._thread is None
    assert (tmp_path / "f").stat().st_size == STEP - 1


def test_the_file_is_created_exclusively(tmp_path):
    (tmp_path / "f").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        FlushingFile(str(tmp_path / "f"))
    assert (tmp_path / "f").read_bytes() == b"someone else's"


def test_a_durable_store_round_trips_a_frame_of_several_steps(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.standard_normal(3 * STEP // 16), "b": rng.integers(0, 9, 3 * STEP // 16)})
    store = Store(tmp_path / "s")  # fsync on: the default, and the only case with a flusher
    tree = store.save(df)
    assert tree.bytes > 2 * STEP
    store.commit(Manifest(stage="s", key="xxh3:" + "1" * 32, outputs=tree))
    back = Store(tmp_path / "s").load(Store(tmp_path / "s").manifest("s", "xxh3:" + "1" * 32).outputs)
    pd.testing.assert_frame_equal(back, df)
    assert fingerprint(back) == tree.fingerprint
    assert store.verify().corrupt == 0


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from pipeline import Manifest, Store

    store = Store(sys.argv[1])
    generation = int(sys.argv[2])
    rng = np.random.default_rng(generation)
    base = rng.standard_normal(4 * {step} // 8)
    for i in range(10**9):
        rows = int(rng.integers(2, 5) * {step} // 8)  # 2-4 flush steps of one float column
        frame = pd.DataFrame({{"x": base[:rows] + i}})
        print("saving", flush=True)
        tree = store.save(frame)
        store.commit(Manifest(stage="big", key="xxh3:" + f"{{generation * 1000 + i:032x}}", outputs=tree))
    """
).format(step=STEP)


@pytest.mark.slow
def test_sigkill_in_the_middle_of_large_saves_never_commits_a_short_object(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "store"
    store = Store(root)
    rng = random.Random(12)
    temp_files = 0
    for generation in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(generation)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            for _ in range(rng.randint(1, 4)):  # kill during the n-th save, at a random moment of it
                assert proc.stdout.readline().strip() == "saving", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        report = store.verify()
        assert (report.corrupt, report.missing, report.bad_manifests) == (0, 0, 0), (generation, report)
        temp_files += report.temp_files
    committed = list(store._backend.list("stages"))
    for rel in committed:
        m = Manifest.from_json(bytes(store._backend.read(rel)))
        assert fingerprint(store.load(m.outputs)) == m.outputs.fingerprint, rel
    assert committed, "the writers committed nothing: the test tests nothing"
    assert temp_files > 0, "no kill landed mid-save: the test tests nothing"
