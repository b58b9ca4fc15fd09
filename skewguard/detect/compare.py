"""Ad-hoc comparison of two data frames, for batch users (``skewguard compare REF CUR``).

The reference frame plays every training-side role at once: its quantiles fix the bins, its profile is
the baseline, and it is split into folds to calibrate the thresholds on rows held out from the part
they are compared with (:meth:`Calibration.from_folds`). The current frame is judged as one window, or
as consecutive chunks of ``chunk_size`` rows (the last one may be shorter). No file is read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from skewguard.detect.calibration import Calibration
from skewguard.detect.policy import DriftPolicy
from skewguard.detect.verdict import WindowVerdict, judge
from skewguard.errors import ConfigError, DataError
from skewguard.stats import ColumnKind, ColumnSpec, ProfileLayout


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """The verdict on rows ``[start, start + rows)`` of the current frame."""

    index: int
    start: int
    rows: int
    verdict: WindowVerdict


@dataclass(frozen=True, slots=True)
class CompareResult:
    """Per-chunk verdicts, plus the layout and calibration they were judged with."""

    chunks: tuple[ChunkResult, ...]
    layout: ProfileLayout
    calibration: Calibration
    policy: DriftPolicy

    @property
    def any_drift(self) -> bool:
        """True when any chunk has a drifted column."""
        return any(chunk.verdict.any_drift for chunk in self.chunks)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented machine-readable form of ``skewguard compare --json``.

        Shape::

            {"chunks": [{"index": i, "rows": n, "features": {NAME: {"drifted": bool, "method": str,
                         "effect": float, "threshold": float, "p_value": float}}}]}

        ``method`` / ``effect`` / ``threshold`` / ``p_value`` are those of the deciding check; the
        p-value is the raw one (the verdict uses it Benjamini–Hochberg adjusted).
        """
        return {
            "chunks": [
                {
                    "index": chunk.index,
                    "rows": chunk.rows,
                    "features": {
                        f.name: {
                            "drifted": f.drifted,
                            "method": f.method.value,
                            "effect": float(f.effect),
                            "threshold": float(f.threshold),
                            "p_value": float(f.p_value),
                        }
                        for f in chunk.verdict.features
                    },
                }
                for chunk in self.chunks
            ]
        }


def infer_specs(frame: pd.DataFrame, categorical: Sequence[str] | None = None) -> list[ColumnSpec]:
    """Column specs for a frame: numbers are NUMERIC; strings, booleans and categories CATEGORICAL.

    ``categorical`` forces the named columns to CATEGORICAL (integer codes, zip codes). Columns of
    any other type (datetimes, nested objects) are refused rather than silently skipped.
    """
    forced = set(categorical or ())
    unknown = sorted(forced - set(map(str, frame.columns)))
    if unknown:
        msg = f"--categorical names column(s) {unknown} that the reference does not have"
        raise ConfigError(msg)
    specs = []
    for name in frame.columns:
        column = str(name)
        dtype = frame[name].dtype
        if column in forced or pd.api.types.is_bool_dtype(dtype):
            kind = ColumnKind.CATEGORICAL
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = ColumnKind.NUMERIC
        elif (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(dtype)
            or pd.api.types.is_object_dtype(dtype)
        ):
            kind = ColumnKind.CATEGORICAL
        else:
            msg = (
                f"column {column!r} has type {dtype}, which is neither binned nor counted; drop or convert it"
            )
            raise DataError(msg)
        specs.append(ColumnSpec(column, kind))
    return specs


def compare_frames(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    *,
    categorical: Sequence[str] | None = None,
    chunk_size: int | None = None,
    policy: DriftPolicy | None = None,
    seed: int = 0,
) -> CompareResult:
    """Judge ``current_df`` (whole, or in chunks of ``chunk_size`` rows) against ``reference_df``.

    Every reference column is compared and must exist in the current frame; extra current columns
    are ignored. ``seed`` fixes the fold split and the calibration draws.
    """
    policy = policy or DriftPolicy()
    if chunk_size is not None and chunk_size < 1:
        msg = f"chunk_size must be a positive number of rows, got {chunk_size}"
        raise ConfigError(msg)
    if len(reference_df) == 0 or len(current_df) == 0:
        msg = f"both frames need rows: reference has {len(reference_df)}, current has {len(current_df)}"
        raise DataError(msg)
    missing = [str(c) for c in reference_df.columns if c not in current_df.columns]
    if missing:
        msg = f"the current frame lacks reference column(s) {missing}"
        raise DataError(msg)
    reference_df = reference_df.rename(columns=str)
    current_df = current_df.rename(columns=str)
    specs = infer_specs(reference_df, categorical)
    layout = ProfileLayout.fit(reference_df, specs)
    baseline = layout.profile(reference_df, reservoir_size=0)
    size = chunk_size or len(current_df)
    calibration = Calibration.from_folds(layout, reference_df, window_size=size, seed=seed)
    encoded = layout.encode(current_df)
    chunks = []
    for index, start in enumerate(range(0, len(current_df), size)):
        stop = min(start + size, len(current_df))
        window = layout.empty_profile(reservoir_size=0)
        window.fold_encoded(encoded.take(range(start, stop)))
        verdict = judge(baseline, window, calibration, policy)
        chunks.append(ChunkResult(index=index, start=start, rows=stop - start, verdict=verdict))
    return CompareResult(chunks=tuple(chunks), layout=layout, calibration=calibration, policy=policy)
