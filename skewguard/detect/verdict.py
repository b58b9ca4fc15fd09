"""The verdict on one window: effect size AND evidence AND enough data, per feature.

At large n every p-value is tiny and at small n every distance is noisy, so neither alone decides: a
check flags only when its effect exceeds the calibrated threshold, its test survives
Benjamini–Hochberg across all of the window's checks, and it saw at least ``min_count`` values.
Every number is kept on the verdict whether or not it flags, with a sentence saying why.

``judge`` is symmetric in what it compares: the training baseline against a window (drift and
distribution skew), or the previous window against the current one (span drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from skewguard.detect.calibration import Calibration
from skewguard.detect.measure import CheckMeasurement, ColumnStatistics, measure
from skewguard.detect.policy import DriftPolicy, Method
from skewguard.errors import ConfigError, StatisticsError
from skewguard.stats import ColumnKind, ColumnRole, Profile

_EFFECT_NAMES = {
    Method.WASSERSTEIN: "normalised Wasserstein distance",
    Method.JENSEN_SHANNON: "Jensen–Shannon distance",
    Method.NULL_RATE: "null-rate change",
}
_TEST_NAMES = {
    Method.WASSERSTEIN: "binned Kolmogorov–Smirnov test",
    Method.JENSEN_SHANNON: "chi-square test",
    Method.NULL_RATE: "two-proportion test",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check of one feature, judged: its effect against its threshold and its adjusted p-value."""

    method: Method
    effect: float
    threshold: float
    p_value: float
    p_adjusted: float
    count: int
    flagged: bool
    severe: bool

    @property
    def ratio(self) -> float:
        """Effect over threshold (how far past the line; inf for a zero threshold with an effect)."""
        if self.threshold > 0:
            return self.effect / self.threshold
        return math.inf if self.effect > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "method": self.method.value,
            "effect": self.effect,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "count": self.count,
            "flagged": self.flagged,
            "severe": self.severe,
        }


@dataclass(frozen=True, slots=True)
class FeatureVerdict:
    """The verdict on one column. ``method``/``effect``/... are those of its deciding check.

    The deciding check is the flagged one furthest past its threshold, or — when none flags — the
    one closest to flagging. ``checks`` holds every check and ``statistics`` every measured number.
    """

    name: str
    role: ColumnRole
    kind: ColumnKind
    drifted: bool
    severe: bool
    method: Method
    effect: float
    threshold: float
    p_value: float
    p_adjusted: float
    count: int
    reason: str
    checks: tuple[CheckResult, ...]
    statistics: ColumnStatistics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (every statistic included)."""
        return {
            "name": self.name,
            "role": self.role.value,
            "kind": self.kind.value,
            "drifted": self.drifted,
            "severe": self.severe,
            "method": self.method.value,
            "effect": self.effect,
            "threshold": _json_float(self.threshold),
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "count": self.count,
            "reason": self.reason,
            "checks": [{**c.to_dict(), "threshold": _json_float(c.threshold)} for c in self.checks],
            "statistics": self.statistics.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """The verdicts of every column of one window, against one reference."""

    features: tuple[FeatureVerdict, ...]
    rows: int
    reference_rows: int
    alpha: float

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the drifted columns, in layout order."""
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def any_drift(self) -> bool:
        """True when at least one column drifted."""
        return any(f.drifted for f in self.features)

    def feature(self, name: str) -> FeatureVerdict:
        """The verdict of one column."""
        for verdict in self.features:
            if verdict.name == name:
                return verdict
        msg = f"no column {name!r} in this verdict; it has {[f.name for f in self.features]}"
        raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "alpha": self.alpha,
            "drifted": list(self.drifted),
            "features": [f.to_dict() for f in self.features],
        }


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def judge(
    reference: Profile,
    window: Profile,
    calibration: Calibration,
    policy: DriftPolicy | None = None,
) -> WindowVerdict:
    """Judge ``window`` against ``reference`` (the baseline, or the previous window for span drift)."""
    policy = policy or DriftPolicy()
    if not reference.layout.same_columns(window.layout):
        msg = "reference and window profiles were built on different layouts (bins or vocabularies differ)"
        raise StatisticsError(msg)
    measured = [
        (layout, measure(reference.sketches[layout.name], window.sketches[layout.name]))
        for layout in reference.layout.columns
    ]
    flat: list[CheckMeasurement] = [check for _, m in measured for check in m.checks]
    p_values = np.array([c.p_value for c in flat], dtype=np.float64)
    adjusted = stats.false_discovery_control(p_values, method="bh") if len(p_values) else p_values
    position = 0
    features = []
    for layout, measurement in measured:
        results = []
        for check in measurement.checks:
            p_adj = float(min(1.0, adjusted[position]))
            position += 1
            threshold = max(
                calibration.threshold(layout.name, check.method, check.n_eff), policy.floor(check.method)
            )
            flagged = (
                check.count >= policy.min_count
                and check.n_eff > 0
                and check.effect > threshold
                and p_adj < policy.alpha
            )
            severe = flagged and check.effect >= policy.severe_multiplier * threshold
            results.append(
                CheckResult(
                    check.method, check.effect, threshold, check.p_value, p_adj, check.count, flagged, severe
                )
            )
        features.append(
            _feature_verdict(
                layout.spec.name, layout.spec.role, layout.kind, results, measurement.statistics, policy
            )
        )
    return WindowVerdict(
        features=tuple(features), rows=window.rows, reference_rows=reference.rows, alpha=policy.alpha
    )


