"""Save / keep / early-stopping policies, table-driven (Orbax style): inputs beside expectations."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import ConfigError
from pipeline.training import (
    BestK,
    EarlyStopping,
    EveryNEpochs,
    EveryNSeconds,
    KeepAll,
    LatestN,
    OnImprovement,
)
from pipeline.training.policies import History, Record, StopState, retained

NAN = math.nan


def records(losses: list[float], metric: str = "val_loss") -> list[Record]:
    """Steps 1..n with one metric each (``None``: the metric is missing)."""
    return [Record(i + 1, {} if v is None else {metric: v}, float(i)) for i, v in enumerate(losses)]


# -- retention: sequences of steps + metrics -> kept set ---------------------------------------
RETENTION = [
    # (keep policy, val_loss per step 1..n, protected steps, expected kept steps)
    (LatestN(1), [0.9, 0.8, 0.7], set(), {3}),
    (LatestN(2), [0.9, 0.8, 0.7, 0.6, 0.5], set(), {4, 5}),
    (LatestN(10), [0.9, 0.8], set(), {1, 2}),
    (BestK(1, "val_loss"), [0.9, 0.5, 0.7], set(), {2}),
    (BestK(2, "val_loss", mode="min"), [0.9, 0.5, 0.7, 0.6], set(), {2, 4}),
    (BestK(2, "val_loss", mode="max"), [0.9, 0.5, 0.7, 0.6], set(), {1, 3}),
    (BestK(1, "val_loss"), [0.5, 0.7, 0.5], set(), {1}),  # ties: the earlier step wins
    (BestK(2, "val_loss"), [NAN, 0.7, NAN, 0.9], set(), {2, 4}),  # NaN never counts as good
    (BestK(2, "val_loss"), [0.3, None, 0.4, None], set(), {1, 3}),  # missing metric: not ranked
    (LatestN(2) | BestK(1, "val_loss"), [0.9, 0.2, 0.5, 0.6, 0.7], set(), {2, 4, 5}),
    (LatestN(2) | BestK(3, "val_loss"), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], set(), {1, 2, 3, 5, 6}),
    (LatestN(1) | LatestN(3), [0.5] * 5, set(), {3, 4, 5}),
    (LatestN(1), [0.9, 0.8, 0.7, 0.6], {1}, {1, 4}),  # the checkpoint resumed from stays
    (BestK(1, "val_loss"), [0.9, 0.2, 0.7], {3}, {2, 3}),  # the newest (protected) stays
    (LatestN(1), [0.9, 0.8], {7}, {2}),  # a protected step that does not exist is not invented
    (KeepAll(), [0.9, 0.8, 0.7], set(), {1, 2, 3}),
    (None, [0.9, 0.8, 0.7], set(), {1, 2, 3}),
    (LatestN(2), [], set(), set()),
]


@pytest.mark.parametrize("keep, losses, protected, expected", RETENTION)
def test_retention_table(keep, losses, protected, expected):
    assert retained(records(losses), keep, protected) == expected


def test_retention_ranks_steps_as_numbers_not_strings():
    recs = [Record(s, {"val_loss": 1.0}) for s in (2, 9, 10, 11, 100)]
    assert LatestN(2).should_keep(recs) == {11, 100}


# -- save decisions -----------------------------------------------------------------------------
def saves(policy, losses, times=None) -> list[int]:
    """Replay steps through ``policy`` the way the Checkpointer does; return the saved steps."""
    seen, saved = [], []
    for i, v in enumerate(losses):
        rec = Record(i + 1, {"val_loss": v}, times[i] if times else float(i))
        if policy.should_save(rec, History(tuple(seen), tuple(saved), 0.0)):
            saved.append(rec)
        seen.append(rec)
    return [r.step for r in saved]


SAVES = [
    (EveryNEpochs(1), [0.5] * 4, None, [1, 2, 3, 4]),
    (EveryNEpochs(2), [0.5] * 5, None, [2, 4]),
    (EveryNEpochs(3), [0.5] * 7, None, [3, 6]),
    (EveryNSeconds(10), [0.5] * 6, [3, 9, 11, 15, 20, 30], [3, 6]),  # >= 10 s since the last save
    (OnImprovement("val_loss"), [0.9, 0.8, 0.85, 0.7, 0.7], None, [1, 2, 4]),
    (OnImprovement("val_loss", min_delta=0.05), [0.9, 0.88, 0.8, 0.79, 0.7], None, [1, 3, 5]),
    (OnImprovement("val_loss", mode="max"), [0.1, 0.3, 0.2, 0.4], None, [1, 2, 4]),
    (OnImprovement("val_loss"), [NAN, 0.5, NAN, 0.4], None, [2, 4]),
    (EveryNEpochs(3) | OnImprovement("val_loss"), [0.9, 0.95, 0.99, 0.5, 0.6, 0.7], None, [1, 3, 4, 6]),
    (EveryNEpochs(4) | EveryNSeconds(100), [0.5] * 8, [0, 1, 2, 3, 4, 150, 151, 152], [4, 6, 8]),
]


@pytest.mark.parametrize("policy, losses, times, expected", SAVES)
def test_save_decision_table(policy, losses, times, expected):
    assert saves(policy, losses, times) == expected


# -- early stopping -----------------------------------------------------------------------------
STOPPING = [
    # (policy, val_loss per step, stop step (None: never), best step)
    (EarlyStopping("val_loss", patience=2), [0.9, 0.8, 0.85, 0.86, 0.7], 4, 2),
    (EarlyStopping("val_loss", patience=3), [0.9, 0.8, 0.85, 0.86, 0.7, 0.9], None, 5),
    (EarlyStopping("val_loss", patience=1, min_delta=0.05), [0.9, 0.87, 0.8], 2, 1),
    (EarlyStopping("val_loss", mode="max", patience=2), [0.1, 0.3, 0.2, 0.25], 4, 2),
    (EarlyStopping("val_loss", patience=0), [0.9, 0.8, 0.8], 3, 2),
    (EarlyStopping("val_loss", patience=2), [NAN, NAN, 0.5], 2, None),
]


@pytest.mark.parametrize("policy, losses, stop, best", STOPPING)
def test_early_stopping_table(policy, losses, stop, best):
    state, stopped_at = StopState(), None
    for rec in records(losses):
        state, _ = policy.update(state, rec)
        if state.stopped:
            stopped_at = rec.step
            break
    assert stopped_at == stop
    assert state.best_step == best


# -- bad configuration --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EarlyStopping("val_loss", mode="maximum"), "mode must be 'min' or 'max', not 'maximum'"),
        (lambda: BestK(3, "val_loss", mode="lowest"), "BestK: mode must be 'min' or 'max', not 'lowest'"),
        (lambda: OnImprovement("val_loss", mode=None), "mode must be 'min' or 'max', not None"),
        (lambda: LatestN(0), "LatestN: n must be a number >= 1, not 0"),
        (lambda: BestK(0, "val_loss"), "BestK: k must be a number >= 1, not 0"),
        (lambda: EveryNEpochs(-2), "EveryNEpochs: n must be a number >= 1, not -2"),
        (lambda: EarlyStopping("val_loss", patience=-1), "patience must be a number >= 0, not -1"),
        (lambda: EarlyStopping("val_loss", min_delta="0.1"), "min_delta must be a number >= 0, not '0.1'"),
        (lambda: BestK(1, 3), "the monitored metric must be a metric name (a string), not 3"),
        (lambda: LatestN(2) | EveryNEpochs(1), "`|` joins policies of one kind"),
        (lambda: EveryNEpochs(1) | "often", "`|` joins policies of one kind"),
    ],
)
def test_bad_policy_configuration_is_a_clear_config_error(make, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        make()


def test_policies_are_frozen_and_compose_flat():
    policy = EveryNEpochs(2) | EveryNSeconds(300) | OnImprovement("val_loss", min_delta=1e-4)
    assert len(policy.policies) == 3 and policy.monitors == ("val_loss",)
    with pytest.raises(AttributeError):
        policy.policies = ()
    keep = LatestN(2) | BestK(3, "val_loss") | BestK(1, "acc", mode="max")
    assert keep.monitors == ("val_loss", "acc")
