"""Feature declarations, fitted state and the semantics of the CTR features."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import (
    OTHER_CATEGORY,
    Feature,
    FeatureError,
    FeatureKind,
    FeatureSet,
    FeatureState,
    InputColumns,
    InputType,
    RawInput,
)
from features.core import ComputeFn, Params
from features.ctr import CTR_FEATURES

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def request(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_time": T0,
        "user_tz": "UTC",
        "click_times": [],
        "price": 9.0,
        "category": "books",
        "device": "mobile",
        "ad_position": 3,
    }
    return base | overrides


@pytest.fixture(scope="module")
def state() -> FeatureState:
    rows = [request(category=c, price=p) for c, p in [("books", 1.0), ("books", None), ("toys", 3.0)]]
    return CTR_FEATURES.fit(pd.DataFrame(rows))


def test_click_window_is_half_open_and_excludes_the_event(state: FeatureState) -> None:
    week = dt.timedelta(days=7)
    clicks = [T0, T0 - week, T0 - week - dt.timedelta(microseconds=1), T0 - dt.timedelta(hours=24), T0 + week]
    out = CTR_FEATURES.transform_record(request(click_times=clicks), state)
    # Inside [T0 - 7d, T0): T0-7d and T0-24h. T0 itself, the microsecond before the window and the future
    # click are out.
    assert out["clicks_7d"] == 2.0
    # Inside [T0 - 24h, T0): T0-24h only.
    assert out["clicks_24h"] == 1.0


def test_empty_history_counts_zero(state: FeatureState) -> None:
    out = CTR_FEATURES.transform_frame(pd.DataFrame([request(), request()]), state)
    assert out["clicks_7d"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("instant", "zone", "hour", "weekday"),
    [
        (dt.datetime(2026, 3, 29, 0, 59, tzinfo=UTC), "Europe/Berlin", 1, 6),  # last minute of CET
        (dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin", 3, 6),  # 02:00 local does not exist
        (dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "Europe/Berlin", 2, 6),  # first 02:30 (CEST)
        (dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/Berlin", 2, 6),  # second 02:30 (CET)
        (dt.datetime(2026, 6, 15, 3, 0, tzinfo=UTC), "America/New_York", 23, 6),  # Sunday evening local
        (dt.datetime(2026, 6, 15, 3, 0, tzinfo=UTC), "Asia/Kolkata", 8, 0),
    ],
)
def test_local_time_uses_the_users_timezone_across_dst(
    state: FeatureState, instant: dt.datetime, zone: str, hour: int, weekday: int
) -> None:
    out = CTR_FEATURES.transform_record(request(event_time=instant, user_tz=zone), state)
    assert (out["hour_of_day_local"], out["day_of_week_local"]) == (hour, weekday)


def test_same_instant_in_any_offset_gives_same_features(state: FeatureState) -> None:
    berlin = T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    iso = T0.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()
    outs = [CTR_FEATURES.transform_record(request(event_time=t), state) for t in (T0, berlin, iso)]
    assert outs[0] == outs[1] == outs[2]


def test_missing_price_is_imputed_with_training_median(state: FeatureState) -> None:
    out = CTR_FEATURES.transform_record(request(price=None), state)
    assert out["price_missing"] is True
    assert out["log_price"] == state.params["log_price"]["median"]


def test_unseen_category_maps_to_other_and_strict_device_raises(state: FeatureState) -> None:
    assert CTR_FEATURES.transform_record(request(category="garden"), state)["category"] == OTHER_CATEGORY
    with pytest.raises(FeatureError, match="unknown category 'smart-tv'") as err:
        CTR_FEATURES.transform_record(request(device="smart-tv"), state)
    assert (err.value.feature, err.value.value) == ("device", "smart-tv")


@pytest.mark.parametrize(
    ("overrides", "input_name", "pattern"),
    [
        ({"price": "cheap"}, "price", "expected a number, got str 'cheap'"),
        ({"price": True}, "price", "expected a number, got bool"),
        ({"ad_position": 2.5}, "ad_position", "expected a whole number"),
        ({"device": 3}, "device", "expected a string, got int"),
        ({"user_tz": "Mars/Olympus"}, "user_tz", "not an IANA timezone"),
        ({"event_time": "yesterday"}, "event_time", "not an ISO-8601 timestamp"),
        ({"event_time": None}, "event_time", "null value None in a non-nullable input"),
        ({"click_times": "2026-01-01"}, "click_times", "expected a list"),
    ],
)
def test_bad_inputs_name_the_input_and_value(
    state: FeatureState, overrides: dict[str, Any], input_name: str, pattern: str
) -> None:
    with pytest.raises(FeatureError, match=pattern) as err:
        CTR_FEATURES.transform_record(request(**overrides), state)
    assert err.value.input == input_name


def test_missing_raw_input_is_named(state: FeatureState) -> None:
    raw = request()
    del raw["price"]
    with pytest.raises(FeatureError, match=r"missing raw input\(s\) \['price'\]") as err:
        CTR_FEATURES.transform_record(raw, state)
    assert err.value.input == "price"


def test_state_json_round_trip_keeps_hash(state: FeatureState) -> None:
    again = FeatureState.from_json(state.to_json())
    assert again == state
    assert again.content_hash == state.content_hash


def test_state_hash_is_stable_across_processes(state: FeatureState) -> None:
    code = (
        "import sys; from features import FeatureState; "
        "print(FeatureState.from_json(sys.stdin.read()).content_hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=state.to_json(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == state.content_hash


def test_any_fitted_value_change_changes_the_hash(state: FeatureState) -> None:
    params = {name: dict(values) for name, values in state.params.items()}
    params["log_price"]["median"] = params["log_price"]["median"] + 1e-12
    changed = FeatureState(state.feature_set, state.features, params)
    assert changed.content_hash != state.content_hash


def test_tampered_state_file_is_rejected(state: FeatureState) -> None:
    document = json.loads(state.to_json())
    document["params"]["log_price"]["median"] = 0.5  # the stored content_hash no longer matches
    with pytest.raises(FeatureError, match="content hash mismatch"):
        FeatureState.from_json(json.dumps(document))


def test_state_from_another_feature_set_is_refused() -> None:
    other = FeatureSet("other", [RawInput("x", InputType.FLOAT)])
    other.add(Feature("x2", FeatureKind.NUMERIC, ("x",), lambda raw, params: raw["x"] * 2))
    foreign = other.fit(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(FeatureError, match="not for feature set 'ctr'"):
        CTR_FEATURES.transform_record(request(), foreign)


def test_feature_reading_an_undeclared_input_fails_at_declaration() -> None:
    fs = FeatureSet("fs", [RawInput("x", InputType.FLOAT)])
    with pytest.raises(FeatureError, match=r"reads undeclared raw input\(s\) \['y'\]"):
        fs.add(Feature("bad", FeatureKind.NUMERIC, ("y",), lambda raw, params: raw["y"]))


def test_feature_reading_an_input_it_did_not_declare_fails_at_compute() -> None:
    fs = FeatureSet("fs", [RawInput("x", InputType.FLOAT), RawInput("y", InputType.FLOAT)])
    fs.add(Feature("sneaky", FeatureKind.NUMERIC, ("x",), lambda raw, params: raw["y"]))
    with pytest.raises(FeatureError, match="read raw input 'y' it does not declare"):
        fs.transform_record({"x": 1.0, "y": 2.0}, fs.fit(pd.DataFrame({"x": [1.0], "y": [2.0]})))


def test_group_defaults_cover_every_feature() -> None:
    defaults = CTR_FEATURES.group_defaults()
    assert set(defaults) == {"context", "history", "item"}
    assert sorted(n for group in defaults.values() for n in group) == sorted(CTR_FEATURES.features)
    assert defaults["history"] == {"clicks_7d": 0.0, "clicks_24h": 0.0}


def _one_feature_set(feature: Feature) -> tuple[FeatureSet, FeatureState]:
    """A set of one feature over a nullable float input ``x``, fitted on a trivial frame."""
    fs = FeatureSet("single", [RawInput("x", InputType.FLOAT, nullable=True)], [feature])
    return fs, fs.fit(pd.DataFrame({"x": [1.0]}))


def _big(raw: InputColumns, params: Params) -> np.ndarray[Any, Any]:
    # NaN where x is missing: the float-with-NaN result a numpy-style boolean computation produces.
    return np.where(raw["x"].isna(), np.nan, raw["x"] > 1)


def _bucket(raw: InputColumns, params: Params) -> pd.Series[Any]:
    # NaN where x is missing: np.floor passes it through, and str(nan) would be the category "nan".
    buckets: pd.Series[Any] = np.floor(raw["x"] / 10)
    return buckets


@pytest.mark.parametrize(
    ("kind", "compute"), [(FeatureKind.BOOLEAN, _big), (FeatureKind.CATEGORICAL, _bucket)]
)
def test_nan_from_a_non_nullable_boolean_or_categorical_feature_is_rejected_in_both_paths(
    kind: FeatureKind, compute: ComputeFn
) -> None:
    fs, fitted = _one_feature_set(Feature("f", kind, ("x",), compute))
    with pytest.raises(FeatureError, match="computed a null but the feature is not nullable") as batch:
        fs.transform_frame(pd.DataFrame({"x": [2.0, np.nan, 0.0]}), fitted)
    assert (batch.value.feature, batch.value.row) == ("f", 1)
    with pytest.raises(FeatureError, match="computed a null but the feature is not nullable") as online:
        fs.transform_record({"x": None}, fitted)
    assert online.value.feature == "f"


@pytest.mark.parametrize(
    ("kind", "compute", "expected"),
    [
        (FeatureKind.BOOLEAN, _big, [None, False, True]),
        (FeatureKind.CATEGORICAL, _bucket, [None, "0.0", "2.0"]),
    ],
)
def test_nan_from_a_nullable_boolean_or_categorical_feature_stays_null_in_both_paths(
    kind: FeatureKind, compute: ComputeFn, expected: list[Any]
) -> None:
    fs, fitted = _one_feature_set(Feature("f", kind, ("x",), compute, nullable=True))
    xs = [None, 0.0, 20.0]
    frame = fs.transform_frame(pd.DataFrame({"x": xs}), fitted)
    assert [fs.row_values(frame, i)["f"] for i in range(len(xs))] == expected
    assert [fs.transform_record({"x": x}, fitted)["f"] for x in xs] == expected


def test_state_file_without_content_hash_is_rejected(state: FeatureState) -> None:
    document = json.loads(state.to_json())
    del document["content_hash"]  # without this requirement, deleting the hash hid an edited value
    document["params"]["log_price"]["median"] = 0.5
    with pytest.raises(FeatureError, match="key 'content_hash' is missing"):
        FeatureState.from_json(json.dumps(document))
