"""Every statistic against scipy (or a direct numpy computation) on the same data."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from skewguard.errors import StatisticsError
from skewguard.stats import (
    chi_square,
    js_distance,
    ks_binned,
    ks_exact,
    linf_distance,
    null_rate_change,
    out_of_domain_share,
    paired_bootstrap_interval,
    paired_bootstrap_standard_error,
    psi,
    unseen_category_share,
    wasserstein_binned,
    wasserstein_normalized,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def test_ks_exact_equals_scipy_ks_2samp(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=700), rng.normal(0.2, 1.1, size=900)
    ours = ks_exact(a, b)
    theirs = stats.ks_2samp(a, b)
    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue
    assert (ours.n_reference, ours.n_current) == (700, 900)


def test_ks_exact_drops_non_finite_values(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=300), rng.normal(size=300)
    dirty = np.concatenate([a, [np.nan, np.inf]])
    assert ks_exact(dirty, b).statistic == stats.ks_2samp(a, b).statistic


def _discretise(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value moved to its bin's lower edge (underflow to below the first edge)."""
    codes = np.searchsorted(edges, values, side="right")
    lower = np.concatenate([[edges[0] - 1.0], edges])
    return lower[codes]


def test_ks_binned_statistic_equals_scipy_on_discretised_data(rng: np.random.Generator) -> None:
    edges = np.quantile(rng.normal(size=5000), np.linspace(0, 1, 21))
    a, b = rng.normal(size=4000), rng.normal(0.1, 1.0, size=3000)
    counts_a = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    counts_b = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
    ours = ks_binned(counts_a, counts_b)
    theirs = stats.ks_2samp(_discretise(a, edges), _discretise(b, edges), method="asymp")
    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
    # The binned statistic never exceeds the exact one on the raw values.
    assert ours.statistic <= stats.ks_2samp(a, b).statistic + 1e-12
    # p-value: Kolmogorov's limit at sqrt(n_eff)·D; scipy's asymp uses the finite-n law (≈ 1-4 % apart).
    n_eff = 4000 * 3000 / 7000
    assert ours.p_value == pytest.approx(stats.kstwobign.sf(ours.statistic * math.sqrt(n_eff)), rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=0.05)
    assert ours.p_value >= theirs.pvalue  # the limit is the conservative side


def test_ks_binned_of_identical_counts_is_zero_with_p_one() -> None:
    result = ks_binned([5, 10, 20, 5], [10, 20, 40, 10])
    assert result.statistic == 0.0
    assert result.p_value == 1.0


def test_chi_square_equals_scipy_when_no_bin_is_sparse(rng: np.random.Generator) -> None:
    ref = rng.multinomial(5000, [0.4, 0.3, 0.2, 0.1])
    cur = rng.multinomial(3000, [0.35, 0.3, 0.2, 0.15])
    ours = chi_square(ref, cur)
    theirs = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-12)
    assert ours.dof == theirs.dof
    assert ours.pooled_bins == 0


def test_chi_square_pools_sparse_bins_into_one_bin_when_that_is_dense_enough() -> None:
    ref = np.array([4000, 3000, 2000, 5, 0, 6, 4])
    cur = np.array([400, 300, 200, 1, 0, 0, 3])
    ours = chi_square(ref, cur, min_expected=1.0)
    # The three sparse non-empty bins pool into one (expected ~1.8 in the current row, dense enough at
    # min_expected 1); the empty bin goes.
    pooled = np.array([[4000, 3000, 2000, 15], [400, 300, 200, 4]])
    theirs = stats.chi2_contingency(pooled, correction=False)
    assert (ours.pooled_bins, ours.sparse_p_value) == (3, None)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-12)


