"""Metrics bookkeeping that dashboards depend on."""

from __future__ import annotations

import datetime as dt

from skewguard.ops import Metrics
from skewguard.results import Check, Finding, Stage, WindowKey, WindowResult

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_label_stage_does_not_count_the_window_twice_or_move_its_end_back() -> None:
    metrics = Metrics()
    key = WindowKey("ctr", T, T + dt.timedelta(minutes=5))
    later = WindowKey("ctr", T + dt.timedelta(minutes=5), T + dt.timedelta(minutes=10))
    metrics.observe_window(WindowResult(key, 10))
    metrics.observe_window(WindowResult(later, 10))
    labelled = WindowResult(
        key, 10, findings=(Finding(Check.PERFORMANCE, "auc", False, 0.7, 0.72),), stage=Stage.LABELS
    )
    metrics.observe_labelled_window(labelled)
    assert sample(metrics, "skewguard_windows_finalised_total", {"model": "ctr"}) == 2
    assert sample(metrics, "skewguard_last_window_end_seconds", {"model": "ctr"}) == later.end.timestamp()
    assert (
        sample(metrics, "skewguard_effect_size", {"model": "ctr", "check": "performance", "subject": "auc"})
        == 0.7
    )


def test_a_revoked_partition_stops_reporting_lag() -> None:
    metrics = Metrics()
    metrics.lag.labels("serving", "3").set(42)
    metrics.forget_partition("serving", 3)
    metrics.forget_partition("serving", 3)  # twice is harmless
    assert sample(metrics, "skewguard_consumer_lag", {"topic": "serving", "partition": "3"}) is None
