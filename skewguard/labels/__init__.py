"""Delayed labels: the symmetric prediction/label join, and per-window performance with a bootstrap CI."""

from __future__ import annotations

from skewguard.labels.join import (
    LABEL_WORDS_TEXT,
    ClassProbabilities,
    EarlyLabel,
    LabelTally,
    Outcome,
    WaitingPrediction,
    candidates_from_json,
    joined_predictions,
    label_outcome,
    label_to_float,
    outcome_from_json,
)
from skewguard.labels.performance import (
    METRICS,
    MetricSpec,
    Outcomes,
    PerformanceOptions,
    evaluate_window,
    holdout_metrics,
    outcome_arrays,
)

__all__ = [
    "LABEL_WORDS_TEXT",
    "METRICS",
    "ClassProbabilities",
    "EarlyLabel",
    "LabelTally",
    "MetricSpec",
    "Outcome",
    "Outcomes",
    "PerformanceOptions",
    "WaitingPrediction",
    "candidates_from_json",
    "evaluate_window",
    "holdout_metrics",
    "joined_predictions",
    "label_outcome",
    "label_to_float",
    "outcome_arrays",
    "outcome_from_json",
]
