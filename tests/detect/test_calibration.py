"""Calibration: thresholds from held-out chunks, with the √n_eff law for other window sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skewguard.detect import Calibration, Method
from skewguard.detect.measure import null_effects
from skewguard.errors import ConfigError, DataError
from skewguard.stats import ProfileLayout
from tests.detect import synthetic
from tests.detect.conftest import WINDOW, World


def test_threshold_is_the_constant_over_root_n_eff(world: World) -> None:
    cal = world.calibration
    constant = cal.constant("num_00", Method.WASSERSTEIN)
    n = world.baseline.numeric("num_00").count
    at_window = cal.threshold_at("num_00", Method.WASSERSTEIN, window_rows=WINDOW, reference_rows=n)
    assert at_window == pytest.approx(constant / math.sqrt(WINDOW * n / (WINDOW + n)))
    bigger = cal.threshold_at("num_00", Method.WASSERSTEIN, window_rows=4 * WINDOW, reference_rows=n)
    assert at_window / bigger == pytest.approx(
        math.sqrt((4 * WINDOW * n / (4 * WINDOW + n)) / (WINDOW * n / (WINDOW + n)))
    )
    assert cal.threshold("num_00", Method.WASSERSTEIN, 0.0) == math.inf
    assert cal.chunk_size == WINDOW  # 50k held out >= 2 windows: drawn at the window size itself


def test_thresholds_hold_their_false_exceedance_rate_on_fresh_windows(world: World) -> None:
    rng = np.random.default_rng(31)
    holdout = synthetic.draw(30_000, rng)
    cal = Calibration.from_holdout(
        world.baseline, holdout, window_size=WINDOW, quantile=0.9, draws=150, seed=3
    )
    exceed = total = 0
    for _ in range(60):
        window = world.layout.profile(synthetic.draw(WINDOW, rng), reservoir_size=0)
        for name, sketch in world.baseline.sketches.items():
            for method, effect, n_eff in null_effects(sketch, window.sketches[name]):
                if method is Method.NULL_RATE and cal.constant(name, method) == 0.0:
                    continue  # never-null columns: nothing to exceed
                exceed += effect > cal.threshold(name, method, n_eff)
                total += 1
    # A 90 % quantile should be exceeded by about 10 % of fresh windows (not ~0 %, not ~50 %).
    assert 0.04 < exceed / total < 0.18, (exceed, total)


def test_chunks_inside_the_reference_would_give_too_tight_thresholds() -> None:
    rng = np.random.default_rng(41)
    reference = synthetic.draw(20_000, rng)
    layout = ProfileLayout.fit(reference, synthetic.specs())
    baseline = layout.profile(reference, reservoir_size=0)
    held_out = Calibration.from_holdout(baseline, synthetic.draw(20_000, rng), window_size=5000, draws=60)
    in_sample = Calibration.from_holdout(
        baseline, reference, window_size=5000, draws=60
    )  # the NannyML #426 trap
    ratios = [
        in_sample.constant(c.name, Method.WASSERSTEIN) / held_out.constant(c.name, Method.WASSERSTEIN)
        for c in layout.columns
        if c.kind.value == "numeric"
    ]
    assert float(np.median(ratios)) < 0.95


def test_a_holdout_too_small_for_distinct_chunks_is_resampled_and_errs_on_the_safe_side(world: World) -> None:
    # Pools of 1.2 windows: chunks without replacement would share most rows, so every draw sat near
    # the pool's own distance from the reference and the 90 % quantile was exceeded by ~25 % of fresh
    # windows. Resampled chunks spread as windows do; the pool's own offset makes them conservative.
    rng = np.random.default_rng(51)
    exceed = total = 0
    for pool in range(4):
        holdout = synthetic.draw(6000, rng)
        small = Calibration.from_holdout(
            world.baseline, holdout, window_size=WINDOW, quantile=0.9, draws=100, seed=pool
        )
        assert (small.resampled, small.chunk_size) == (True, WINDOW)
        for _ in range(25):
            window = world.layout.profile(synthetic.draw(WINDOW, rng), reservoir_size=0)
            for name, sketch in world.baseline.sketches.items():
                for method, effect, n_eff in null_effects(sketch, window.sketches[name]):
                    if method is not Method.NULL_RATE:
                        exceed += effect > small.threshold(name, method, n_eff)
                        total += 1
    assert 0.01 < exceed / total <= 0.12, (exceed, total)  # (measured 0.025; without resampling 0.147)
    assert not world.calibration.resampled  # 50k held out: distinct chunks


def test_fold_calibration_covers_every_column() -> None:
    rng = np.random.default_rng(61)
    reference = synthetic.draw(10_000, rng)
    layout = ProfileLayout.fit(reference, synthetic.specs())
    cal = Calibration.from_folds(layout, reference, window_size=10_000, folds=4, draws=40)
    assert (cal.chunk_size, cal.resampled) == (2500, True)  # folds of 2,500 rows, resampled at their size
    covered = {(c.column, c.method) for c in cal.constants}
    for column in layout.columns:
        assert (column.name, Method.NULL_RATE) in covered
    assert all(c.constant >= 0 for c in cal.constants)


def test_calibration_json_round_trip(world: World) -> None:
    restored = Calibration.from_json(world.calibration.to_json())
    assert restored == world.calibration
    assert restored.constant("cat_01", Method.JENSEN_SHANNON) == world.calibration.constant(
        "cat_01", Method.JENSEN_SHANNON
    )
    with pytest.raises(DataError):
        Calibration.from_json('{"format": "nope"}')
    # A NaN constant would make its threshold NaN, never exceeded: that check silently off.
    data = world.calibration.to_dict()
    data["constants"][0]["constant"] = float("nan")
    with pytest.raises(DataError, match=r"the constant of column .* is nan; expected a finite number >= 0"):
        Calibration.from_json(json.dumps(data))


def test_bad_calibration_arguments_are_refused(world: World) -> None:
    frame = synthetic.draw(100, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        Calibration.from_holdout(world.baseline, frame, window_size=0)
    with pytest.raises(ConfigError):
        Calibration.from_holdout(world.baseline, frame, window_size=10, quantile=1.0)
    with pytest.raises(DataError):
        Calibration.from_holdout(world.baseline, frame.head(1), window_size=10)
    with pytest.raises(ConfigError):
        Calibration.from_folds(world.layout, frame, window_size=10, folds=1)
    with pytest.raises(ConfigError, match="no threshold"):
        world.calibration.constant("nope", Method.WASSERSTEIN)
