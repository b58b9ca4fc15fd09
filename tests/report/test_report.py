"""Human reports: the Evidently HTML from profile samples, and the effects PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewguard.detect import Calibration, judge
from skewguard.errors import DataError, StatisticsError
from skewguard.report import plot_effects, render_drift_html
from skewguard.stats import ColumnKind, ColumnSpec, ProfileLayout

SPECS = [ColumnSpec("amount", ColumnKind.NUMERIC), ColumnSpec("country", ColumnKind.CATEGORICAL)]


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": rng.normal(50 + 10 * shift, 10, n),
            "country": rng.choice(np.array(["DE", "FR", "NL"], dtype=object), n, p=[0.5, 0.3, 0.2]),
        }
    )


@pytest.fixture
def layout() -> ProfileLayout:
    return ProfileLayout.fit(_frame(np.random.default_rng(0), 5000), SPECS, reservoir_size=300)


def test_drift_html_is_written_from_the_samples(layout: ProfileLayout, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    reference = layout.profile(_frame(rng, 5000))
    window = layout.profile(_frame(rng, 2000, shift=1.0))
    target = render_drift_html(reference, window, tmp_path / "out" / "drift.html")
    html = target.read_text(encoding="utf-8")
    assert target == tmp_path / "out" / "drift.html"
    assert "<html" in html.lower()
    assert "amount" in html and "country" in html


def test_drift_html_needs_samples_and_one_layout(layout: ProfileLayout, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = _frame(rng, 1000)
    with pytest.raises(DataError, match="reservoir_size=0"):
        render_drift_html(layout.profile(frame), layout.profile(frame, reservoir_size=0), tmp_path / "x.html")
    other = ProfileLayout.fit(frame, SPECS, bins=4)
    with pytest.raises(StatisticsError):
        render_drift_html(layout.profile(frame), other.profile(frame), tmp_path / "x.html")


def test_effects_png_is_written_for_a_run_of_windows(layout: ProfileLayout, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reference_frame = _frame(rng, 5000)
    reference = layout.profile(reference_frame)
    calibration = Calibration.from_holdout(reference, _frame(rng, 4000), window_size=1000, draws=50)
    verdicts = [
        judge(reference, layout.profile(_frame(rng, 1000, shift=0.5 if i >= 4 else 0.0)), calibration)
        for i in range(8)
    ]
    assert verdicts[-1].feature("amount").drifted
    target = plot_effects(verdicts, tmp_path / "effects.png")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    with pytest.raises(DataError):
        plot_effects([], tmp_path / "none.png")
