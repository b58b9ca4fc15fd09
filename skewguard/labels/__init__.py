"""Delayed labels: the symmetric prediction/label join, and per-window performance with a bootstrap CI."""

from __future__ import annotations

from skewguard.labels.join import (
    EarlyLabel,
    LabelTally,
    Outcome,
    WaitingPrediction,
    label_outcome,
    label_to_float,
    outcome_from_json,
)
from skewguard.labels.performance import PerformanceOptions, evaluate_window, outcome_arrays

__all__ = [
    "EarlyLabel",
    "LabelTally",
    "Outcome",
    "PerformanceOptions",
    "WaitingPrediction",
    "evaluate_window",
    "label_outcome",
    "label_to_float",
    "outcome_arrays",
    "outcome_from_json",
]
