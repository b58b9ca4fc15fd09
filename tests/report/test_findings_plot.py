"""The effects PNG drawn from stored window results (Findings), as ``skewguard report`` draws it."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from matplotlib.image import imread

from skewguard.errors import DataError
from skewguard.report import effect_history, plot_findings
from skewguard.results import Check, Finding, WindowKey, WindowResult

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=5)


def window(index: int, *findings: Finding, model: str = "ctr") -> WindowResult:
    start = T0 + index * STEP
    return WindowResult(WindowKey(model, start, start + STEP), records=1000, findings=findings)


def drift(subject: str, effect: float | None, threshold: float | None, flagged: bool = False) -> Finding:
    return Finding(Check.DRIFT, subject, flagged, effect=effect, threshold=threshold, method="wasserstein")


def test_history_is_in_time_order_with_effect_over_threshold() -> None:
    newest_first = [
        window(2, drift("price", 0.30, 0.10, flagged=True), drift("device", 0.01, 0.04)),
        window(1, drift("price", 0.05, 0.10), drift("device", 0.02, None)),
        window(0, drift("price", 0.02, 0.08)),
    ]
    history = effect_history(newest_first)
    assert history.starts == (T0, T0 + STEP, T0 + 2 * STEP)
    assert list(history.ratios) == ["price", "device"]
    assert history.ratios["price"] == pytest.approx((0.25, 0.5, 3.0))
    device = history.ratios["device"]
    assert math.isnan(device[0])  # no finding in that window
    assert math.isnan(device[1])  # no finite threshold (nothing to compare)
    assert device[2] == pytest.approx(0.25)
    assert history.flagged == {"price": (2,), "device": ()}


def test_only_baseline_drift_checks_are_drawn_by_default() -> None:
    prediction = Finding(Check.PREDICTION_DRIFT, "prediction", True, effect=0.2, threshold=0.05)
    span = Finding(Check.SPAN_DRIFT, "price", True, effect=0.9, threshold=0.1)
    skew = Finding(Check.SKEW, "price", True, effect=0.5, threshold=0.0)
    results = [window(0, drift("price", 0.01, 0.1), prediction, span, skew)]
    history = effect_history(results)
    assert list(history.ratios) == ["price", "prediction_drift:prediction"]
    assert history.ratios["prediction_drift:prediction"] == pytest.approx((4.0,))
    assert history.flagged["prediction_drift:prediction"] == (0,)
    spans = effect_history(results, checks=(Check.SPAN_DRIFT,))
    assert spans.ratios == {"span_drift:price": pytest.approx((9.0,))}


@pytest.mark.parametrize("count", [1, 6])
def test_png_is_written_and_decodes(tmp_path: Path, count: int) -> None:
    results = [
        window(i, drift("price", 0.02 + 0.1 * i, 0.1, flagged=i >= 3), drift("device", 0.01, 0.04))
        for i in range(count)
    ]
    target = plot_findings(results, tmp_path / "out" / "effects.png")
    assert target == tmp_path / "out" / "effects.png"
    image = imread(target)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01  # lines and text, not a blank canvas


def test_nothing_to_draw_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least one window"):
        plot_findings([], tmp_path / "x.png")
    with pytest.raises(DataError, match="one model"):
        effect_history([window(0, drift("a", 0.1, 0.1)), window(1, drift("a", 0.1, 0.1), model="other")])
    skew_only = window(0, Finding(Check.SKEW, "price", False, effect=0.0, threshold=0.0))
    with pytest.raises(DataError, match="drift"):
        plot_findings([skew_only], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
