"""Validate a frame against a generated suite and report violations by column, in words.

GX's result objects are deep and generic; callers (the CLI, the retraining pipeline) need a short list
of "column X: what was expected, how many rows broke it, a few examples". This module is that boundary.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.exceptions import GreatExpectationsError

from features import FeatureError, FeatureSet
from features.inputs import coerce_inputs
from skewguard.errors import DataError
from skewguard.validation.suite import SuiteTarget, gx_context

_EXPECTATION_WORDS = {
    "expect_column_to_exist": "column must exist",
    "expect_column_values_to_be_in_type_list": "values must have the declared type",
    "expect_column_values_to_not_be_null": "values must not be null",
    "expect_column_values_to_be_between": "values must lie in the declared range",
    "expect_column_values_to_be_in_set": "values must be in the declared set",
}


@dataclass(frozen=True)
class Violation:
    """One broken expectation: which column, what was expected, how many rows, a few example values."""

    column: str
    expectation: str
    detail: str
    unexpected_count: int | None = None
    examples: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ValidationReport:
    """All violations of one frame against one suite; ``ok`` when there are none."""

    suite: str
    rows: int
    checked: int
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every expectation held."""
        return not self.violations


def _detail(kind: str, kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    words = _EXPECTATION_WORDS.get(kind, kind)
    if kind == "expect_column_values_to_be_between":
        words += f" [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    elif kind == "expect_column_values_to_be_in_type_list":
        observed = result.get("observed_value")
        words += f" (got {observed})" if observed else ""
    elif kind == "expect_column_values_to_be_in_set":
        values = list(kwargs.get("value_set") or [])
        words += f" {values[:8]}{' …' if len(values) > 8 else ''}"
    return words


def validate_frame(
    frame: pd.DataFrame,
    suite: gx.ExpectationSuite,
    *,
    feature_set: FeatureSet | None = None,
    target: SuiteTarget | None = None,
) -> ValidationReport:
    """Run ``suite`` on ``frame``; for raw inputs also run the feature library's own type coercion.

    GX cannot tell a naive timestamp string from an aware one, and a raw frame that GX accepts must also
    be one ``transform_frame`` accepts, so for ``target=RAW`` the coercion's first error per input is
    reported as a violation too.
    """
    if frame.empty:
        msg = "cannot validate an empty frame"
        raise DataError(msg)
    try:
        batch_definition = (
            gx_context()
            .data_sources.add_pandas(f"src-{uuid.uuid4().hex[:8]}")
            .add_dataframe_asset("frame")
            .add_batch_definition_whole_dataframe("all")
        )
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format="SUMMARY"
        )
    except GreatExpectationsError as exc:
        msg = f"Great Expectations could not run suite {suite.name!r}: {exc}"
        raise DataError(msg) from exc
    violations: list[Violation] = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = dict(config.kwargs)
        outcome = dict(item.result or {})
        violations.append(
            Violation(
                column=str(kwargs.get("column")),
                expectation=config.type,
                detail=_detail(config.type, kwargs, outcome),
                unexpected_count=outcome.get("unexpected_count"),
                examples=tuple(outcome.get("partial_unexpected_list") or ())[:5],
            )
        )
    checked = len(result.results)
    if target is SuiteTarget.RAW and feature_set is not None:
        for spec in feature_set.inputs.values():
            if spec.name not in frame.columns:
                continue
            checked += 1
            try:
                coerce_inputs(frame[[spec.name]], [spec])
            except FeatureError as exc:
                already = any(v.column == spec.name for v in violations)
                if not already or "naive" in str(exc):
                    violations.append(
                        Violation(spec.name, "skewguard_coercion", str(exc), examples=(exc.value,))
                    )
    return ValidationReport(suite=suite.name, rows=len(frame), checked=checked, violations=violations)
