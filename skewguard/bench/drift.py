"""Benchmark: skewguard's drift verdict against Evidently's DataDriftPreset on identical frames.

Synthetic reference and current frames (default 100k rows × 50 columns: 70 % numeric, 30 %
categorical, of several shapes, some with a base null rate). In the current frame a known set of
eight columns is shifted — small and large mean shifts, a variance change, a shifted count rate, a
null-rate jump on a numeric and on a categorical column, a new category, reweighted categories — and
every other column is drawn from the same distribution as the reference.

What is timed, in one process, on the same frames:

* ``skewguard_s``: profiling the current frame (encode + fold, sample included) and ``judge`` against
  the baseline. The reference side — layout fit, baseline profile, fold calibration at the current
  frame's size — is done first and reported as ``skewguard_setup_s`` (a monitor builds it once).
* ``evidently_s``: ``Report([DataDriftPreset()]).run`` on the two frames (Dataset construction
  included), Evidently's default per-column methods and thresholds.

With ``repeats > 1`` each side is run that many times and the best time of each is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from skewguard.detect import Calibration, DriftPolicy, judge
from skewguard.errors import ConfigError
from skewguard.report import evidently_data_drift
from skewguard.stats import ColumnKind, ColumnSpec, ProfileLayout

SHIFT_KINDS = (
    "small mean shift (0.05 sd)",
    "large mean shift (0.5 sd)",
    "variance x1.5",
    "null rate 1% -> 6%",
    "count rate 3 -> 3.3",
    "new category at 2%",
    "top category -6 points",
    "null rate 0% -> 4%",
)


@dataclass(frozen=True, slots=True)
class _Columns:
    numeric: list[str]
    categorical: list[str]
    shifted: dict[str, str]


def _columns(features: int) -> _Columns:
    if features < 8:
        msg = f"features must be >= 8 (eight of them are shifted), got {features}"
        raise ConfigError(msg)
    n_num = max(5, round(features * 0.7))
    n_cat = features - n_num
    if n_cat < 3:
        n_num, n_cat = features - 3, 3
    numeric = [f"num_{i:02d}" for i in range(n_num)]
    categorical = [f"cat_{j:02d}" for j in range(n_cat)]
    targets = [numeric[0], numeric[1], numeric[2], numeric[3], numeric[4], *categorical[:3]]
    return _Columns(numeric, categorical, dict(zip(targets, SHIFT_KINDS, strict=True)))


def _numeric(i: int, n: int, rng: np.random.Generator, shift: str | None) -> np.ndarray[Any, Any]:
    shape = i % 5 if i >= 5 else {0: 0, 1: 0, 2: 0, 3: 1, 4: 2}[i]
    loc, scale = 10.0 + i, 1.0 + (i % 7) / 3
    if shape == 0:  # normal
        if shift == SHIFT_KINDS[0]:
            loc += 0.05 * scale
        elif shift == SHIFT_KINDS[1]:
            loc += 0.5 * scale
        elif shift == SHIFT_KINDS[2]:
            scale *= np.sqrt(1.5)
        x = rng.normal(loc, scale, n)
    elif shape == 1:  # log-normal
        x = rng.lognormal(0.0, 0.75, n) * scale
    elif shape == 2:  # counts
        x = rng.poisson(3.3 if shift == SHIFT_KINDS[4] else 3.0, n).astype(np.float64)
    elif shape == 3:  # uniform
        x = rng.uniform(-loc, loc, n)
    else:  # exponential
        x = rng.exponential(scale, n)
    base_null = 0.01 if (i % 4 == 3) else 0.0
    null_rate = 0.06 if shift == SHIFT_KINDS[3] else base_null
    if null_rate:
        x[rng.random(n) < null_rate] = np.nan
    return x


def _categorical(j: int, n: int, rng: np.random.Generator, shift: str | None) -> np.ndarray[Any, Any]:
    k = 4 + (j * 3) % 20
    values = np.array([f"c{j}_v{v}" for v in range(k)], dtype=object)
    weights = 1.0 / np.arange(1, k + 1) ** 0.9
    p = weights / weights.sum()
    if shift == SHIFT_KINDS[6]:
        p = p.copy()
        p[0] -= 0.06
        p[1] += 0.06
    x = rng.choice(values, size=n, p=p)
    if shift == SHIFT_KINDS[5]:
        x[rng.random(n) < 0.02] = f"c{j}_new"
    null_rate = 0.04 if shift == SHIFT_KINDS[7] else (0.01 if j % 3 == 1 else 0.0)
    if null_rate:
        x[rng.random(n) < null_rate] = None
    return x


def make_frames(
    rows: int = 100_000, features: int = 50, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """The reference frame, the current frame, and ``{shifted column: what changed}``."""
    if rows < 100:
        msg = f"rows must be >= 100, got {rows}"
        raise ConfigError(msg)
    cols = _columns(features)
    rng = np.random.default_rng(seed)
    frames = []
    for current in (False, True):
        data: dict[str, Any] = {}
        for i, name in enumerate(cols.numeric):
            data[name] = _numeric(i, rows, rng, cols.shifted.get(name) if current else None)
        for j, name in enumerate(cols.categorical):
            data[name] = _categorical(j, rows, rng, cols.shifted.get(name) if current else None)
        frames.append(pd.DataFrame(data))
    return frames[0], frames[1], cols.shifted


def _best(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _evidently_drifted(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]) -> set[str]:
    numerical = [c for c in reference.columns if c not in categorical]
    return set(evidently_data_drift(reference, current, numerical=numerical, categorical=categorical).drifted)


def bench_drift(
    rows: int = 100_000,
    features: int = 50,
    seed: int = 0,
    *,
    repeats: int = 1,
    run_evidently: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring for what is timed).

    Keys: ``rows, features, skewguard_s, evidently_s, speedup, shifted, skewguard_found,
    skewguard_false, evidently_found, evidently_false, skewguard_setup_s`` plus the name lists
    ``shifted_columns, skewguard_drifted, evidently_drifted`` and ``repeats``. With
    ``run_evidently=False`` the Evidently figures are None.
    """
    if repeats < 1:
        msg = f"repeats must be >= 1, got {repeats}"
        raise ConfigError(msg)
    reference, current, shifted = make_frames(rows, features, seed)
    categorical = [c for c in reference.columns if c.startswith("cat_")]
    specs = [
        ColumnSpec(c, ColumnKind.CATEGORICAL if c in categorical else ColumnKind.NUMERIC)
        for c in reference.columns
    ]
    policy = DriftPolicy()

    setup_start = time.perf_counter()
    layout = ProfileLayout.fit(reference, specs)
    baseline = layout.profile(reference)
    calibration = Calibration.from_folds(layout, reference, window_size=len(current), seed=seed)
    setup_s = time.perf_counter() - setup_start

    def run_skewguard() -> set[str]:
        window = layout.profile(current)
        return set(judge(baseline, window, calibration, policy).drifted)

    skewguard_s, found = _best(repeats, run_skewguard)
    truth = set(shifted)
    result: dict[str, Any] = {
        "rows": rows,
        "features": features,
        "skewguard_s": round(skewguard_s, 4),
        "evidently_s": None,
        "speedup": None,
        "shifted": len(truth),
        "skewguard_found": len(found & truth),
        "skewguard_false": len(found - truth),
        "evidently_found": None,
        "evidently_false": None,
        "skewguard_setup_s": round(setup_s, 4),
        "repeats": repeats,
        "shifted_columns": shifted,
        "skewguard_drifted": sorted(found),
        "evidently_drifted": None,
    }
    if run_evidently:
        evidently_s, drifted = _best(repeats, lambda: _evidently_drifted(reference, current, categorical))
        result.update(
            evidently_s=round(evidently_s, 4),
            speedup=round(evidently_s / skewguard_s, 1),
            evidently_found=len(drifted & truth),
            evidently_false=len(drifted - truth),
            evidently_drifted=sorted(drifted),
        )
    return result
