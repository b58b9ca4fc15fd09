"""judge(): effect AND evidence AND count, BH across the window, every statistic kept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats

from skewguard.detect import DriftPolicy, Method, judge
from skewguard.errors import ConfigError, StatisticsError
from skewguard.stats import ColumnKind, ColumnSpec, ProfileLayout
from tests.detect import synthetic
from tests.detect.conftest import WINDOW, World


def test_benjamini_hochberg_is_applied_across_all_checks_of_the_window(world: World) -> None:
    rng = np.random.default_rng(1)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.VARIANCE))
    verdict = judge(world.baseline, window, world.calibration)
    checks = [c for f in verdict.features for c in f.checks]
    expected = stats.false_discovery_control([c.p_value for c in checks], method="bh")
    np.testing.assert_allclose([c.p_adjusted for c in checks], np.minimum(expected, 1.0), rtol=1e-12)
    assert len(checks) == 2 * len(verdict.features)  # a distribution check and a null-rate check each


def test_a_drifted_verdict_needs_effect_over_threshold_and_adjusted_p_below_alpha(world: World) -> None:
    rng = np.random.default_rng(2)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.MEAN))
    verdict = judge(world.baseline, window, world.calibration)
    feature = verdict.feature("num_00")
    assert feature.drifted
    assert feature.method is Method.WASSERSTEIN
    assert feature.effect > feature.threshold
    assert feature.p_adjusted < verdict.alpha
    assert feature.count == WINDOW
    assert feature.effect == pytest.approx(0.25, abs=0.05)  # a 0.25 sd mean shift
    assert "num_00 drifted" in feature.reason and "exceeds its threshold" in feature.reason
    for other in verdict.features:
        if other.drifted:
            assert other.effect > other.threshold and other.p_adjusted < verdict.alpha


def test_a_significant_but_negligible_change_is_not_flagged(world: World) -> None:
    rng = np.random.default_rng(3)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.MEAN))
    lenient = DriftPolicy(min_threshold={Method.WASSERSTEIN: 0.5})  # "only half an sd matters here"
    feature = judge(world.baseline, window, world.calibration, lenient).feature("num_00")
    assert not feature.drifted
    assert feature.p_adjusted < 1e-10
    assert feature.threshold == 0.5
    assert "within its threshold" in feature.reason and "negligible" in feature.reason


def test_a_large_effect_without_evidence_is_not_flagged(world: World) -> None:
    rng = np.random.default_rng(4)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.MEAN))
    strict = DriftPolicy(alpha=1e-300)
    feature = judge(world.baseline, window, world.calibration, strict).feature("num_00")
    assert feature.effect > feature.threshold
    assert not feature.drifted
    assert "not significant" in feature.reason


def test_a_window_below_min_count_is_not_judged(world: World) -> None:
    rng = np.random.default_rng(5)
    tiny = world.layout.profile(synthetic.draw(40, rng, synthetic.Shift.NEW_CATEGORY))
    verdict = judge(world.baseline, tiny, world.calibration)
    assert not verdict.any_drift
    assert "fewer than min_count 100" in verdict.feature("cat_00").reason
    assert (
        judge(world.baseline, tiny, world.calibration, DriftPolicy(min_count=10)).feature("cat_00").count
        == 40
    )


def test_severe_needs_the_effect_to_be_a_multiple_of_the_threshold(world: World) -> None:
    rng = np.random.default_rng(6)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.MEAN))
    feature = judge(world.baseline, window, world.calibration).feature("num_00")
    assert feature.severe and feature.effect >= 3 * feature.threshold
    huge = DriftPolicy(severe_multiplier=1000.0)
    assert not judge(world.baseline, window, world.calibration, huge).feature("num_00").severe


def test_every_statistic_is_kept_whether_or_not_it_flags(world: World) -> None:
    rng = np.random.default_rng(7)
    frame = synthetic.draw(WINDOW, rng)
    verdict = judge(world.baseline, world.layout.profile(frame), world.calibration)
    quiet = verdict.feature("num_05")
    assert not quiet.drifted
    s = quiet.statistics
    values = frame["num_05"].dropna()
    assert s.window_mean == pytest.approx(values.mean(), rel=1e-12)
    assert s.window_std == pytest.approx(values.std(), rel=1e-12)
    assert None not in (s.wasserstein, s.ks_statistic, s.ks_p_value, s.psi, s.reference_mean)
    cat = verdict.feature("cat_02").statistics
    assert None not in (cat.jensen_shannon, cat.chi_square_p_value, cat.linf, cat.unseen_share, cat.psi)
    assert verdict.feature("score").statistics.out_of_domain_share == 0.0
    assert "no drift" in quiet.reason
    json.dumps(verdict.to_dict(), allow_nan=False)  # storable as standard JSON


def test_null_rate_jump_is_reported_in_points(world: World) -> None:
    rng = np.random.default_rng(8)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.NULL_RATE))
    feature = judge(world.baseline, window, world.calibration).feature("num_02")
    assert feature.drifted and feature.method is Method.NULL_RATE
    assert feature.effect == pytest.approx(0.05, abs=0.01)
    assert "null rate 1.0% →" in feature.reason


def test_new_category_shows_as_unseen_share(world: World) -> None:
    rng = np.random.default_rng(9)
    window = world.layout.profile(synthetic.draw(WINDOW, rng, synthetic.Shift.NEW_CATEGORY))
    feature = judge(world.baseline, window, world.calibration).feature("cat_00")
    assert feature.drifted and feature.method is Method.JENSEN_SHANNON
    assert feature.statistics.unseen_share == pytest.approx(0.02, abs=0.006)
    assert feature.statistics.largest_change == "<unseen>"


def test_judging_profiles_of_different_layouts_is_refused(world: World) -> None:
    rng = np.random.default_rng(10)
    frame = synthetic.draw(2000, rng)
    other = ProfileLayout.fit(frame, synthetic.specs(), bins=5)
    with pytest.raises(StatisticsError):
        judge(world.baseline, other.profile(frame), world.calibration)


def test_a_calibration_that_lacks_a_column_is_a_config_error(world: World) -> None:
    frame = pd.DataFrame({"zzz": np.arange(200.0)})
    layout = ProfileLayout.fit(frame, [ColumnSpec("zzz", ColumnKind.NUMERIC)])
    with pytest.raises(ConfigError, match="zzz"):
        judge(layout.profile(frame), layout.profile(frame), world.calibration)


def test_policy_validates_its_fields() -> None:
    with pytest.raises(ValidationError):
        DriftPolicy(alpha=0.0)
    with pytest.raises(ValidationError):
        DriftPolicy(persistence_k=4, persistence_m=3)
    with pytest.raises(ValidationError):
        DriftPolicy(min_threshold={Method.NULL_RATE: -1.0})
    with pytest.raises(ValidationError):
        DriftPolicy(unknown=1)  # type: ignore[call-arg]
    policy = DriftPolicy(min_threshold={Method.NULL_RATE: 0.02})
    assert policy.floor(Method.NULL_RATE) == 0.02
    assert policy.floor(Method.WASSERSTEIN) == DriftPolicy().floor(Method.WASSERSTEIN)