def test_chi_square_tests_a_too_sparse_pooled_bin_exactly_and_combines_by_bonferroni() -> None:
    ref = np.array([50_000, 30_000, 20_000, 0])
    cur = np.array([1_200, 500, 280, 20])  # 20 rows of a category the reference never had
    ours = chi_square(ref, cur)
    dense = stats.chi2_contingency(np.array([[50_000, 30_000, 20_000], [1_200, 500, 280]]), correction=False)
    exact = stats.binomtest(20, 20, p=2000 / 102_000)
    assert ours.pooled_bins == 1
    assert ours.sparse_p_value == pytest.approx(exact.pvalue, rel=1e-12)
    assert ours.statistic == pytest.approx(dense.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(min(1.0, 2 * min(dense.pvalue, exact.pvalue)), rel=1e-12)
    assert ours.p_value < 1e-20


def test_chi_square_is_not_fooled_by_one_stray_value_of_a_rare_category() -> None:
    # Same proportions on the common categories; a rare one (3 in the reference) shows up twice.
    ref, cur = np.array([60_000, 40_000, 3]), np.array([3_000, 2_000, 2])
    assert stats.chi2_contingency(np.vstack([ref, cur]), correction=False).pvalue < 0.01  # Pearson cries wolf
    exact = stats.binomtest(2, 5, p=5002 / 105_005).pvalue  # 2 of 5 in a 4.8 % sample
    assert chi_square(ref, cur).sparse_p_value == pytest.approx(exact, rel=1e-12)
    assert chi_square(ref, cur).p_value > 0.01


def test_chi_square_detects_a_new_category_at_two_percent() -> None:
    ref = np.array([50_000, 30_000, 20_000, 0])
    cur = np.array([2_450, 1_470, 980, 100])
    assert chi_square(ref, cur).p_value < 1e-10


def test_chi_square_of_a_window_wholly_in_a_new_category_rests_on_the_exact_test() -> None:
    """The window's only bin is new and too sparse to pool densely: its dense part is all zeros."""
    reference, current = [50_000.0, 50_000.0, 0.0], [0.0, 0.0, 200.0]
    result = chi_square(reference, current)
    exact = stats.binomtest(200, 200, p=200 / 100_200).pvalue
    assert result.sparse_p_value == pytest.approx(exact)
    assert result.p_value == pytest.approx(min(1.0, 2 * exact)) and result.p_value < 1e-100
    assert result.dof == 0


def test_chi_square_keeps_its_size_on_a_long_tail_in_small_windows() -> None:
    """Same distribution, 52 Zipf bins, windows of 200: p < 0.01 about 1 % of the time, not twice that.

    Pooling only cells expecting under 1 left many expecting 1 to 5, where Pearson's statistic is
    anti-conservative (measured: 1.95x the nominal rate at 0.01, 4x at 0.001): false alarms.
    """
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, 53) ** 1.2
    p = weights / weights.sum()
    reference = rng.multinomial(100_000, p)
    p_values = np.array([chi_square(reference, rng.multinomial(200, p)).p_value for _ in range(4000)])
    assert (p_values < 0.01).mean() < 0.015
    assert (p_values < 0.05).mean() < 0.06


def test_chi_square_with_a_single_bin_has_nothing_to_test() -> None:
    result = chi_square([100, 0, 0], [50, 0, 0])
    assert (result.statistic, result.p_value, result.dof) == (0.0, 1.0, 0)


def test_psi_is_the_symmetrised_kl_divergence_of_the_smoothed_proportions(rng: np.random.Generator) -> None:
    ref = rng.multinomial(10_000, [0.5, 0.3, 0.2, 0.0])
    cur = rng.multinomial(10_000, [0.4, 0.3, 0.2, 0.1])
    eps = 1e-4
    p = ref / ref.sum() + eps
    q = cur / cur.sum() + eps
    expected = stats.entropy(p, q) + stats.entropy(q, p)  # scipy renormalises p and q itself
    assert psi(ref, cur, epsilon=eps) == pytest.approx(expected, rel=1e-10)


def test_js_distance_equals_scipy_jensenshannon_base_2(rng: np.random.Generator) -> None:
    ref = rng.multinomial(10_000, [0.5, 0.3, 0.2])
    cur = rng.multinomial(4_000, [0.3, 0.3, 0.4])
    expected = distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2)
    assert js_distance(ref, cur) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < js_distance(ref, cur) <= 1.0


def test_js_distance_of_disjoint_supports_is_one() -> None:
    assert js_distance([10, 0], [0, 10]) == pytest.approx(1.0)


