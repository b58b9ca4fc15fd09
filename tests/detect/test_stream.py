"""Detectors on streams with known drift points: no alarms without drift, fast alarms with it."""

from __future__ import annotations

import numpy as np
import pytest

from skewguard.detect import AlertTracker, judge
from tests.detect import synthetic
from tests.detect.conftest import WINDOW, World


@pytest.mark.slow
def test_a_thousand_stationary_windows_raise_at_most_one_alert(world: World) -> None:
    rng = np.random.default_rng(99)
    tracker = AlertTracker()
    alerts = []
    flagged_windows = 0
    for index in range(1000):
        window = world.layout.profile(synthetic.draw(WINDOW, rng), key_offset=index * WINDOW)
        verdict = judge(world.baseline, window, world.calibration)
        flagged_windows += verdict.any_drift
        alerts += tracker.update(verdict)
    assert len(alerts) <= 1, [a.reason for a in alerts]
    # BH at alpha = 0.01 bounds the share of windows with any flag near 1 %; allow twice that.
    assert flagged_windows <= 20


@pytest.mark.parametrize("shift", list(synthetic.Shift))
def test_each_seeded_shift_is_alerted_within_two_windows(world: World, shift: synthetic.Shift) -> None:
    rng = np.random.default_rng(list(synthetic.Shift).index(shift) + 1000)
    tracker = AlertTracker()
    first_shifted = 3
    alert_window = None
    for index in range(first_shifted + 2):
        frame = synthetic.draw(WINDOW, rng, shift if index >= first_shifted else None)
        verdict = judge(world.baseline, world.layout.profile(frame), world.calibration)
        # A chance flag elsewhere is allowed (about one window in a hundred); an alert is not.
        for alert in tracker.update(verdict):
            assert alert.feature == shift.value, f"unexpected alert: {alert.reason}"
            alert_window = index if alert_window is None else alert_window
    assert alert_window is not None, f"{shift.value} was never alerted"
    assert alert_window - first_shifted < 2


def test_span_drift_compares_consecutive_windows(world: World) -> None:
    rng = np.random.default_rng(5)
    first = world.layout.profile(synthetic.draw(WINDOW, rng))
    second = world.layout.profile(synthetic.draw(WINDOW, rng))
    shifted = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.MEAN))
    assert judge(first, second, world.calibration).drifted == ()
    span = judge(second, shifted, world.calibration)
    assert span.drifted == ("num_00",)
    verdict = span.feature("num_00")
    # Two windows of equal size: n_eff is half a window, so the threshold is wider than vs the baseline.
    against_baseline = judge(world.baseline, shifted, world.calibration).feature("num_00")
    assert verdict.threshold > against_baseline.threshold
