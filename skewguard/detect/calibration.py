"""Per-column effect-size thresholds, calibrated on training rows held out from the reference.

Why held out: a chunk that is also inside the reference profile is partly compared with itself, so
its distances are too small and the thresholds too tight (NannyML #426) — every window then looks
drifted. Here each null draw is a chunk of rows that the reference profile it is compared against
has never seen.

How the threshold depends on the window. Under no drift, the effect sizes used here (Wasserstein,
Jensen–Shannon *distance*, absolute change of a share) shrink like ``1 / sqrt(n_eff)`` with
``n_eff = n·m / (n + m)`` for window size ``n`` and reference size ``m``. So a calibration stores,
per column and method, the ``quantile`` of ``effect · sqrt(n_eff)`` over the null draws, and a window
of any size gets the threshold ``constant / sqrt(n_eff)``. Windows of the calibrated size use the
quantile as measured; other sizes — a short window at night, span drift against the previous window,
or a window as large as the reference itself, for which no held-out chunk of that size can exist —
are extrapolated by that √n law.

When the held-out pool is smaller than twice the window, distinct chunks of the window's size cannot
be drawn, and chunks of part of the pool drawn without replacement share most of their rows: their
effect sizes all sit near the pool's own distance from the reference, so the quantile came out too
tight (measured: 4.5-5 % of fresh same-distribution windows exceeded a 99 % threshold, for pools of
0.2-1.9 windows). Such pools are resampled instead: chunks drawn *with* replacement (a bootstrap),
whose spread is that of independent rows, of the window's size or the pool's when the pool is smaller
(extrapolated by the √n law). The pool's own offset from the population adds to that spread, so the
thresholds err on the safe side: measured, 0.2-0.7 % of fresh windows above a 99 % threshold
(``Calibration.resampled`` records that this happened). Chunks of the window's size from a pool far
smaller would let that offset dominate, hence the pool's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from skewguard.detect.measure import null_effects
from skewguard.detect.policy import Method
from skewguard.errors import ConfigError, DataError
from skewguard.stats import ColumnKind, EncodedFrame, Profile, ProfileLayout

FORMAT = "skewguard.calibration/1"


@dataclass(frozen=True, slots=True)
class ThresholdConstant:
    """The null ``quantile`` of ``effect · sqrt(n_eff)`` for one column and method, over ``draws``."""

    column: str
    method: Method
    constant: float
    draws: int


@dataclass(frozen=True)
class Calibration:
    """Thresholds for every (column, method), scalable to any window size (module docstring).

    ``window_size`` is the size asked for, ``chunk_size`` the size of the held-out chunks actually
    drawn, ``reference_rows`` the rows of the reference profile(s) they were compared with;
    ``resampled`` says the held-out pool was too small for distinct chunks, so they were drawn with
    replacement (module docstring).
    """

    quantile: float
    window_size: int
    chunk_size: int
    reference_rows: int
    draws: int
    constants: tuple[ThresholdConstant, ...]
    resampled: bool = False
    _lookup: dict[tuple[str, Method], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookup", {(c.column, c.method): c.constant for c in self.constants})

    def constant(self, column: str, method: Method) -> float:
        """The stored constant (ConfigError when the calibration does not cover the column)."""
        try:
            return self._lookup[(column, method)]
        except KeyError:
            msg = f"the calibration has no threshold for column {column!r} ({method.value}); recalibrate"
            raise ConfigError(msg) from None

    def threshold(self, column: str, method: Method, n_eff: float) -> float:
        """The effect-size threshold for a comparison with ``n_eff = n·m / (n + m)`` (inf when 0)."""
        constant = self.constant(column, method)
        if n_eff <= 0:
            return math.inf
        return constant / math.sqrt(n_eff)

    def threshold_at(self, column: str, method: Method, *, window_rows: int, reference_rows: int) -> float:
        """Threshold for a window of ``window_rows`` against ``reference_rows`` (nulls ignored)."""
        if window_rows <= 0 or reference_rows <= 0:
            return math.inf
        return self.threshold(column, method, window_rows * reference_rows / (window_rows + reference_rows))

    # -- fitting ----------------------------------------------------------------------------------

    @classmethod
    def from_holdout(
        cls,
        reference: Profile,
        holdout: pd.DataFrame | EncodedFrame,
        *,
        window_size: int,
        draws: int = 200,
        quantile: float = 0.99,
        seed: int = 0,
    ) -> Calibration:
        """Calibrate against ``reference`` with chunks drawn from ``holdout``.

        ``holdout`` must hold training rows that are NOT folded into ``reference`` (e.g. every tenth
        chunk of the training file, set aside while the baseline is built).
        """
        encoded = holdout if isinstance(holdout, EncodedFrame) else reference.layout.encode(holdout)
        return _calibrate(
            [(reference, encoded)], window_size=window_size, draws=draws, quantile=quantile, seed=seed
        )

    @classmethod
    def from_folds(
        cls,
        layout: ProfileLayout,
        reference_df: pd.DataFrame,
        *,
        window_size: int,
        folds: int = 5,
        draws: int = 200,
        quantile: float = 0.99,
        seed: int = 0,
    ) -> Calibration:
        """Cross-calibrate on one frame: each fold is held out from a reference made of the others.

        The rows are split at random into ``folds`` parts; chunks of part ``f`` are compared with the
        profile of the remaining parts (built by merging the fold profiles, so each row is encoded
        once). The result applies to the profile of the whole frame via the √n scaling.
        """
        if folds < 2:
            msg = f"folds must be >= 2, got {folds}"
            raise ConfigError(msg)
        if len(reference_df) < 2 * folds:
            msg = f"the reference has {len(reference_df)} rows; {folds} folds need at least {2 * folds}"
            raise DataError(msg)
        encoded = layout.encode(reference_df)
        rng = np.random.default_rng(seed)
        assignment = rng.permutation(len(reference_df)) % folds
        parts = [encoded.take(np.flatnonzero(assignment == f)) for f in range(folds)]
        profiles = []
        for part in parts:
            profile = layout.empty_profile(reservoir_size=0)
            profile.fold_encoded(part)
            profiles.append(profile)
        pairs: list[tuple[Profile, EncodedFrame]] = []
        for f, part in enumerate(parts):
            others = [p for g, p in enumerate(profiles) if g != f]
            rest = others[0]
            for p in others[1:]:
                rest = rest.merge(p)
            pairs.append((rest, part))
        return _calibrate(pairs, window_size=window_size, draws=draws, quantile=quantile, seed=seed + 1)

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format": FORMAT,
            "quantile": self.quantile,
            "window_size": self.window_size,
            "chunk_size": self.chunk_size,
            "reference_rows": self.reference_rows,
            "draws": self.draws,
            "resampled": self.resampled,
            "constants": [
                {"column": c.column, "method": c.method.value, "constant": c.constant, "draws": c.draws}
                for c in self.constants
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != FORMAT:
            msg = f"not a skewguard calibration (format {data.get('format')!r}, expected {FORMAT!r})"
            raise DataError(msg)
        try:
            calibration = cls(
                quantile=float(data["quantile"]),
                window_size=int(data["window_size"]),
                chunk_size=int(data["chunk_size"]),
                reference_rows=int(data["reference_rows"]),
                draws=int(data["draws"]),
                resampled=bool(data.get("resampled", False)),  # (absent from calibrations before it)
                constants=tuple(
                    ThresholdConstant(c["column"], Method(c["method"]), float(c["constant"]), int(c["draws"]))
                    for c in data["constants"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"malformed calibration JSON: {exc!r}"
            raise DataError(msg) from exc
        # A NaN constant (JSON readers take NaN) would make every threshold NaN, never exceeded: the
        # check switched off without a word. A negative one would flag every window.
        for c in calibration.constants:
            if not (math.isfinite(c.constant) and c.constant >= 0):
                msg = (
                    f"malformed calibration JSON: the constant of column {c.column!r} ({c.method.value}) "
                    f"is {c.constant!r}; expected a finite number >= 0"
                )
                raise DataError(msg)
        if not 0.0 < calibration.quantile < 1.0:
            msg = (
                f"malformed calibration JSON: quantile {calibration.quantile!r}; expected a number in (0, 1)"
            )
            raise DataError(msg)
        return calibration

    def to_json(self) -> str:
        """Lossless JSON."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Calibration:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            msg = f"calibration JSON does not parse: {exc}"
            raise DataError(msg) from exc
        return cls.from_dict(data)


