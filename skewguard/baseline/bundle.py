"""The training baseline: everything the monitor compares serving traffic with, in one directory.

A baseline directory holds ``baseline.json`` (metadata), ``feature_state.json`` (the fitted values,
whose hash serving records carry), ``profile.json`` (the training Profile), ``calibration.json``
(effect-size thresholds from held-out training blocks) and the two GX suites generated from the feature
declarations. It is written once by the training side and read by every monitor process.

Building it from a file too large for memory takes two streaming passes:

1. a uniform sample of ``fit_rows`` raw rows (a priority reservoir across chunks) fits the FeatureState
   and fixes the profile's bins and vocabularies;
2. every chunk is transformed and folded into the Profile, except every ``holdout_every``-th block of
   ``window_size`` consecutive rows, which is set aside (up to ``holdout_rows``) for calibration. The
   blocks are contiguous, like serving windows, and never folded into the reference they are compared
   with (NannyML #426). When the file has more blocks than ``holdout_rows`` needs, the held blocks are
   spaced wider (the first pass counts the rows), so calibration sees the whole span of the data rather
   than its oldest part; a held block the cap leaves no room for is folded like any other.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features import FeatureSet, FeatureState
from skewguard.baseline.specs import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    PredictionKind,
    feature_specs,
    label_spec,
    prediction_spec,
)
from skewguard.detect import Calibration
from skewguard.errors import ConfigError, DataError
from skewguard.stats import NumericColumnLayout, Profile, ProfileLayout

FORMAT = "skewguard.baseline/1"
FILES = {
    "meta": "baseline.json",
    "state": "feature_state.json",
    "profile": "profile.json",
    "calibration": "calibration.json",
    "suite_raw": "suite.raw.json",
    "suite_features": "suite.features.json",
}


@dataclass(frozen=True)
class BaselineOptions:
    """Knobs of the baseline build; the defaults suit windows of a few thousand requests."""

    window_size: int = 5000
    fit_rows: int = 200_000
    holdout_every: int = 5
    holdout_rows: int = 200_000
    reservoir_size: int = 1000
    bins: int = 32
    top_k: int = 50
    calibration_draws: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("window_size", "fit_rows", "holdout_rows", "bins", "top_k", "calibration_draws"):
            if getattr(self, name) < 1:
                msg = f"baseline option {name} must be >= 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        if self.holdout_every < 2:
            msg = f"baseline option holdout_every must be >= 2, got {self.holdout_every}"
            raise ConfigError(msg)


@dataclass
class Baseline:
    """A loaded (or freshly built) baseline."""

    model: str
    feature_set: str
    state: FeatureState
    profile: Profile
    calibration: Calibration
    prediction_kind: PredictionKind | None
    has_label: bool
    rows: int
    holdout_rows: int
    window_size: int
    created: str
    metrics: dict[str, float] = field(default_factory=dict)
    #: The standard error of each holdout metric (its sampling error); a metric without one is exact.
    metric_errors: dict[str, float] = field(default_factory=dict)

    @property
    def state_hash(self) -> str:
        """The FeatureState hash serving records must carry."""
        return self.state.content_hash

    def metadata(self) -> dict[str, Any]:
        """The ``baseline.json`` document."""
        return {
            "format": FORMAT,
            "model": self.model,
            "feature_set": self.feature_set,
            "feature_state_hash": self.state_hash,
            "prediction_kind": None if self.prediction_kind is None else self.prediction_kind.value,
            "has_label": self.has_label,
            "rows": self.rows,
            "holdout_rows": self.holdout_rows,
            "window_size": self.window_size,
            "created": self.created,
            "metrics": self.metrics,
            "metric_errors": self.metric_errors,
            "columns": [spec.name for spec in self.profile.layout.specs],
        }

    def save(self, directory: Path, feature_set: FeatureSet | None = None) -> Path:
        """Write every file of the baseline into ``directory`` (created if needed)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FILES["meta"]).write_text(json.dumps(self.metadata(), indent=2, sort_keys=True))
        (directory / FILES["state"]).write_text(self.state.to_json())
        (directory / FILES["profile"]).write_text(self.profile.to_json())
        (directory / FILES["calibration"]).write_text(self.calibration.to_json())
        if feature_set is not None:
            # Imported here: Great Expectations takes seconds to import, and the daemon loads baselines
            # without ever writing suites.
            from skewguard.validation import SuiteTarget, build_suite

            for target, key in ((SuiteTarget.RAW, "suite_raw"), (SuiteTarget.FEATURES, "suite_features")):
                suite = build_suite(feature_set, target, self.state)
                (directory / FILES[key]).write_text(json.dumps(suite.to_json_dict(), indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Baseline:
        """Read a baseline directory, naming the file that is missing or malformed."""

        def read(key: str) -> str:
            path = directory / FILES[key]
            try:
                return path.read_text()
            except OSError as exc:
                msg = f"baseline {str(directory)!r}: cannot read {FILES[key]} ({exc.strerror})"
                raise DataError(msg) from exc

        try:
            meta = json.loads(read("meta"))
        except ValueError as exc:
            msg = f"baseline {str(directory)!r}: {FILES['meta']} is not JSON ({exc})"
            raise DataError(msg) from exc
        if meta.get("format") != FORMAT:
            msg = f"baseline {str(directory)!r}: unknown format {meta.get('format')!r}, expected {FORMAT!r}"
            raise DataError(msg)
        try:
            model, feature_set = str(meta["model"]), str(meta["feature_set"])
            has_label, created = bool(meta["has_label"]), str(meta["created"])
            rows, holdout_rows = int(meta["rows"]), int(meta["holdout_rows"])
            window_size = int(meta["window_size"])
            state_hash = str(meta["feature_state_hash"])
            kind = meta.get("prediction_kind")
            prediction_kind = None if kind is None else PredictionKind(kind)
        except KeyError as exc:
            msg = f"baseline {str(directory)!r}: {FILES['meta']} lacks the key {exc.args[0]!r}"
            raise DataError(msg) from None
        except (TypeError, ValueError) as exc:
            msg = f"baseline {str(directory)!r}: {FILES['meta']} holds a malformed value ({exc})"
            raise DataError(msg) from None
        state = FeatureState.from_json(read("state"))
        if state.content_hash != state_hash:
            msg = f"baseline {str(directory)!r}: feature_state.json does not match the hash in baseline.json"
            raise DataError(msg)
        profile = Profile.from_json(read("profile"))
        _warn_of_float_spelled_ids(profile, directory)
        return cls(
            model=model,
            feature_set=feature_set,
            state=state,
            profile=profile,
            calibration=Calibration.from_json(read("calibration")),
            prediction_kind=prediction_kind,
            metrics=_finite_numbers(meta.get("metrics", {}), "metrics", directory, at_least=-math.inf),
            metric_errors=_finite_numbers(meta.get("metric_errors", {}), "metric_errors", directory),
            has_label=has_label,
            rows=rows,
            holdout_rows=holdout_rows,
            window_size=window_size,
            created=created,
        )


log = logging.getLogger(__name__)


def _float_spelled_id(text: str) -> bool:
    """Whether a category reads as an integer of 2**53 or more written the way float64 prints it.

    How releases before 2026-11 spelled such ids ('9007199254740992.0', '1.2345678901234568e+18');
    an id category written as digits alone is spelled exactly, and anything else is no id.
    """
    if text.lstrip("-").isdigit() or not _FLOAT_TEXT.fullmatch(text):
        return False
    value = float(text)
    return math.isfinite(value) and value == math.floor(value) and abs(value) >= 2**53


_FLOAT_TEXT: Final = re.compile(r"-?\d+(\.\d+)?(e\+?\d+)?")


def _warn_of_float_spelled_ids(profile: Profile, directory: Path) -> None:
    """Warn of categories an earlier release spelled as floats: serving now spells those ids exactly.

    Such a baseline still loads, but each of those ids reads as a category it never saw (drift). The
    fix is to rebuild it from the training data.
    """
    for name in profile.layout.names:
        column = profile.layout.column(name)
        known = getattr(column, "known", ())
        spelled = [text for text in known if _float_spelled_id(text)]
        if spelled:
            log.warning(
                "baseline %s: column %r holds integer categories spelled as floats (%s): built by an "
                "earlier release, which merged ids above 2**53; rebuild it, or those ids read as unseen",
                directory,
                name,
                ", ".join(spelled[:3]),
            )


def _warn_of_values_missed_by_the_sample(layout: ProfileLayout, profile: Profile, fit_rows: int) -> None:
    """Warn of numeric columns null in every sampled row but not in the data: binned without bins.

    Their bins are fitted on the ``fit_rows`` sample; with no value there they get one placeholder
    bin, so their values fall under or over it and the binned tests see little. Their null rate is
    still judged; a larger ``fit_rows`` gives them real bins.
    """
    for column in layout.columns:
        if isinstance(column, NumericColumnLayout) and column.fitted_without_values:
            count = profile.numeric(column.name).count
            if count:
                log.warning(
                    "baseline: column %r has %d values, but none in the sample of up to %d rows its "
                    "bins are fitted on: it has one placeholder bin (raise fit_rows)",
                    column.name,
                    count,
                    fit_rows,
                )


def _finite_numbers(stored: Any, key: str, directory: Path, *, at_least: float = 0.0) -> dict[str, float]:
    """The holdout metrics (or their standard errors) of ``baseline.json``: finite numbers, by name.

    Checked, because a NaN (which JSON readers accept) would silently switch its metric's check off.
    """
    expected = "a number" if at_least == -math.inf else f"a number >= {at_least:g}"
    if not isinstance(stored, dict):
        msg = f"baseline {str(directory)!r}: {key} is {stored!r}; expected an object of {expected}s by name"
        raise DataError(msg)
    numbers: dict[str, float] = {}
    for name, value in stored.items():
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        if not (math.isfinite(number) and number >= at_least):
            msg = f"baseline {str(directory)!r}: {key}[{name!r}] is {value!r}; expected {expected}"
            raise DataError(msg)
        numbers[str(name)] = number
    return numbers


ChunkSource = Callable[[], Iterator[pd.DataFrame]]


def _profile_frame(
    feature_set: FeatureSet,
    state: FeatureState,
    raw: pd.DataFrame,
    prediction_column: str | None,
    label_column: str | None,
) -> pd.DataFrame:
    """Computed features plus the prediction / label columns under their profile names."""
    frame = feature_set.transform_frame(raw, state)
    if prediction_column is not None:
        frame[PREDICTION_COLUMN] = raw[prediction_column].to_numpy()
    if label_column is not None:
        frame[LABEL_COLUMN] = raw[label_column].to_numpy()
    return frame


def _uniform_sample(
    chunks: ChunkSource, size: int, seed: int, progress: Callable[[int], None]
) -> tuple[pd.DataFrame, int]:
    """A uniform sample of ``size`` rows over all chunks (keep the smallest random priorities); all rows."""
    rng = np.random.default_rng(seed)
    kept: pd.DataFrame | None = None
    kept_priority = np.empty(0)
    total = 0
    for chunk in chunks():
        total += len(chunk)
        priority = rng.random(len(chunk))
        pool = chunk if kept is None else pd.concat([kept, chunk], ignore_index=True)
        pool_priority = np.concatenate([kept_priority, priority])
        if len(pool) > size:
            order = np.argpartition(pool_priority, size)[:size]
            pool, pool_priority = pool.iloc[order].reset_index(drop=True), pool_priority[order]
        kept, kept_priority = pool, pool_priority
        progress(len(chunk))
    if kept is None or kept.empty:
        msg = "the training data holds no rows"
        raise DataError(msg)
    return kept, total


def _holdout_spacing(total_rows: int, options: BaselineOptions) -> int:
    """Hold out every n-th block: ``holdout_every``, or sparser when that would overfill the cap.

    Only whole blocks count (a partial last block would be held, a chunk of a few rows, when the
    spacing lands on it), and the spacing rounds up, so the held blocks reach the end of the file
    (rounding down held more than the cap takes, leaving the file's last part out of calibration).
    """
    blocks = total_rows // options.window_size
    wanted = math.ceil(options.holdout_rows / options.window_size)
    return max(options.holdout_every, math.ceil(blocks / wanted))


def build_baseline(
    feature_set: FeatureSet,
    chunks: ChunkSource,
    *,
    model: str,
    prediction_column: str | None = None,
    prediction_kind: PredictionKind = PredictionKind.SCORE,
    label_column: str | None = None,
    options: BaselineOptions | None = None,
    metrics: dict[str, float] | None = None,
    metric_errors: dict[str, float] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Baseline:
    """Build a baseline from raw training rows delivered by ``chunks()`` (called twice: two passes).

    ``metrics``: the model's metrics on its training holdout, and ``metric_errors`` their standard
    errors (see :func:`skewguard.labels.holdout_metrics`); windows' label-joined metrics are compared
    with them.

    ``progress(phase, rows)`` is called after each chunk of each pass (phases ``"sample"`` and
    ``"profile"``), for a progress bar.
    """
    options = options or BaselineOptions()
    report = progress or (lambda _phase, _rows: None)
    sample, total_rows = _uniform_sample(
        chunks, options.fit_rows, options.seed, lambda n: report("sample", n)
    )
    every = _holdout_spacing(total_rows, options)
    for column in (prediction_column, label_column):
        if column is not None and column not in sample.columns:
            msg = f"the training data has no column {column!r}; columns: {list(map(str, sample.columns))}"
            raise DataError(msg)
    state = feature_set.fit(sample)
    specs = feature_specs(feature_set, state)
    if prediction_column is not None:
        specs.append(prediction_spec(prediction_kind))
    if label_column is not None:
        specs.append(label_spec(prediction_kind))
    layout = ProfileLayout.fit(
        _profile_frame(feature_set, state, sample, prediction_column, label_column),
        specs,
        bins=options.bins,
        top_k=options.top_k,
        reservoir_size=options.reservoir_size,
    )
    del sample
    profile = layout.empty_profile()
    holdout: list[pd.DataFrame] = []
    holdout_count = 0
    offset = 0
    for chunk in chunks():
        frame = _profile_frame(feature_set, state, chunk, prediction_column, label_column)
        rows = np.arange(offset, offset + len(frame))
        held = np.flatnonzero((rows // options.window_size) % every == every - 1)
        taken = held[: max(0, options.holdout_rows - holdout_count)]
        if taken.size:
            holdout.append(frame.iloc[taken])
            holdout_count += taken.size
        keep = np.ones(len(frame), dtype=bool)
        keep[taken] = False  # (held rows past the cap are folded: no row is left out of both)
        profile.fold(frame[keep], rows[keep])
        offset += len(frame)
        report("profile", len(chunk))
    if profile.rows == 0:
        msg = "no training rows were left for the reference profile"
        raise DataError(msg)
    _warn_of_values_missed_by_the_sample(layout, profile, options.fit_rows)
    if not holdout:
        msg = (
            f"too little training data to hold out a block for calibration: {offset} rows, blocks of "
            f"{options.window_size} rows, every {every}th held out; lower --window-size"
        )
        raise DataError(msg)
    calibration = Calibration.from_holdout(
        profile,
        pd.concat(holdout, ignore_index=True),
        window_size=options.window_size,
        draws=options.calibration_draws,
        seed=options.seed,
    )
    return Baseline(
        model=model,
        feature_set=feature_set.name,
        state=state,
        profile=profile,
        calibration=calibration,
        prediction_kind=prediction_kind if prediction_column is not None else None,
        has_label=label_column is not None,
        rows=profile.rows,
        holdout_rows=holdout_count,
        window_size=options.window_size,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        metrics=dict(metrics or {}),
        metric_errors=dict(metric_errors or {}),
    )