def test_linf_distance_equals_scipy_chebyshev(rng: np.random.Generator) -> None:
    ref = rng.multinomial(10_000, [0.5, 0.3, 0.2])
    cur = rng.multinomial(4_000, [0.3, 0.3, 0.4])
    expected = distance.chebyshev(ref / ref.sum(), cur / cur.sum())
    assert linf_distance(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_wasserstein_normalized_is_scipy_distance_over_reference_std(rng: np.random.Generator) -> None:
    a, b = rng.normal(5, 2, size=3000), rng.normal(5.5, 2, size=2000)
    expected = stats.wasserstein_distance(a, b) / np.std(a, ddof=1)
    assert wasserstein_normalized(a, b) == pytest.approx(expected, rel=1e-12)
    assert wasserstein_normalized(a, b, scale=4.0) == pytest.approx(stats.wasserstein_distance(a, b) / 4.0)
    # A mean shift of a quarter standard deviation reads as ~0.25.
    big_a, big_b = rng.normal(0, 1, 200_000), rng.normal(0.25, 1, 200_000)
    assert wasserstein_normalized(big_a, big_b) == pytest.approx(0.25, abs=0.01)


def test_wasserstein_of_constant_reference_is_in_raw_units() -> None:
    assert wasserstein_normalized([3.0, 3.0, 3.0], [4.0, 4.0]) == pytest.approx(1.0)


def test_wasserstein_binned_equals_scipy_when_each_bin_holds_one_value(rng: np.random.Generator) -> None:
    a = rng.poisson(3, size=5000).astype(float)
    b = rng.poisson(3.4, size=4000).astype(float)
    edges = np.arange(0.0, 15.0)  # one bin per integer: every bin's centroid is its only value

    def binned(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = np.searchsorted(edges, x, side="right")
        return np.bincount(codes, minlength=16), np.bincount(codes, weights=x, minlength=16)

    (ca, sa), (cb, sb) = binned(a), binned(b)
    expected = stats.wasserstein_distance(a, b) / 1.7
    assert wasserstein_binned(ca, sa, cb, sb, scale=1.7) == pytest.approx(expected, rel=1e-12)


def test_wasserstein_binned_is_close_to_the_raw_distance_on_continuous_data(rng: np.random.Generator) -> None:
    a, b = rng.normal(0, 1, 50_000), rng.normal(0.3, 1.2, 50_000)
    edges = np.quantile(a, np.linspace(0, 1, 33))

    def binned(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = np.searchsorted(edges, x, side="right")
        return np.bincount(codes, minlength=34), np.bincount(codes, weights=x, minlength=34)

    (ca, sa), (cb, sb) = binned(a), binned(b)
    raw = stats.wasserstein_distance(a, b)
    assert wasserstein_binned(ca, sa, cb, sb, scale=1.0) == pytest.approx(raw, rel=0.05)


def test_null_rate_change_matches_scipy_chi2_contingency_on_the_2x2_table() -> None:
    result = null_rate_change(100, 10_000, 80, 4_000)
    table = np.array([[100, 9_900], [80, 3_920]])
    expected = stats.chi2_contingency(table, correction=False)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.statistic**2 == pytest.approx(expected.statistic, rel=1e-9)
    assert (result.reference_rate, result.current_rate) == (0.01, 0.02)
    assert result.difference == pytest.approx(0.01)


def test_null_rate_change_with_few_expected_nulls_is_fisher_exact_not_the_normal_approximation() -> None:
    """3 nulls in 200 against 200 in 100 000 (one expected): z says 4e-5, the truth is ~0.008."""
    result = null_rate_change(200, 100_000, 3, 200)
    expected = stats.fisher_exact([[3, 197], [200, 99_800]])
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert 0.005 < result.p_value < 0.02
    assert result.statistic == pytest.approx(
        (3 / 200 - 0.002) / math.sqrt(203 / 100_200 * (1 - 203 / 100_200) * (1 / 100_000 + 1 / 200))
    )


def test_null_rate_change_without_any_null_has_no_evidence() -> None:
    result = null_rate_change(0, 1000, 0, 500)
    assert (result.statistic, result.p_value, result.difference) == (0.0, 1.0, 0.0)


def test_unseen_category_share_counts_values_the_reference_never_had() -> None:
    reference = np.array(["a", "b", None, "c"], dtype=object)
    current = np.array(["a", "d", "d", None, "b"], dtype=object)
    assert unseen_category_share(reference, current) == pytest.approx(2 / 4)


def test_out_of_domain_share_numeric_and_categorical() -> None:
    assert out_of_domain_share([-1.0, 0.0, 5.0, 11.0, np.nan], low=0.0, high=10.0) == pytest.approx(2 / 4)
    values = np.array(["x", "y", "z", None], dtype=object)
    assert out_of_domain_share(values, allowed=frozenset({"x", "y"})) == pytest.approx(1 / 3)


def auc_or_nan(scores: np.ndarray, labels: np.ndarray) -> float:
    """The AUC (Mann-Whitney U over positives x negatives), NaN when one class is missing."""
    positives = int(labels.sum())
    if positives in (0, len(labels)):
        return math.nan
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    return float(u / (positives * (len(labels) - positives)))


def scipy_auc_bootstrap(scores: np.ndarray, labels: np.ndarray, seed: int, confidence: float = 0.95) -> Any:
    """scipy's own paired percentile bootstrap of the AUC (200 resamples, this seed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        return stats.bootstrap(
            (scores, labels),
            auc_or_nan,
            paired=True,
            vectorized=False,
            n_resamples=200,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )


def test_paired_bootstrap_interval_is_scipys_percentile_interval(rng: np.random.Generator) -> None:
    labels = (rng.random(300) < 0.4).astype(float)
    scores = labels * 0.5 + rng.normal(0, 0.5, 300)
    low, high = paired_bootstrap_interval(auc_or_nan, (scores, labels), resamples=200, confidence=0.9, seed=3)
    reference = scipy_auc_bootstrap(scores, labels, seed=3, confidence=0.9).confidence_interval
    assert np.isfinite([reference.low, reference.high]).all()
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-12)


def test_resamples_without_a_defined_statistic_are_left_out_of_the_interval_and_error() -> None:
    """Few positives: some resamples draw none and have no AUC; scipy's interval is NaN then, ours is not."""
    rng = np.random.default_rng(9)
    labels = np.zeros(200)
    labels[rng.choice(200, 4, replace=False)] = 1.0
    scores = labels * 0.8 + rng.normal(0, 0.5, 200)
    distribution = np.asarray(scipy_auc_bootstrap(scores, labels, seed=5).bootstrap_distribution)
    defined = distribution[np.isfinite(distribution)]
    # (1 - 4/200)^200 ~ 1.7 %: a few resamples lack a positive, and the rest are over 90 %.
    assert 0 < len(defined) < len(distribution) and len(defined) >= 0.9 * len(distribution)
    low, high = paired_bootstrap_interval(
        auc_or_nan, (scores, labels), resamples=200, confidence=0.95, seed=5
    )
    assert (low, high) == pytest.approx(tuple(np.percentile(defined, [2.5, 97.5])), rel=1e-12)
    error = paired_bootstrap_standard_error(auc_or_nan, (scores, labels), resamples=200, seed=5)
    assert error == pytest.approx(np.std(defined, ddof=1), rel=1e-12)
    # One positive: most resamples lack it, and neither figure is given.
    single = np.zeros(200)
    single[17] = 1.0
    assert np.isfinite(scipy_auc_bootstrap(scores, single, seed=5).bootstrap_distribution).mean() < 0.9
    interval = paired_bootstrap_interval(auc_or_nan, (scores, single), resamples=200, confidence=0.95, seed=5)
    assert all(math.isnan(bound) for bound in interval)
    assert math.isnan(paired_bootstrap_standard_error(auc_or_nan, (scores, single), resamples=200, seed=5))


@pytest.mark.parametrize(
    "call",
    [
        lambda: ks_binned([1, 2], [1, 2, 3]),
        lambda: ks_binned([0, 0], [1, 2]),
        lambda: chi_square([-1, 2], [1, 2]),
        lambda: js_distance([], []),
        lambda: psi([1, 2], [1, 2], epsilon=0.0),
        lambda: ks_exact([np.nan], [1.0]),
        lambda: null_rate_change(5, 4, 0, 10),
        lambda: wasserstein_binned([1, 1], [1.0], [1, 1], [1.0, 2.0], scale=1.0),
    ],
)
def test_bad_inputs_raise_statistics_error(call: object) -> None:
    with pytest.raises(StatisticsError):
        call()  # type: ignore[operator]
