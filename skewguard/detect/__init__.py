"""Detection: calibrated thresholds, the verdict policy, persistence, and ad-hoc frame comparison.

``judge(reference, window, calibration, policy)`` compares two profiles (baseline vs window, or the
previous window vs the current one for span drift) and returns a :class:`WindowVerdict`;
:class:`AlertTracker` turns a sequence of verdicts into alerts; :func:`compare.compare_frames` does
all of it for two data frames.
"""

from __future__ import annotations

from skewguard.detect.alerts import Alert, AlertTracker
from skewguard.detect.calibration import Calibration, ThresholdConstant
from skewguard.detect.measure import CheckMeasurement, ColumnStatistics
from skewguard.detect.policy import DriftPolicy, Method
from skewguard.detect.verdict import CheckResult, FeatureVerdict, WindowVerdict, judge

__all__ = [
    "Alert",
    "AlertTracker",
    "Calibration",
    "CheckMeasurement",
    "CheckResult",
    "ColumnStatistics",
    "DriftPolicy",
    "FeatureVerdict",
    "Method",
    "ThresholdConstant",
    "WindowVerdict",
    "judge",
]
