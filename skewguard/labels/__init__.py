"""Delayed labels: the symmetric prediction/label join, and per-window performance with a bootstrap CI."""

from __future__ import annotations

from skewguard.labels.join import LabelTally, label_to_float
from skewguard.labels.performance import PerformanceOptions, evaluate_window

__all__ = ["LabelTally", "PerformanceOptions", "evaluate_window", "label_to_float"]
