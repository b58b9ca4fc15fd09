"""The drift benchmark: skewguard finds every seeded shift and nothing else; Evidently is timed alongside."""

from __future__ import annotations

import pytest

from skewguard.bench.drift import SHIFT_KINDS, bench_drift, make_frames
from skewguard.errors import ConfigError

KEYS = {
    "rows",
    "features",
    "skewguard_s",
    "evidently_s",
    "speedup",
    "shifted",
    "skewguard_found",
    "skewguard_false",
    "evidently_found",
    "evidently_false",
    "skewguard_setup_s",
}


def test_frames_have_the_asked_shape_and_eight_shifted_columns() -> None:
    reference, current, shifted = make_frames(rows=500, features=50, seed=3)
    assert reference.shape == current.shape == (500, 50)
    assert sum(c.startswith("num_") for c in reference.columns) == 35
    assert sorted(shifted.values()) == sorted(SHIFT_KINDS)
    with pytest.raises(ConfigError):
        make_frames(features=7)


def test_small_run_with_evidently_reports_every_figure() -> None:
    result = bench_drift(rows=3000, features=20, seed=1)
    assert set(result) >= KEYS
    assert result["shifted"] == 8
    assert result["skewguard_false"] == 0
    assert result["speedup"] == pytest.approx(result["evidently_s"] / result["skewguard_s"], rel=0.01)
    assert result["evidently_found"] + result["evidently_false"] == len(result["evidently_drifted"])
    # At 3,000 rows the big shifts are unmistakable for skewguard.
    assert {"num_01", "num_02", "num_03", "cat_00", "cat_02"} <= set(result["skewguard_drifted"])


@pytest.mark.slow
def test_full_size_run_finds_all_eight_shifts_and_nothing_else() -> None:
    result = bench_drift(run_evidently=False)
    assert (result["rows"], result["features"]) == (100_000, 50)
    assert result["skewguard_found"] == 8, result["skewguard_drifted"]
    assert result["skewguard_false"] == 0, result["skewguard_drifted"]
