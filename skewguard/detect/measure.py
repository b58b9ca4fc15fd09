"""Everything measured when one column's window sketch is compared with its reference sketch.

The effect sizes and p-values feed the verdict; the remaining numbers are kept on the verdict anyway
(every statistic is stored whether or not it flags), so a reviewer can see *how* a column moved.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from skewguard.detect.policy import Method
from skewguard.errors import StatisticsError
from skewguard.stats import (
    CategoricalColumnLayout,
    CategoricalSketch,
    NumericSketch,
    Sketch,
    chi_square,
    js_distance,
    ks_binned,
    linf_distance,
    null_rate_change,
    psi,
    wasserstein_binned,
)


@dataclass(frozen=True, slots=True)
class CheckMeasurement:
    """One check's raw outcome, before thresholds and multiple-testing correction.

    ``count`` is how many values the check saw in the window (non-null values for a distribution
    check, all values for the null-rate check); ``n_eff = n·m / (n + m)`` of the two sides is what the
    calibrated threshold is scaled by (0 when a side is empty).
    """

    method: Method
    effect: float
    p_value: float
    count: int
    n_eff: float


@dataclass(frozen=True, slots=True)
class ColumnStatistics:
    """Descriptive and comparative statistics of one column, reference vs window.

    Fields that do not apply to the column's kind are None; so are those that need data a side
    lacks (the window's mean when every value was null).
    """

    reference_count: int
    window_count: int
    reference_null_rate: float | None
    window_null_rate: float | None
    null_rate_p_value: float
    psi: float | None
    out_of_domain_share: float | None
    # numeric
    reference_mean: float | None = None
    window_mean: float | None = None
    reference_std: float | None = None
    window_std: float | None = None
    window_min: float | None = None
    window_max: float | None = None
    wasserstein: float | None = None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    out_of_range_share: float | None = None
    # categorical
    jensen_shannon: float | None = None
    chi_square: float | None = None
    chi_square_p_value: float | None = None
    linf: float | None = None
    unseen_share: float | None = None
    largest_change: str | None = None
    largest_change_reference_share: float | None = None
    largest_change_window_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ColumnMeasurement:
    """The checks and statistics of one column."""

    checks: tuple[CheckMeasurement, ...]
    statistics: ColumnStatistics


def _n_eff(n: int, m: int) -> float:
    return n * m / (n + m) if n > 0 and m > 0 else 0.0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _scale(reference: NumericSketch) -> float:
    std = reference.std
    return std if math.isfinite(std) and std > 0 else 0.0


def null_rate_check(reference: Sketch, window: Sketch) -> tuple[CheckMeasurement, float]:
    """The null-rate check (and its p-value, also kept as a statistic)."""
    if reference.total == 0 or window.total == 0:
        return CheckMeasurement(Method.NULL_RATE, 0.0, 1.0, window.total, 0.0), 1.0
    test = null_rate_change(reference.nulls, reference.total, window.nulls, window.total)
    check = CheckMeasurement(
        Method.NULL_RATE,
        abs(test.difference),
        test.p_value,
        window.total,
        _n_eff(reference.total, window.total),
    )
    return check, test.p_value


def tail_counts(sketch: CategoricalSketch) -> npt.NDArray[np.int64]:
    """A categorical sketch's counts as compared: the vocabulary, then one tail bin (OTHER + UNSEEN).

    The reference never holds an unseen value (its own categories define "seen"), while a window of
    the same distribution meets new values at the reference's missing mass (Good–Turing: about the
    share of its singletons). Compared bin by bin that reads as 0 % -> k %, which chi-square calls
    certain and Jensen-Shannon large: a long-tailed column (a Zipf over thousands of cities) flagged
    every window, severely. In the tail, a new value counts as what it is, a rare one; a shift to new
    values still raises the tail's share (and a column whose reference has no tail flags any new
    value). The unseen share is reported on its own (``unseen_share``).
    """
    counts = np.asarray(sketch.counts, dtype=np.int64)
    other, unseen = sketch.layout.other_bin, sketch.layout.unseen_bin
    merged = counts[:unseen].copy()
    merged[other] += counts[unseen]
    return merged


def _change_label(layout: CategoricalColumnLayout, position: int, reference: CategoricalSketch) -> str:
    """The label of a compared bin; the tail's says whether the reference had values there at all."""
    if position != layout.other_bin:
        return layout.bin_labels()[position]
    return "<other or unseen>" if reference.counts[layout.other_bin] else "<unseen>"


