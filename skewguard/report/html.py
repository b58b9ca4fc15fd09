"""Evidently's DataDrift HTML page for one window, drawn from the two profiles' row samples.

A monitor keeps profiles, not raw rows; the profiles' reservoirs are uniform row samples (bottom-k
by hash priority), so they are what the human report is drawn from. Evidently's own verdicts on the
samples are its own (it sees a sample, with its fixed thresholds); skewguard's verdict is the one to
act on, and this page is for looking at the distributions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from skewguard.errors import DataError, StatisticsError
from skewguard.report._evidently import data_drift
from skewguard.stats import ColumnKind, Profile

log = logging.getLogger(__name__)


def render_drift_html(
    reference: Profile, window: Profile, path: str | Path, *, columns: Sequence[str] | None = None
) -> Path:
    """Write the Evidently DataDriftPreset HTML for ``window`` vs ``reference`` to ``path``.

    ``columns`` limits the page to those columns (default: all), so features that are deliberately
    not drift-checked (seasonal ones) do not show up as Evidently drift.
    """
    if not reference.layout.same_columns(window.layout):
        msg = "reference and window profiles were built on different layouts"
        raise StatisticsError(msg)
    names = list(reference.layout.names) if columns is None else list(columns)
    unknown = sorted(set(names) - set(reference.layout.names))
    if unknown or not names:
        msg = f"the report needs columns of the profiles {list(reference.layout.names)}, got {names}"
        raise DataError(msg)
    ref_rows, win_rows = reference.sample_frame()[names], window.sample_frame()[names]
    if len(ref_rows) == 0 or len(win_rows) == 0:
        msg = (
            f"the report needs sampled rows on both sides; the reference sample has {len(ref_rows)}, "
            f"the window sample {len(win_rows)} (was the profile built with reservoir_size=0?)"
        )
        raise DataError(msg)
    # Evidently refuses a column with no value in a sample ("An empty column was provided"): a nullable
    # feature, or the prediction, that is all null in a window — just when someone looks. It is left
    # off the page, named in the log; skewguard's own null-rate check judges it.
    empty = [name for name in names if ref_rows[name].isna().all() or win_rows[name].isna().all()]
    if empty:
        log.warning("drift page: column(s) %s left out, with no value in one of the two samples", empty)
        names = [name for name in names if name not in empty]
        if not names:
            msg = f"no column of {empty} has values in both samples; there is nothing to draw"
            raise DataError(msg)
        ref_rows, win_rows = ref_rows[names], win_rows[names]
    kinds = {c.name: c.kind for c in reference.layout.columns}
    numerical = [name for name in names if kinds[name] is ColumnKind.NUMERIC]
    categorical = [name for name in names if kinds[name] is ColumnKind.CATEGORICAL]
    result = data_drift(ref_rows, win_rows, numerical=numerical, categorical=categorical)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    result.snapshot.save_html(str(target))
    return target
