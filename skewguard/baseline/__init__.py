"""The training side's baseline: FeatureState, Profile, calibration and GX suites in one directory."""

from __future__ import annotations

from skewguard.baseline.bundle import Baseline, BaselineOptions, build_baseline
from skewguard.baseline.specs import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    PredictionKind,
    feature_specs,
    label_spec,
    prediction_spec,
)

__all__ = [
    "LABEL_COLUMN",
    "PREDICTION_COLUMN",
    "Baseline",
    "BaselineOptions",
    "PredictionKind",
    "build_baseline",
    "feature_specs",
    "label_spec",
    "prediction_spec",
]
