"""render_drift_html on monitor-shaped samples: a chosen subset of columns, and constant columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewguard.errors import DataError
from skewguard.report import render_drift_html
from skewguard.stats import ColumnKind, ColumnSpec, Profile, ProfileLayout

SPECS = [
    ColumnSpec("amount", ColumnKind.NUMERIC),
    ColumnSpec("weekday", ColumnKind.NUMERIC),
    ColumnSpec("country", ColumnKind.CATEGORICAL),
]


def frame(rng: np.random.Generator, n: int, *, weekday: int | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n),
            "weekday": np.full(n, weekday) if weekday is not None else rng.integers(0, 7, n),
            "country": rng.choice(np.array(["DE", "FR", "NL"], dtype=object), n),
        }
    )


def shown(page: str, column: str) -> bool:
    """Whether Evidently's page has a drift widget for ``column`` (bare names also occur in its JS)."""
    return f'"column_name": "{column}"' in page


@pytest.fixture(scope="module")
def profiles() -> tuple[Profile, Profile]:
    rng = np.random.default_rng(7)
    layout = ProfileLayout.fit(frame(rng, 4000), SPECS, reservoir_size=300)
    # A short window: the weekday is the same for every row, so it is constant in the window's sample.
    return layout.profile(frame(rng, 4000)), layout.profile(frame(rng, 800, weekday=3))


def test_a_column_constant_in_the_window_still_renders(
    profiles: tuple[Profile, Profile], tmp_path: Path
) -> None:
    reference, window = profiles
    page = render_drift_html(reference, window, tmp_path / "all.html").read_text(encoding="utf-8")
    assert all(shown(page, name) for name in ("amount", "weekday", "country"))


def test_columns_limit_the_page(profiles: tuple[Profile, Profile], tmp_path: Path) -> None:
    reference, window = profiles
    target = render_drift_html(reference, window, tmp_path / "some.html", columns=["amount", "country"])
    page = target.read_text(encoding="utf-8")
    assert shown(page, "amount") and shown(page, "country")
    assert not shown(page, "weekday")
    with pytest.raises(DataError, match="nope"):
        render_drift_html(reference, window, tmp_path / "bad.html", columns=["amount", "nope"])
    with pytest.raises(DataError, match="needs columns"):
        render_drift_html(reference, window, tmp_path / "bad.html", columns=[])
    assert not (tmp_path / "bad.html").exists()


def test_a_column_with_no_value_in_a_sample_is_left_off_the_page(tmp_path: Path) -> None:
    # A nullable feature all null in the window: Evidently refuses an empty column outright.
    rng = np.random.default_rng(8)
    layout = ProfileLayout.fit(frame(rng, 4000), SPECS, reservoir_size=300)
    window = frame(rng, 800)
    window["amount"] = np.nan
    window["country"] = None
    page = render_drift_html(layout.profile(frame(rng, 4000)), layout.profile(window), tmp_path / "p.html")
    text = page.read_text(encoding="utf-8")
    assert shown(text, "weekday")
    assert not shown(text, "amount") and not shown(text, "country")
    only_empty = layout.profile(window)
    with pytest.raises(DataError, match="nothing to draw"):
        render_drift_html(
            layout.profile(frame(rng, 4000)), only_empty, tmp_path / "q.html", columns=["amount"]
        )
