"""AlertTracker: k of m persistence, severe alerts at once, one alert per episode."""

from __future__ import annotations

import pytest

from skewguard.detect import AlertTracker, DriftPolicy, FeatureVerdict, Method, WindowVerdict
from skewguard.detect.measure import ColumnStatistics
from skewguard.errors import DataError
from skewguard.stats import ColumnKind, ColumnRole


def _window(**flags: str) -> WindowVerdict:
    """A verdict per feature: "" = quiet, "f" = flagged, "s" = flagged and severe."""
    stats = ColumnStatistics(
        reference_count=1000,
        window_count=1000,
        reference_null_rate=0.0,
        window_null_rate=0.0,
        null_rate_p_value=1.0,
        psi=0.0,
        out_of_domain_share=None,
    )
    features = tuple(
        FeatureVerdict(
            name=name,
            role=ColumnRole.FEATURE,
            kind=ColumnKind.NUMERIC,
            drifted=state in ("f", "s"),
            severe=state == "s",
            method=Method.WASSERSTEIN,
            effect=0.5 if state else 0.01,
            threshold=0.1,
            p_value=1e-9 if state else 0.5,
            p_adjusted=1e-8 if state else 0.9,
            count=1000,
            reason=f"{name}: test verdict",
            checks=(),
            statistics=stats,
        )
        for name, state in flags.items()
    )
    return WindowVerdict(features=features, rows=1000, reference_rows=10_000, alpha=0.01)


def _run(tracker: AlertTracker, pattern: str) -> list[int]:
    """Feed feature ``x`` the flag pattern (one char per window); return the alerting windows."""
    windows = []
    for index, state in enumerate(pattern):
        alerts = tracker.update(_window(x="" if state == "." else state))
        windows += [a.window for a in alerts]
        assert all(a.window == index for a in alerts)
    return windows


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("f..f..f", []),  # never 2 flags within 3 windows
        ("f.f", [2]),  # 2 of the last 3
        ("ff", [1]),
        ("..s", [2]),  # severe: at once
        ("fffff", [1]),  # one alert per episode, not one per window
        ("ff...ff", [1, 6]),  # cleared after 3 quiet windows, then a new episode
        ("ff..ff", [1]),  # still active: only 2 quiet windows in between
    ],
)
def test_k_of_m_persistence(pattern: str, expected: list[int]) -> None:
    assert _run(AlertTracker(DriftPolicy(persistence_k=2, persistence_m=3)), pattern) == expected


def test_k_equal_one_alerts_on_the_first_flag() -> None:
    assert _run(AlertTracker(DriftPolicy(persistence_k=1, persistence_m=1)), "..f") == [2]


def test_features_are_tracked_independently() -> None:
    tracker = AlertTracker()
    assert tracker.update(_window(a="f", b="")) == []
    alerts = tracker.update(_window(a="", b="f"))
    assert alerts == []  # one flag each is not two flags of one feature
    alerts = tracker.update(_window(a="f", b=""))
    assert [a.feature for a in alerts] == ["a"]
    assert tracker.active == frozenset({"a"})
    assert "flagged in 2 of the last 3 windows" in alerts[0].reason


def test_state_round_trip_resumes_identically() -> None:
    first = AlertTracker()
    first.update(_window(x="f"))
    second = AlertTracker()
    second.load_state_dict(first.state_dict())
    assert [a.window for a in second.update(_window(x="f"))] == [1]
    with pytest.raises(DataError):
        second.load_state_dict({"windows_seen": 1})
