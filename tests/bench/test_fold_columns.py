"""The column-wise ``ModelMonitor.fold`` (the daemon's hot path) folds exactly what the frame path folded.

The reference is the previous implementation: ``DataFrame.from_records`` of the feature dicts, booleans
mapped to ``"true"``/``"false"``, the prediction column from ``prediction_values``, ``Profile.fold``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import FeatureKind
from skewguard.baseline import PREDICTION_COLUMN, Baseline
from skewguard.bench.stream import MODEL, _build_baseline, stream_feature_set
from skewguard.errors import DataError
from skewguard.monitor import ModelMonitor, prediction_values
from skewguard.records import Prediction, ServingRecord
from skewguard.stats import Profile

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
FEATURES = 8  # five numeric, two categorical, one boolean


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> ModelMonitor:
    directory: Path = tmp_path_factory.mktemp("baseline")
    feature_set = stream_feature_set(FEATURES)
    _build_baseline(feature_set, FEATURES, directory, seed=5, rows=3_000)
    return ModelMonitor(Baseline.load(directory), feature_set)


def reference_fold(monitor: ModelMonitor, profile: Profile, records: Sequence[ServingRecord]) -> None:
    names = [n for n in monitor.feature_set.features if n in profile.layout.names]
    frame = pd.DataFrame.from_records([r.features for r in records], columns=names)
    for name in names:
        if monitor.feature_set.features[name].kind is FeatureKind.BOOLEAN:
            frame[name] = frame[name].map(lambda v: None if v is None else ("true" if v else "false"))
    kind = monitor.baseline.prediction_kind
    assert kind is not None
    frame[PREDICTION_COLUMN] = prediction_values([r.prediction for r in records], kind)
    profile.fold(frame, [r.request_id for r in records])


def record(index: int, features: dict[str, Any], prediction: Prediction = 0.25) -> ServingRecord:
    return ServingRecord(
        request_id=f"q{index:06d}",
        event_time=T0 + dt.timedelta(seconds=index),
        model=MODEL,
        model_version="v1",
        feature_state_hash="0" * 64,
        features=features,
        prediction=prediction,
    )


def awkward_records(n: int, seed: int) -> list[ServingRecord]:
    """Nulls, ints and bools among numbers, non-strings and unseen values among categories, extra keys."""
    rng = np.random.default_rng(seed)
    numeric = [f"num_{i:02d}" for i in range(5)]
    out = []
    for i in range(n):
        features: dict[str, Any] = {}
        for j, name in enumerate(numeric):
            draw = rng.random()
            features[name] = (
                None
                if draw < 0.05
                else int(rng.integers(0, 9))
                if draw < 0.15
                else bool(draw < 0.17)
                if draw < 0.2
                else math.inf
                if draw < 0.21
                else float(rng.normal(j, 2.0))
            )
        pick = rng.random()
        features["cat_00"] = (
            None if pick < 0.05 else 3 if pick < 0.1 else 3.0 if pick < 0.12 else f"c0_{i % 4}"
        )
        features["cat_01"] = True if pick > 0.95 else f"c1_{int(rng.integers(0, 12))}"
        features["flag"] = None if pick < 0.03 else bool(rng.random() < 0.3)
        features["not_a_feature"] = "ignored"
        out.append(record(i, features, float(rng.beta(2, 5)) if i % 7 else int(i % 2)))
    return out


def test_column_wise_fold_equals_the_frame_fold_on_awkward_values(monitor: ModelMonitor) -> None:
    records = awkward_records(3_000, seed=11)
    accumulator = monitor.new_accumulator()
    reference = monitor.baseline.profile.layout.empty_profile()
    for start in range(0, len(records), 700):  # several polls' worth, as the daemon folds them
        monitor.fold(accumulator, records[start : start + 700])
        reference_fold(monitor, reference, records[start : start + 700])
    assert accumulator.records == len(records)
    assert accumulator.profile.rows == len(records)
    assert accumulator.profile.equals(reference)  # counts, moments and the row sample, exactly


def test_a_record_lacking_features_is_folded_with_them_null(monitor: ModelMonitor) -> None:
    full = awkward_records(200, seed=12)
    lacking = [
        record(1_000 + i, {k: v for k, v in r.features.items() if k not in ("num_01", "cat_00")})
        for i, r in enumerate(full[:20])
    ]
    batch = full + lacking
    accumulator = monitor.new_accumulator()
    reference = monitor.baseline.profile.layout.empty_profile()
    monitor.fold(accumulator, batch)
    reference_fold(monitor, reference, batch)
    assert accumulator.profile.equals(reference)
    before = sum(r.features["num_01"] in (None, math.inf) for r in full)  # infinity is profiled as null
    assert accumulator.profile.numeric("num_01").nulls == before + 20


def test_a_record_lacking_a_boolean_feature_counts_it_as_null(monitor: ModelMonitor) -> None:
    # (The frame path read the missing value as NaN, which is truthy, and counted it as "true".)
    records = [record(i, {"flag": True}) for i in range(3)] + [record(3, {})]
    accumulator = monitor.new_accumulator()
    monitor.fold(accumulator, records)
    flag = accumulator.profile.categorical("flag")
    assert flag.nulls == 1
    assert int(flag.counts.sum()) == 3


def test_predictions_of_mixed_shapes_take_the_general_path(monitor: ModelMonitor) -> None:
    base = awkward_records(6, seed=13)
    shapes: list[Prediction] = [0.2, 1, [0.3, 0.7], "n/a", [0.1, 0.2, 0.7], 0.9]
    records = [record(i, r.features, shape) for i, (r, shape) in enumerate(zip(base, shapes, strict=True))]
    accumulator = monitor.new_accumulator()
    reference = monitor.baseline.profile.layout.empty_profile()
    monitor.fold(accumulator, records)
    reference_fold(monitor, reference, records)
    assert accumulator.profile.equals(reference)
    assert accumulator.profile.numeric(PREDICTION_COLUMN).nulls == 1  # the string


def test_a_string_in_a_numeric_feature_is_the_same_error_as_before(monitor: ModelMonitor) -> None:
    records = [*awkward_records(5, seed=14), record(99, {"num_00": "twelve"})]
    with pytest.raises(DataError, match="num_00") as frame_path:
        reference_fold(monitor, monitor.baseline.profile.layout.empty_profile(), records)
    accumulator = monitor.new_accumulator()
    with pytest.raises(DataError) as column_path:
        monitor.fold(accumulator, records)
    assert str(column_path.value) == str(frame_path.value)
    assert accumulator.records == 0


def test_booleans_logged_as_other_values_are_profiled_by_truthiness_as_before(monitor: ModelMonitor) -> None:
    # The fold maps True/False/None (and 1/0) by one dict lookup; anything else takes the general path.
    flags: list[Any] = [True, False, None, 1, 0, 1.0, 0.0, 2, "yes", "", math.nan, True]
    base = awkward_records(len(flags), seed=15)
    records = [record(i, {**r.features, "flag": f}) for i, (r, f) in enumerate(zip(base, flags, strict=True))]
    for batch in (records, records[:3], records[8:]):  # with and without the odd values
        accumulator = monitor.new_accumulator()
        reference = monitor.baseline.profile.layout.empty_profile()
        monitor.fold(accumulator, batch)
        reference_fold(monitor, reference, batch)
        assert accumulator.profile.equals(reference)
    flag = accumulator.profile.categorical("flag")
    vocabulary = list(flag.layout.vocabulary)
    # records[8:] is "yes", "", NaN, True: NaN is truthy, "" is not
    assert flag.counts[vocabulary.index("true")] == 3
    assert flag.counts[vocabulary.index("false")] == 1