def null_effects(reference: Sketch, window: Sketch) -> list[tuple[Method, float, float]]:
    """Effects only — ``(method, effect, n_eff)`` per check — for calibration, where p-values are unused."""
    out: list[tuple[Method, float, float]] = []
    if isinstance(reference, NumericSketch) and isinstance(window, NumericSketch):
        if reference.count and window.count:
            effect = wasserstein_binned(
                reference.counts, reference.sums, window.counts, window.sums, scale=_scale(reference)
            )
            out.append((Method.WASSERSTEIN, effect, _n_eff(reference.count, window.count)))
    elif (
        isinstance(reference, CategoricalSketch)
        and isinstance(window, CategoricalSketch)
        and reference.count
        and window.count
    ):
        effect = js_distance(tail_counts(reference), tail_counts(window))
        out.append((Method.JENSEN_SHANNON, effect, _n_eff(reference.count, window.count)))
    if reference.total and window.total:
        difference = abs(window.nulls / window.total - reference.nulls / reference.total)
        out.append((Method.NULL_RATE, difference, _n_eff(reference.total, window.total)))
    return out


def measure(reference: Sketch, window: Sketch) -> ColumnMeasurement:
    """Compare one column's window sketch with its reference sketch (same layout)."""
    null_check, null_p = null_rate_check(reference, window)
    if isinstance(reference, NumericSketch) and isinstance(window, NumericSketch):
        return _measure_numeric(reference, window, null_check, null_p)
    if isinstance(reference, CategoricalSketch) and isinstance(window, CategoricalSketch):
        return _measure_categorical(reference, window, null_check, null_p)
    msg = f"column {reference.name!r} is sketched differently on the two sides"
    raise StatisticsError(msg)


def _base_statistics(
    reference: Sketch, window: Sketch, null_p: float, *, has_domain: bool, **specific: Any
) -> ColumnStatistics:
    """The statistics every column kind reports (counts, null rates, domain share), plus ``specific``."""
    m = window.count
    return ColumnStatistics(
        reference_count=reference.count,
        window_count=m,
        reference_null_rate=_finite(reference.null_rate),
        window_null_rate=_finite(window.null_rate),
        null_rate_p_value=null_p,
        psi=None,
        out_of_domain_share=window.out_of_domain / m if m and has_domain else None,
        **specific,
    )


def _measure_numeric(
    reference: NumericSketch, window: NumericSketch, null_check: CheckMeasurement, null_p: float
) -> ColumnMeasurement:
    n, m = reference.count, window.count
    base = _base_statistics(
        reference,
        window,
        null_p,
        has_domain=reference.layout.spec.numeric_domain is not None,
        reference_mean=reference.mean if n else None,
        window_mean=window.mean if m else None,
        reference_std=_finite(reference.std),
        window_std=_finite(window.std),
        window_min=window.min if m else None,
        window_max=window.max if m else None,
    )
    if n == 0 or m == 0:
        check = CheckMeasurement(Method.WASSERSTEIN, 0.0, 1.0, m, 0.0)
        return ColumnMeasurement((check, null_check), base)
    effect = wasserstein_binned(
        reference.counts, reference.sums, window.counts, window.sums, scale=_scale(reference)
    )
    ks = ks_binned(reference.counts, window.counts)
    check = CheckMeasurement(Method.WASSERSTEIN, effect, ks.p_value, m, _n_eff(n, m))
    statistics = replace(
        base,
        psi=psi(reference.counts, window.counts),
        wasserstein=effect,
        ks_statistic=ks.statistic,
        ks_p_value=ks.p_value,
        out_of_range_share=float(window.counts[0] + window.counts[-1]) / m,
    )
    return ColumnMeasurement((check, null_check), statistics)


def _measure_categorical(
    reference: CategoricalSketch, window: CategoricalSketch, null_check: CheckMeasurement, null_p: float
) -> ColumnMeasurement:
    n, m = reference.count, window.count
    layout = reference.layout
    base = _base_statistics(
        reference,
        window,
        null_p,
        has_domain=layout.spec.categorical_domain is not None,
        unseen_share=window.unseen / m if m else None,
    )
    if n == 0 or m == 0:
        check = CheckMeasurement(Method.JENSEN_SHANNON, 0.0, 1.0, m, 0.0)
        return ColumnMeasurement((check, null_check), base)
    ref_counts, win_counts = tail_counts(reference), tail_counts(window)
    effect = js_distance(ref_counts, win_counts)
    chi = chi_square(ref_counts, win_counts)
    p_ref = ref_counts / n
    p_win = win_counts / m
    largest = int(np.argmax(np.abs(p_win - p_ref)))
    check = CheckMeasurement(Method.JENSEN_SHANNON, effect, chi.p_value, m, _n_eff(n, m))
    statistics = replace(
        base,
        psi=psi(ref_counts, win_counts),
        jensen_shannon=effect,
        chi_square=chi.statistic,
        chi_square_p_value=chi.p_value,
        linf=linf_distance(ref_counts, win_counts),
        largest_change=_change_label(layout, largest, reference),
        largest_change_reference_share=float(p_ref[largest]),
        largest_change_window_share=float(p_win[largest]),
    )
    return ColumnMeasurement((check, null_check), statistics)
