"""Profile column specs derived from feature declarations (never written twice)."""

from __future__ import annotations

import sys
from enum import StrEnum

from features import FeatureKind, FeatureSet, FeatureState
from skewguard.stats import ColumnKind, ColumnRole, ColumnSpec

#: Column names the serving log's prediction and label are profiled under.
PREDICTION_COLUMN = "prediction"
LABEL_COLUMN = "label"
_OPEN = sys.float_info.max


class PredictionKind(StrEnum):
    """How a model's prediction is profiled."""

    SCORE = "score"
    """A probability of the positive class (binary classification): numeric in [0, 1]."""
    VALUE = "value"
    """A regression output: numeric."""
    CLASS = "class"
    """A predicted class label (multi-class: the argmax of the probabilities): categorical."""


def feature_specs(feature_set: FeatureSet, state: FeatureState | None = None) -> list[ColumnSpec]:
    """One spec per feature, with the declared range or category set as its domain.

    Numeric features stay numeric; categorical and boolean ones are profiled as categorical, their
    domain being the fitted vocabulary when a state is given, else the declared categories.
    """
    specs: list[ColumnSpec] = []
    for name, feature in feature_set.features.items():
        if feature.kind is FeatureKind.NUMERIC:
            domain = None
            if feature.low is not None or feature.high is not None:
                # An open side is the largest finite float: profiles are strict JSON (no Infinity).
                low = -_OPEN if feature.low is None else float(feature.low)
                high = _OPEN if feature.high is None else float(feature.high)
                domain = (low, high)
            specs.append(ColumnSpec(name, ColumnKind.NUMERIC, ColumnRole.FEATURE, domain))
            continue
        categories: frozenset[str] | None = None
        if feature.kind is FeatureKind.BOOLEAN:
            categories = frozenset({"true", "false"})
        elif state is not None and "vocabulary" in state.params.get(name, {}):
            categories = frozenset(str(v) for v in state.params[name]["vocabulary"])
        elif feature.categories is not None:
            categories = frozenset(feature.categories)
        specs.append(ColumnSpec(name, ColumnKind.CATEGORICAL, ColumnRole.FEATURE, categories))
    return specs


def prediction_spec(kind: PredictionKind) -> ColumnSpec:
    """The profile column of the model's prediction."""
    if kind is PredictionKind.CLASS:
        return ColumnSpec(PREDICTION_COLUMN, ColumnKind.CATEGORICAL, ColumnRole.PREDICTION)
    domain = (0.0, 1.0) if kind is PredictionKind.SCORE else None
    return ColumnSpec(PREDICTION_COLUMN, ColumnKind.NUMERIC, ColumnRole.PREDICTION, domain)


def label_spec(kind: PredictionKind) -> ColumnSpec:
    """The profile column of the label: categorical for classification, numeric for regression."""
    if kind is PredictionKind.VALUE:
        return ColumnSpec(LABEL_COLUMN, ColumnKind.NUMERIC, ColumnRole.LABEL)
    return ColumnSpec(LABEL_COLUMN, ColumnKind.CATEGORICAL, ColumnRole.LABEL)