def _calibrate(
    pairs: Sequence[tuple[Profile, EncodedFrame]],
    *,
    window_size: int,
    draws: int,
    quantile: float,
    seed: int,
) -> Calibration:
    if window_size < 1:
        msg = f"window_size must be >= 1, got {window_size}"
        raise ConfigError(msg)
    if draws < 1:
        msg = f"draws must be >= 1, got {draws}"
        raise ConfigError(msg)
    if not 0.0 < quantile < 1.0:
        msg = f"quantile must be in (0, 1), got {quantile}"
        raise ConfigError(msg)
    smallest = min(encoded.rows for _, encoded in pairs)
    if smallest < 2:
        msg = f"a held-out part has {smallest} rows; calibration needs at least 2"
        raise DataError(msg)
    # Distinct chunks of the window's size when the pool allows them; else resampled (module docstring).
    resampled = smallest < 2 * window_size
    chunk_size = min(window_size, smallest)
    rng = np.random.default_rng(seed)
    layout = pairs[0][0].layout
    scaled: dict[tuple[str, Method], list[float]] = {}
    for draw in range(draws):
        reference, encoded = pairs[draw % len(pairs)]
        # Sorted: the order of rows does not change a profile, and gathers in order are ~3x faster.
        index = np.sort(rng.choice(encoded.rows, size=chunk_size, replace=resampled))
        chunk = layout.empty_profile(reservoir_size=0)
        chunk.fold_encoded(encoded.take(index))
        for name, sketch in reference.sketches.items():
            for method, effect, n_eff in null_effects(sketch, chunk.sketches[name]):
                scaled.setdefault((name, method), []).append(effect * math.sqrt(n_eff))
    constants = []
    for column in layout.columns:
        methods = (
            (Method.WASSERSTEIN, Method.NULL_RATE)
            if column.kind is ColumnKind.NUMERIC
            else (Method.JENSEN_SHANNON, Method.NULL_RATE)
        )
        for method in methods:
            values = scaled.get((column.name, method), [])
            # No draw had data on both sides (e.g. an all-null column): the policy floor decides alone.
            constant = float(np.quantile(values, quantile)) if values else 0.0
            constants.append(ThresholdConstant(column.name, method, constant, len(values)))
    reference_rows = int(np.mean([reference.rows for reference, _ in pairs]))
    return Calibration(
        quantile=quantile,
        window_size=window_size,
        chunk_size=chunk_size,
        reference_rows=reference_rows,
        draws=draws,
        constants=tuple(constants),
        resampled=resampled,
    )
