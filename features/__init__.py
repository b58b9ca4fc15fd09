"""The shared feature library: every feature defined once, imported by training and serving code alike.

Pure pandas/numpy; never imports ``skewguard``, so a serving image can depend on it alone.
"""

from __future__ import annotations

from features.core import (
    OTHER_CATEGORY,
    Feature,
    FeatureKind,
    FeatureSet,
    FeatureState,
    UnknownCategory,
)
from features.errors import FeatureError
from features.inputs import InputColumns, InputType, RawInput, coerce_columns, coerce_inputs
from features.ops import TimePart, count_in_window, local_time_part

__all__ = [
    "OTHER_CATEGORY",
    "Feature",
    "FeatureError",
    "FeatureKind",
    "FeatureSet",
    "FeatureState",
    "InputColumns",
    "InputType",
    "RawInput",
    "TimePart",
    "UnknownCategory",
    "coerce_columns",
    "coerce_inputs",
    "count_in_window",
    "local_time_part",
]
