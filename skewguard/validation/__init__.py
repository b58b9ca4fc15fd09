"""Great Expectations suites generated from feature declarations, and validation against them."""

from __future__ import annotations

from skewguard.validation.suite import SuiteTarget, build_suite, detect_target
from skewguard.validation.validate import ValidationReport, Violation, validate_frame

__all__ = [
    "SuiteTarget",
    "ValidationReport",
    "Violation",
    "build_suite",
    "detect_target",
    "validate_frame",
]
