"""``python -m pipeline gc --max-bytes`` over checkpoints whose model rides in the manifest
(``pipeline.training.entries``): the records it judges count those bytes, as
``CheckpointInfo.bytes`` (``show``'s training facts, the report) does; what it frees counts
object files only (carried bytes go with their manifest)."""

from __future__ import annotations

from pipeline import Store
from pipeline.store.lifecycle import Retention, plan
from pipeline.tracking import training_record
from pipeline.training import KeepAll, MaxBytes
from tests.cli.test_lifecycle import invoke
from tests.training.test_carried_bytes import held, train


def test_gc_max_bytes_counts_a_carried_model_as_checkpoint_info_does(tmp_path):
    path = str(tmp_path / "s")
    store = Store(path, fsync=False)
    train(store, 5, KeepAll())
    infos = training_record(store, "run", "default").checkpoints
    per = {c.step: c.bytes for c in infos}
    assert all(n > 0 and n == held(store.manifest("run", "default", s)) for s, n in per.items())
    budget = per[5] + per[4] + per[3] - 1  # the newest two fit, not three (objects alone, three would)

    entries = plan(store, Retention(MaxBytes(budget))).entries
    sizes = {e.manifest.step: e.manifest.bytes for e in entries}
    assert sizes == per  # the records gc judges have the sizes CheckpointInfo reports
    assert sorted(e.manifest.step for e in entries if e.keep) == [4, 5]

    dry = invoke("gc", "--dry-run", "--max-bytes", str(budget), "--store", path)
    assert dry.exit_code == 0, dry.output
    row = next(line for line in dry.output.splitlines() if line.startswith("│ run"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:4] == ["run", "checkpoints", "2", "3"], cells
    # The models of the dropped three go with their manifests: no object file is freed for them
    # (the one object, the global RNG streams, is shared with the kept two).
    assert cells[4] == "0 B", cells
