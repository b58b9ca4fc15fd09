"""The one door to Evidently: imported lazily, with its import-time deprecation noise filtered.

Evidently 0.7 pulls in its UI stack on import, which warns about numpy.core and about Litestar
deprecations; those warnings are Evidently's to fix, so exactly those are silenced, only around the
import. Telemetry is opted out (``DO_NOT_TRACK``) unless the caller already decided.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from skewguard.errors import DataError

_MODULES: SimpleNamespace | None = None


def evidently() -> SimpleNamespace:
    """``Report``, ``Dataset``, ``DataDefinition``, ``DataDriftPreset`` from Evidently 0.7."""
    global _MODULES
    if _MODULES is None:
        os.environ.setdefault("DO_NOT_TRACK", "1")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="numpy.core is deprecated", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*Deprecated in litestar", category=DeprecationWarning)
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset
        _MODULES = SimpleNamespace(
            Report=Report, Dataset=Dataset, DataDefinition=DataDefinition, DataDriftPreset=DataDriftPreset
        )
    return _MODULES


@dataclass(frozen=True)
class EvidentlyDrift:
    """Evidently's DataDriftPreset run: the snapshot (for HTML) and the columns it calls drifted."""

    snapshot: Any
    drifted: frozenset[str]


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numerical: Sequence[str],
    categorical: Sequence[str],
) -> EvidentlyDrift:
    """Run ``Report([DataDriftPreset()])`` with Evidently's default per-column methods and thresholds."""
    ev = evidently()
    definition = ev.DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))
    # Evidently correlates the numeric columns with np.corrcoef, which divides by zero for a column that
    # is constant in a sample (day of week inside one short window); its result is NaN, which Evidently
    # handles, so numpy's floating-point warning is silenced for this call only.
    with np.errstate(divide="ignore", invalid="ignore"):
        try:
            snapshot = ev.Report([ev.DataDriftPreset()], include_tests=True).run(
                ev.Dataset.from_pandas(current, data_definition=definition),
                ev.Dataset.from_pandas(reference, data_definition=definition),
            )
        except (ValueError, TypeError, KeyError) as exc:  # Evidently's refusals of the data it was given
            msg = f"Evidently could not compare the samples: {type(exc).__name__}: {exc}"
            raise DataError(msg) from exc
    drifted = set()
    for test in snapshot.dict().get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift" and test.get("status") == "FAIL":
            drifted.add(str(params["column"]))
    return EvidentlyDrift(snapshot=snapshot, drifted=frozenset(drifted))
