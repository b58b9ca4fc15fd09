"""Generate a Great Expectations 1.x suite from feature declarations.

The declarations in ``features/`` already say each column's kind, domain and nullability; writing the
same facts again as hand-made expectations would be a second definition that can drift from the first.
So the suite is derived: raw-input suites for training/serving input files, feature suites for computed
feature tables (with the fitted category vocabularies when a FeatureState is given).
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from typing import Any

# Telemetry off before GX is imported: skewguard never phones home on its users' behalf.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from features import FeatureKind, FeatureSet, FeatureState, InputType
from skewguard.errors import DataError

# GX checks the dtype's scalar type name for typed columns and each value's Python type for object
# columns; these lists accept every spelling pandas produces for the declared kind, and nothing else.
_NUMERIC_TYPES = ["int64", "int32", "int16", "int8", "float64", "float32", "int", "float", "Int64", "Float64"]
_STRING_TYPES = ["str", "str_", "StringDtype"]
_BOOL_TYPES = ["bool", "bool_", "BooleanDtype"]

_INPUT_TYPES = {
    InputType.FLOAT: _NUMERIC_TYPES,
    InputType.INT: _NUMERIC_TYPES,
    InputType.STRING: _STRING_TYPES,
    InputType.TIMEZONE: _STRING_TYPES,
    InputType.BOOL: _BOOL_TYPES,
    # No GX type check for timestamps: GX 1.x rejects a tz-aware datetime64 column whatever type name
    # is listed. ``validate_frame`` runs the feature library's own coercion on raw inputs instead, which
    # checks timestamps exactly (and rejects naive ones, which no GX type list can tell apart).
}
_FEATURE_TYPES = {
    FeatureKind.NUMERIC: _NUMERIC_TYPES,
    FeatureKind.CATEGORICAL: [*_STRING_TYPES, "CategoricalDtypeType"],
    FeatureKind.BOOLEAN: _BOOL_TYPES,
}


def gx_context() -> Any:
    """A quiet in-memory GX context (no files, no progress bars): suites here are derived, not stored.

    GX needs an active context even to build a suite; ``get_context`` returns the current one when one
    exists, so calling this repeatedly is cheap.
    """
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


class SuiteTarget(StrEnum):
    """Which table a suite describes."""

    RAW = "raw"
    """Raw inputs, as training files and serving requests carry them."""
    FEATURES = "features"
    """Computed features, as ``transform_frame`` produces them."""


def detect_target(frame: pd.DataFrame, feature_set: FeatureSet) -> SuiteTarget:
    """Tell raw-input data from computed-feature data by its columns, naming what is missing if neither."""
    columns = set(map(str, frame.columns))
    if set(feature_set.features) <= columns:
        return SuiteTarget.FEATURES
    if set(feature_set.inputs) <= columns:
        return SuiteTarget.RAW
    missing_features = sorted(set(feature_set.features) - columns)
    missing_inputs = sorted(set(feature_set.inputs) - columns)
    msg = (
        f"the data matches neither the raw inputs of feature set {feature_set.name!r} "
        f"(missing {missing_inputs}) nor its computed features (missing {missing_features})"
    )
    raise DataError(msg)


def _between(column: str, low: float | None, high: float | None) -> list[Any]:
    if low is None and high is None:
        return []
    return [gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)]


def _in_set(column: str, values: list[Any]) -> Any:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values)


def build_suite(
    feature_set: FeatureSet, target: SuiteTarget, state: FeatureState | None = None
) -> gx.ExpectationSuite:
    """The expectation suite for ``feature_set``'s raw inputs or computed features.

    With ``state``, categorical features with a fitted vocabulary also get an in-set expectation
    (without it, only declared category sets are checked, since the vocabulary is not known yet).
    """
    gx_context()
    suite = gx.ExpectationSuite(name=f"{feature_set.name}.{target.value}")
    expectations: list[Any] = []
    if target is SuiteTarget.RAW:
        for spec in feature_set.inputs.values():
            expectations.append(gxe.ExpectColumnToExist(column=spec.name))
            if spec.type in _INPUT_TYPES:
                expectations.append(
                    gxe.ExpectColumnValuesToBeInTypeList(column=spec.name, type_list=_INPUT_TYPES[spec.type])
                )
            if not spec.nullable:
                expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=spec.name))
            expectations += _between(spec.name, spec.low, spec.high)
            if spec.allowed is not None:
                expectations.append(
                    gxe.ExpectColumnValuesToBeInSet(column=spec.name, value_set=list(spec.allowed))
                )
    else:
        for feature in feature_set.features.values():
            expectations.append(gxe.ExpectColumnToExist(column=feature.name))
            expectations.append(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=feature.name, type_list=_FEATURE_TYPES[feature.kind]
                )
            )
            if not feature.nullable:
                expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=feature.name))
            if feature.kind is FeatureKind.NUMERIC:
                expectations += _between(feature.name, feature.low, feature.high)
            categories: Any = feature.categories
            if state is not None and "vocabulary" in state.params.get(feature.name, {}):
                categories = state.params[feature.name]["vocabulary"]
            if feature.kind is FeatureKind.CATEGORICAL and categories is not None:
                expectations.append(
                    gxe.ExpectColumnValuesToBeInSet(column=feature.name, value_set=list(categories))
                )
            if feature.kind is FeatureKind.BOOLEAN:
                expectations.append(
                    gxe.ExpectColumnValuesToBeInSet(column=feature.name, value_set=[True, False])
                )
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite
