"""Batch/online parity: row i of transform_frame equals transform_record of request i, exactly."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FeatureError, FeatureState
from features.ctr import CTR_FEATURES
from tests.features.strategies import ctr_request


@pytest.fixture(scope="module")
def fitted_state() -> FeatureState:
    # Fitted on a fixed frame that lacks "brand-new-category", so the unseen path is exercised too.
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "event_time": start + dt.timedelta(hours=i),
            "user_tz": "Europe/Berlin",
            "click_times": [start],
            "price": None if i % 5 == 0 else float(i),
            "category": ["shoes", "books", "toys"][i % 3],
            "device": "mobile",
            "ad_position": 1 + i % 10,
        }
        for i in range(50)
    ]
    return CTR_FEATURES.fit(pd.DataFrame(rows))


def _same(a: Any, b: Any) -> bool:
    """Exact equality that treats two nulls as equal and keeps float bits (no tolerance)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(ctr_request(), min_size=1, max_size=6))
def test_frame_row_equals_record_exactly(requests: list[dict[str, Any]], fitted_state: FeatureState) -> None:
    frame = CTR_FEATURES.transform_frame(pd.DataFrame(requests), fitted_state)
    for position, request in enumerate(requests):
        online = CTR_FEATURES.transform_record(request, fitted_state)
        batch = CTR_FEATURES.row_values(frame, position)
        assert online.keys() == batch.keys()
        for name in online:
            assert _same(online[name], batch[name]), (name, online[name], batch[name], request)


@settings(max_examples=100, deadline=None)
@given(request=ctr_request(), where=st.sampled_from(["event_time", "click_times"]))
def test_naive_timestamps_are_rejected_in_both_paths(
    request: dict[str, Any], where: str, fitted_state: FeatureState
) -> None:
    naive = request["event_time"].replace(tzinfo=None)
    if where == "event_time":
        request["event_time"] = naive
    else:
        request["click_times"] = [*request["click_times"], naive]
    with pytest.raises(FeatureError, match="naive") as online:
        CTR_FEATURES.transform_record(request, fitted_state)
    assert online.value.input == where
    with pytest.raises(FeatureError, match="naive") as batch:
        CTR_FEATURES.transform_frame(pd.DataFrame([request]), fitted_state)
    assert batch.value.input == where


def test_timestamps_beyond_nanosecond_range_are_a_feature_error_naming_the_input(
    fitted_state: FeatureState,
) -> None:
    request = {
        "event_time": "2300-01-01T00:00:00+00:00",
        "user_tz": "UTC",
        "click_times": [],
        "price": 1.0,
        "category": "books",
        "device": "mobile",
        "ad_position": 1,
    }
    with pytest.raises(FeatureError, match="outside the timestamps") as online:
        CTR_FEATURES.transform_record(request, fitted_state)
    assert online.value.input == "event_time"
    frame = pd.DataFrame([request])
    frame["event_time"] = pd.Series([dt.datetime(2300, 1, 1, tzinfo=dt.UTC)]).astype("datetime64[us, UTC]")
    with pytest.raises(FeatureError, match="outside the timestamps") as batch:
        CTR_FEATURES.transform_frame(frame, fitted_state)
    assert batch.value.input == "event_time"


def test_naive_datetime64_column_is_rejected(fitted_state: FeatureState) -> None:
    frame = pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2026-01-01 10:00"]),
            "user_tz": ["UTC"],
            "click_times": [[]],
            "price": [1.0],
            "category": ["books"],
            "device": ["mobile"],
            "ad_position": [1],
        }
    )
    with pytest.raises(FeatureError, match="naive timestamps rejected") as err:
        CTR_FEATURES.transform_frame(frame, fitted_state)
    assert err.value.input == "event_time"


def _request_with_clicks(clicks: Any) -> dict[str, Any]:
    return {
        "event_time": dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC),
        "user_tz": "UTC",
        "click_times": clicks,
        "price": 1.0,
        "category": "books",
        "device": "mobile",
        "ad_position": 1,
    }


def test_one_element_array_history_gives_the_same_features_in_both_paths(fitted_state: FeatureState) -> None:
    click = dt.datetime(2026, 6, 15, 11, tzinfo=dt.UTC)
    request = _request_with_clicks(np.array([click], dtype=object))
    online = CTR_FEATURES.transform_record(request, fitted_state)
    batch = CTR_FEATURES.row_values(CTR_FEATURES.transform_frame(pd.DataFrame([request]), fitted_state), 0)
    assert online["clicks_24h"] == batch["clicks_24h"] == 1.0
    assert online == batch


@pytest.mark.parametrize(
    ("clicks", "pattern"),
    [
        (np.array(["2026-06-15T11:00"], dtype="datetime64[ns]"), "naive numpy datetime64"),
        (np.array(dt.datetime(2026, 6, 15, 11, tzinfo=dt.UTC), dtype=object), "got a 0-d array"),
    ],
)
def test_malformed_array_history_is_a_feature_error_naming_the_input_in_both_paths(
    clicks: np.ndarray[Any, Any], pattern: str, fitted_state: FeatureState
) -> None:
    request = _request_with_clicks(clicks)
    with pytest.raises(FeatureError, match=pattern) as online:
        CTR_FEATURES.transform_record(request, fitted_state)
    assert online.value.input == "click_times"
    with pytest.raises(FeatureError, match=pattern) as batch:
        CTR_FEATURES.transform_frame(pd.DataFrame([request]), fitted_state)
    assert batch.value.input == "click_times"
