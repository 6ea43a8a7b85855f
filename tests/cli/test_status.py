"""`status` on real flows: `.submit()` / `.map()`, and reasons that compare with the previous run."""

from __future__ import annotations

import pytest

from pipeline import Store
from tests.cli.test_cli import invoke

pytestmark = pytest.mark.usefixtures("prefect_api")
FAN_OUT = ["--flow", "tests.cli.flows:fan_out"]
CHAIN = ["--flow", "tests.cli.flows:chain"]


def rows(output: str) -> list[list[str]]:
    """The table rows of `status` output: [stage, status, why]."""
    found = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 4 and cells[0] not in ("stage", ""):
            found.append(cells[:3])
    return found


def test_status_of_a_flow_with_submit_and_map(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    before = invoke("status", *FAN_OUT, *store)
    assert before.exit_code == 0, before.output  # was: RuntimeError: Unable to determine task runner
    assert [r[0] for r in rows(before.output)] == ["square"] * 4 + ["scale"] * 4 + ["frame", "total"]
    assert invoke("run", *FAN_OUT, *store).exit_code == 0
    after = invoke("status", *FAN_OUT, *store)
    assert after.exit_code == 0, after.output
    assert [r[1] for r in rows(after.output)] == ["cached"] * 10
    changed = rows(invoke("status", *FAN_OUT, *store, "--set", "factor=3").output)
    assert changed[4] == ["scale", "stale", "param factor: 2 -> 3"]
    assert changed[-1] == ["total", "may rerun", "upstream scale changed"]


def test_reasons_compare_with_the_previous_run_of_the_flow(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    for sets in ([], ["--set", "epochs=40"], []):  # default, epochs=40, default again
        assert invoke("run", *CHAIN, *store, *sets).exit_code == 0
    # The previous run used epochs=30: that is what a change is measured from (the newest
    # result of `fit`, epochs=40, is not).
    assert rows(invoke("status", *CHAIN, *store, "--set", "epochs=35").output)[1] == [
        "fit", "stale", "param epochs: 30 -> 35"]  # fmt: skip
    # Nobody changed epochs: a clip change makes fit "may rerun" (early cutoff may save it).
    clip = rows(invoke("status", *CHAIN, *store, "--set", "clip=3.5").output)
    assert clip[0] == ["prep", "stale", "param clip: 5.0 -> 3.5"]
    assert clip[1] == ["fit", "may rerun", "upstream prep changed"]


def test_a_stage_called_twice_is_compared_with_its_own_call(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    assert invoke("run", *CHAIN, *store).exit_code == 0
    status = rows(invoke("status", *CHAIN, *store, "--set", "epochs=40").output)
    # was: the first `score` said "param split_name: 'test' -> 'validation'"
    assert status[2:] == [["score", "may rerun", "upstream fit changed"]] * 2


def test_a_flow_computing_with_a_planned_output_is_one_line(tmp_path):
    from tests.cli.test_errors import in_process, one_clear_line

    Store(tmp_path / "store")
    done = in_process("status", "--flow", "tests.cli.flows:arithmetic", "--store", str(tmp_path / "store"))
    one_clear_line(done, "the dry run of tests.cli.flows:arithmetic stopped after 1 stage call(s) at AttributeError")