def _feature_verdict(
    name: str,
    role: ColumnRole,
    kind: ColumnKind,
    checks: Sequence[CheckResult],
    statistics: ColumnStatistics,
    policy: DriftPolicy,
) -> FeatureVerdict:
    flagged = [c for c in checks if c.flagged]
    if flagged:
        decisive = max(flagged, key=lambda c: c.ratio)
    else:
        judged = [c for c in checks if c.count >= policy.min_count] or list(checks)
        decisive = max(judged, key=lambda c: c.ratio)
    return FeatureVerdict(
        name=name,
        role=role,
        kind=kind,
        drifted=bool(flagged),
        severe=any(c.severe for c in checks),
        method=decisive.method,
        effect=decisive.effect,
        threshold=decisive.threshold,
        p_value=decisive.p_value,
        p_adjusted=decisive.p_adjusted,
        count=decisive.count,
        reason=_reason(name, decisive, statistics, policy),
        checks=tuple(checks),
        statistics=statistics,
    )


def _describe(check: CheckResult, statistics: ColumnStatistics) -> str:
    effect = f"{_EFFECT_NAMES[check.method]} {check.effect:.3g}"
    s = statistics
    if (
        check.method is Method.NULL_RATE
        and s.reference_null_rate is not None
        and s.window_null_rate is not None
    ):
        return f"null rate {s.reference_null_rate:.1%} → {s.window_null_rate:.1%} ({effect})"
    if check.method is Method.WASSERSTEIN and s.reference_mean is not None and s.window_mean is not None:
        spread = ""
        if s.reference_std is not None and s.window_std is not None:
            spread = f", std {s.reference_std:.4g} → {s.window_std:.4g}"
        return f"{effect} (mean {s.reference_mean:.4g} → {s.window_mean:.4g}{spread})"
    if (
        check.method is Method.JENSEN_SHANNON
        and s.largest_change is not None
        and s.largest_change_reference_share is not None
        and s.largest_change_window_share is not None
    ):
        return (
            f"{effect} (largest change: {s.largest_change!r} {s.largest_change_reference_share:.1%} → "
            f"{s.largest_change_window_share:.1%})"
        )
    return effect


def _reason(name: str, check: CheckResult, statistics: ColumnStatistics, policy: DriftPolicy) -> str:
    if check.count < policy.min_count:
        return (
            f"{name}: only {check.count:,} values in the window, fewer than min_count {policy.min_count:,}; "
            "not judged."
        )
    what = _describe(check, statistics)
    test = _TEST_NAMES[check.method]
    evidence = f"p={check.p_value:.2g}, BH-adjusted {check.p_adjusted:.2g}"
    if check.flagged:
        severity = f"; severe (≥ {policy.severe_multiplier:g}× the threshold)" if check.severe else ""
        return (
            f"{name} drifted: {what} exceeds its threshold {check.threshold:.3g} and the {test} is "
            f"significant ({evidence} < {policy.alpha:g}) over {check.count:,} values{severity}."
        )
    if check.effect > check.threshold:
        return (
            f"{name}: {what} exceeds its threshold {check.threshold:.3g}, but the {test} is not significant "
            f"({evidence} ≥ {policy.alpha:g}); not flagged."
        )
    if check.p_adjusted < policy.alpha:
        return (
            f"{name}: the {test} is significant ({evidence}), but {what} is within its threshold "
            f"{check.threshold:.3g}: a real but negligible change; not flagged."
        )
    return f"{name}: {what} is within its threshold {check.threshold:.3g} ({evidence}); no drift."
