"""A synthetic 20-column model input (14 numeric incl. one prediction score, 6 categorical).

Windows are drawn fresh from the same distribution as the baseline unless a shift is asked for, so
the stream has known drift points.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd

from skewguard.stats import ColumnKind, ColumnRole, ColumnSpec

N_NUMERIC = 13  # plus the prediction score
N_CATEGORICAL = 6
CATEGORIES = [np.array([f"c{j}_{k}" for k in range(3 + 3 * j)], dtype=object) for j in range(N_CATEGORICAL)]
_WEIGHTS = [1.0 / np.arange(1, len(c) + 1) ** 1.1 for c in CATEGORIES]
PROBABILITIES = [w / w.sum() for w in _WEIGHTS]


class Shift(StrEnum):
    """The seeded shifts of the issue, each on its own column."""

    MEAN = "num_00"  # mean + 0.25 sd
    VARIANCE = "num_01"  # variance x 1.5
    NULL_RATE = "num_02"  # null rate 1 % -> 6 %
    NEW_CATEGORY = "cat_00"  # a new category at 2 % share
    PREDICTION = "score"  # prediction distribution shifted


def specs() -> list[ColumnSpec]:
    out = [ColumnSpec(f"num_{i:02d}", ColumnKind.NUMERIC) for i in range(N_NUMERIC)]
    out.append(ColumnSpec("score", ColumnKind.NUMERIC, role=ColumnRole.PREDICTION, domain=(0.0, 1.0)))
    out += [ColumnSpec(f"cat_{j:02d}", ColumnKind.CATEGORICAL) for j in range(N_CATEGORICAL)]
    return out


def draw(n: int, rng: np.random.Generator, shift: Shift | None = None) -> pd.DataFrame:
    data: dict[str, np.ndarray] = {}
    for i in range(N_NUMERIC):
        kind = i % 4
        if kind == 0 or i < 3:
            loc, sd = 10.0 + i, 2.0
            if shift is Shift.MEAN and i == 0:
                loc += 0.25 * sd
            if shift is Shift.VARIANCE and i == 1:
                sd *= np.sqrt(1.5)
            x = rng.normal(loc, sd, n)
        elif kind == 1:
            x = rng.lognormal(0.0, 0.8, n)
        elif kind == 2:
            x = rng.poisson(4.0, n).astype(np.float64)
        else:
            x = rng.uniform(-1.0, 1.0, n)
        if i == 2 or i % 5 == 4:
            rate = 0.06 if (shift is Shift.NULL_RATE and i == 2) else 0.01
            x[rng.random(n) < rate] = np.nan
        data[f"num_{i:02d}"] = x
    a = 2.4 if shift is Shift.PREDICTION else 2.0
    data["score"] = rng.beta(a, 5.0, n)
    for j in range(N_CATEGORICAL):
        x = rng.choice(CATEGORIES[j], size=n, p=PROBABILITIES[j])
        if shift is Shift.NEW_CATEGORY and j == 0:
            x[rng.random(n) < 0.02] = "c0_new"
        if j % 2 == 1:
            x[rng.random(n) < 0.02] = None
        data[f"cat_{j:02d}"] = x
    return pd.DataFrame(data)
