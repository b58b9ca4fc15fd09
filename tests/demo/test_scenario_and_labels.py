"""The demo's plan of windows and its delayed-label feed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from skewguard.demo.labels import LabelFeed
from skewguard.demo.scenario import (
    DRIFTING_FROM,
    FULL,
    QUICK,
    WINDOW,
    DemoSizes,
    Phase,
    drifted_category_weights,
    plan_windows,
)
from skewguard.errors import ConfigError


def test_plan_runs_the_phases_in_order_in_back_to_back_windows() -> None:
    for sizes in (QUICK, FULL):
        plans = plan_windows(sizes, seed=3)
        assert len(plans) == sizes.windows
        assert [p.index for p in plans] == list(range(sizes.windows))
        assert all(b.start == a.end == a.start + WINDOW for a, b in itertools.pairwise(plans))
        phases = [p.phase for p in plans]
        assert phases == sorted(phases, key=list(Phase).index)  # each phase one contiguous run
        counts = {phase: phases.count(phase) for phase in Phase}
        assert counts == {
            Phase.CLEAN: sizes.clean_windows,
            Phase.TIMEZONE: sizes.timezone_windows,
            Phase.CATEGORY_DRIFT: sizes.drift_windows,
            Phase.TIMEOUT: sizes.timeout_windows,
            Phase.SHADOW: sizes.shadow_windows,
        }
        assert len({p.seed for p in plans}) == len(plans)


def test_faults_appear_only_in_their_phase() -> None:
    plans = plan_windows(FULL)
    for plan in plans:
        assert (plan.hotfix_share > 0) == (plan.phase is Phase.TIMEZONE)
        assert (plan.timeout_share > 0) == (plan.phase is Phase.TIMEOUT)
        assert (plan.shape.category_weights is not None) == (plan.phase is Phase.CATEGORY_DRIFT)


def test_category_drift_grows_window_by_window_up_to_the_final_multiplier() -> None:
    drift = [p for p in plan_windows(FULL) if p.phase is Phase.CATEGORY_DRIFT]
    tail_shares = [float(p.shape.category_probabilities()[DRIFTING_FROM:].sum()) for p in drift]
    training = dataclasses.replace(drift[0].shape, category_weights=None)
    training_share = float(training.category_probabilities()[DRIFTING_FROM:].sum())
    assert training_share < tail_shares[0] < tail_shares[1] < tail_shares[2]
    expected = drifted_category_weights(FULL.final_drift_multiplier)
    np.testing.assert_allclose(np.asarray(drift[-1].shape.category_weights), expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [("window_records", 0), ("shadow_windows", 0), ("hotfix_share", 0.0), ("timeout_share", 1.5),
     ("final_drift_multiplier", 1.0)],
)  # fmt: skip
def test_demo_sizes_refuse_values_that_cannot_tell_the_story(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(QUICK, **{field: value})  # type: ignore[arg-type]
    assert isinstance(QUICK, DemoSizes)


def test_labels_are_released_oldest_first_and_only_once_their_time_has_come() -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    feed = LabelFeed(min_delay=dt.timedelta(minutes=10), max_delay=dt.timedelta(hours=6), seed=1)
    times = [pd.Timestamp(start + dt.timedelta(minutes=m)) for m in range(0, 24 * 60, 3)]
    ids = [f"r{i}" for i in range(len(times))]
    feed.add(ids, times, [i % 2 for i in range(len(times))])
    cutoff = start + dt.timedelta(hours=12)
    first = feed.due(cutoff)
    rest = feed.due(None)
    assert feed.waiting == 0 and feed.released == feed.added == len(ids)
    assert all(label.event_time < cutoff for label in first)
    assert all(label.event_time >= cutoff for label in rest)
    released = first + rest
    assert [label.event_time for label in released] == sorted(label.event_time for label in released)
    assert sorted(label.request_id for label in released) == sorted(ids)
    by_id = dict(zip(ids, times, strict=True))
    delays = [(label.event_time - by_id[label.request_id]).total_seconds() for label in released]
    assert min(delays) >= 600 and max(delays) <= 6 * 3600
    assert {label.label for label in released if label.request_id == "r3"} == {1}


def test_label_feed_refuses_mismatched_inputs_and_inverted_delays() -> None:
    with pytest.raises(ConfigError, match="delays"):
        LabelFeed(min_delay=dt.timedelta(hours=2), max_delay=dt.timedelta(hours=1), seed=0)
    feed = LabelFeed(min_delay=dt.timedelta(0), max_delay=dt.timedelta(hours=1), seed=0)
    with pytest.raises(ConfigError, match="one of each"):
        feed.add(["a", "b"], [pd.Timestamp("2026-06-01T00:00:00Z")], [1, 0])
