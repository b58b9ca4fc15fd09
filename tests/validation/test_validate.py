"""GX suites generated from feature declarations catch each kind of bad data, reported by column."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import FeatureState
from features.ctr import CTR_FEATURES
from skewguard.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE, app
from skewguard.demo.traffic import generate_requests
from skewguard.validation import SuiteTarget, build_suite, validate_frame

runner = CliRunner()
FEATURES = "features.ctr:CTR_FEATURES"


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return generate_requests(300, seed=7, start=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def state(raw: pd.DataFrame) -> FeatureState:
    return CTR_FEATURES.fit(raw)


@pytest.fixture(scope="module")
def computed(raw: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
    return CTR_FEATURES.transform_frame(raw, state)


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_clean_feature_table_passes(computed: pd.DataFrame, state: FeatureState, tmp_path: Path) -> None:
    data = tmp_path / "features.parquet"
    computed.to_parquet(data)
    state_file = tmp_path / "state.json"
    state_file.write_text(state.to_json())
    code, out = _run("validate", "--features", FEATURES, "--data", str(data), "--state", str(state_file))
    assert code == EXIT_OK, out
    assert "clean" in out


def test_each_kind_of_violation_is_reported_by_column(computed: pd.DataFrame, state: FeatureState) -> None:
    bad = computed.copy()
    bad["log_price"] = bad["log_price"].astype(object)
    bad.loc[3, "log_price"] = "cheap"  # wrong type
    bad.loc[5, "hour_of_day_local"] = 25.0  # out of range
    bad.loc[7, "device"] = "smart-tv"  # unknown category
    bad["ad_position"] = bad["ad_position"].astype(object)
    bad.loc[9, "ad_position"] = None  # null in a non-nullable feature
    report = validate_frame(bad, build_suite(CTR_FEATURES, SuiteTarget.FEATURES, state))
    found = {(v.column, v.expectation) for v in report.violations}
    assert found >= {
        ("log_price", "expect_column_values_to_be_in_type_list"),
        ("hour_of_day_local", "expect_column_values_to_be_between"),
        ("device", "expect_column_values_to_be_in_set"),
        ("ad_position", "expect_column_values_to_not_be_null"),
    }
    # A text value in a numeric column also fails its range check; nothing else is flagged.
    assert found - {("log_price", "expect_column_values_to_be_between")} == {
        ("log_price", "expect_column_values_to_be_in_type_list"),
        ("hour_of_day_local", "expect_column_values_to_be_between"),
        ("device", "expect_column_values_to_be_in_set"),
        ("ad_position", "expect_column_values_to_not_be_null"),
    }
    by_column = {v.column: v for v in report.violations}
    assert by_column["hour_of_day_local"].examples == (25.0,)
    assert by_column["device"].examples == ("smart-tv",)
    assert by_column["ad_position"].unexpected_count == 1


def test_cli_prints_violations_and_exits_1(computed: pd.DataFrame, tmp_path: Path) -> None:
    bad = computed.copy()
    bad.loc[2, "hour_of_day_local"] = -1.0
    bad.loc[4, "device"] = "fridge"
    data = tmp_path / "bad.csv"
    bad.to_csv(data, index=False)
    code, out = _run("validate", "--features", FEATURES, "--data", str(data))
    assert code == EXIT_FINDING, out
    assert "hour_of_day_local" in out and "-1.0" in out
    assert "device" in out and "fridge" in out


def test_unknown_category_needs_the_fitted_vocabulary(
    computed: pd.DataFrame, state: FeatureState, tmp_path: Path
) -> None:
    bad = computed.copy()
    bad.loc[1, "category"] = "not-in-training"
    with_state = validate_frame(bad, build_suite(CTR_FEATURES, SuiteTarget.FEATURES, state))
    assert [(v.column, v.examples) for v in with_state.violations] == [("category", ("not-in-training",))]
    without_state = validate_frame(bad, build_suite(CTR_FEATURES, SuiteTarget.FEATURES))
    assert without_state.ok


def test_raw_csv_with_naive_timestamp_and_bad_values(raw: pd.DataFrame, tmp_path: Path) -> None:
    frame = raw.drop(columns=["request_id", "click"]).head(50).copy()
    frame["click_times"] = frame["click_times"].map(lambda ts: json.dumps([t.isoformat() for t in ts]))
    frame["event_time"] = frame["event_time"].map(lambda t: t.isoformat())
    frame.loc[10, "event_time"] = "2026-02-01T10:00:00"  # naive
    frame.loc[11, "price"] = -5.0  # below the declared low
    frame.loc[12, "device"] = "watch"  # outside the allowed devices
    data = tmp_path / "raw.csv"
    frame.to_csv(data, index=False)
    code, out = _run("validate", "--features", FEATURES, "--data", str(data))
    assert code == EXIT_FINDING, out
    for needle in ("event_time", "naive", "price", "device", "watch"):
        assert needle in out, needle


def test_clean_raw_csv_passes(raw: pd.DataFrame, tmp_path: Path) -> None:
    frame = raw.drop(columns=["request_id", "click"]).head(50).copy()
    frame["click_times"] = frame["click_times"].map(lambda ts: json.dumps([t.isoformat() for t in ts]))
    data = tmp_path / "raw.csv"
    frame.to_csv(data, index=False)
    code, out = _run("validate", "--features", FEATURES, "--data", str(data))
    assert code == EXIT_OK, out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--features", "features.ctr:NOPE"], "has no attribute"),
        (["--features", "no_such_module:X"], "cannot import module"),
        (["--features", "features.ctr"], "must look like"),
        (["--features", "features.ctr:DEVICES"], "expected a FeatureSet"),
    ],
)
def test_usage_errors_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    pd.DataFrame({"a": [1]}).to_csv(data, index=False)
    code, out = _run("validate", *args, "--data", str(data))
    assert code == EXIT_USAGE
    assert needle in out


def test_missing_file_and_unrelated_columns_exit_2(tmp_path: Path) -> None:
    code, out = _run("validate", "--features", FEATURES, "--data", str(tmp_path / "none.csv"))
    assert (code, "does not exist" in out) == (EXIT_USAGE, True)
    data = tmp_path / "other.csv"
    pd.DataFrame({"a": np.arange(3)}).to_csv(data, index=False)
    code, out = _run("validate", "--features", FEATURES, "--data", str(data))
    assert code == EXIT_USAGE
    assert "matches neither" in out


def test_raw_parquet_with_aware_datetime_columns_is_clean(raw: pd.DataFrame, tmp_path: Path) -> None:
    frame = raw.drop(columns=["request_id", "click"]).head(80)
    assert isinstance(frame["event_time"].dtype, pd.DatetimeTZDtype)
    data = tmp_path / "raw.parquet"
    frame.to_parquet(data)
    code, out = _run("validate", "--features", FEATURES, "--data", str(data))
    assert code == EXIT_OK, out
