"""Baseline build: constant-memory chunking gives the same baseline; held-out blocks stay out of it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline, BaselineOptions, PredictionKind, build_baseline
from skewguard.cli import EXIT_OK, EXIT_USAGE, app
from skewguard.demo.traffic import generate_requests
from skewguard.errors import DataError
from skewguard.stats import NumericColumnLayout

OPTIONS = BaselineOptions(window_size=1000, fit_rows=5000, calibration_draws=50)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    frame = generate_requests(
        12_000, seed=11, start=dt.datetime(2026, 3, 2, tzinfo=dt.UTC), span=dt.timedelta(days=2)
    )
    frame["score"] = np.random.default_rng(3).beta(2, 5, len(frame))
    return frame


def chunked(frame: pd.DataFrame, size: int) -> Callable[[], Iterator[pd.DataFrame]]:
    def chunks() -> Iterator[pd.DataFrame]:
        for start in range(0, len(frame), size):
            yield frame.iloc[start : start + size]

    return chunks


def build(frame: pd.DataFrame, size: int) -> Baseline:
    return build_baseline(
        CTR_FEATURES,
        chunked(frame, size),
        model="ctr",
        prediction_column="score",
        label_column="click",
        options=OPTIONS,
    )


def test_chunk_size_does_not_change_the_baseline(raw: pd.DataFrame) -> None:
    small, whole = build(raw, 1_700), build(raw, len(raw))
    assert small.state_hash == whole.state_hash
    assert small.profile.equals(whole.profile, rtol=1e-12)
    # Thresholds agree to float precision (the profiles' moments are merged in a different order).
    a, b = small.calibration.to_dict(), whole.calibration.to_dict()
    assert [c["column"] for c in a["constants"]] == [c["column"] for c in b["constants"]]
    assert [c["constant"] for c in a["constants"]] == pytest.approx(
        [c["constant"] for c in b["constants"]], rel=1e-12
    )


def test_held_out_blocks_are_not_in_the_reference(raw: pd.DataFrame) -> None:
    baseline = build(raw, 5_000)
    # Blocks of 1,000 rows, every 5th held out: 12 blocks → blocks 4 and 9 held out.
    assert baseline.holdout_rows == 2_000
    assert baseline.rows == baseline.profile.rows == len(raw) - 2_000
    counts = baseline.profile.categorical("label")
    assert counts.total == len(raw) - 2_000


def test_no_row_is_left_out_of_both_the_reference_and_the_holdout(raw: pd.DataFrame) -> None:
    # 12 blocks of 1,000 rows, every 2nd held out at most, but room for 1,500 held-out rows only: the
    # held blocks are spaced to span the file, and what the cap leaves out is folded into the reference.
    options = BaselineOptions(
        window_size=1000, fit_rows=5000, calibration_draws=20, holdout_every=2, holdout_rows=1500
    )
    baseline = build_baseline(
        CTR_FEATURES, chunked(raw, 5_000), model="ctr", prediction_column="score", options=options
    )
    assert baseline.holdout_rows == 1500
    assert baseline.rows == baseline.profile.rows == len(raw) - 1500


@pytest.mark.parametrize(
    ("extra_rows", "holdout_rows", "held"),
    [(0, 1000, 1000), (2, 1000, 1000), (999, 1000, 1000), (0, 5000, 4000)],
)
def test_held_out_blocks_span_the_file_when_the_cap_would_stop_at_its_start(
    raw: pd.DataFrame, extra_rows: int, holdout_rows: int, held: int
) -> None:
    # Room for one held-out block of 12 whole ones: the last whole one, not the second (the oldest data
    # only), nor a partial block of the rows beyond the last whole one. Room for five: every third
    # block, the last whole one included (every second would fill the cap by the tenth block).
    marked = pd.concat([raw, raw.head(extra_rows)], ignore_index=True)
    marked.loc[marked.index[12_000:], "score"] = 0.5
    marked.loc[marked.index[11_000:12_000], "score"] = 2.0  # the last whole block's, above every other
    options = BaselineOptions(
        window_size=1000, fit_rows=5000, calibration_draws=20, holdout_every=2, holdout_rows=holdout_rows
    )
    baseline = build_baseline(
        CTR_FEATURES, chunked(marked, 5_000), model="ctr", prediction_column="score", options=options
    )
    assert baseline.holdout_rows == held
    assert baseline.profile.numeric("prediction").max < 2.0


def test_round_trip_through_a_directory(raw: pd.DataFrame, tmp_path: Path) -> None:
    baseline = build(raw, 6_000)
    baseline.save(tmp_path, CTR_FEATURES)
    loaded = Baseline.load(tmp_path)
    assert loaded.state == baseline.state
    assert loaded.profile == baseline.profile
    assert loaded.calibration.to_dict() == baseline.calibration.to_dict()
    assert loaded.prediction_kind is PredictionKind.SCORE
    suite = json.loads((tmp_path / "suite.features.json").read_text())
    assert {e["kwargs"]["column"] for e in suite["expectations"]} == set(CTR_FEATURES.features)


def test_a_baseline_with_ids_spelled_as_floats_loads_with_a_warning_to_rebuild_it(
    raw: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Releases before exact integer categories spelled ids above 2**53 as floats; serving no longer does."""
    build(raw, 6_000).save(tmp_path)
    assert "9007199254740992.0" not in (tmp_path / "profile.json").read_text()
    with caplog.at_level("WARNING", logger="skewguard.baseline.bundle"):
        Baseline.load(tmp_path)
    assert not caplog.records
    text = (tmp_path / "profile.json").read_text()
    assert '"mobile"' in text  # a category of the device column
    for old_spelling in ("9007199254740992.0", "1.2345678901234568e+18"):  # as numpy printed them
        (tmp_path / "profile.json").write_text(text.replace('"mobile"', f'"{old_spelling}"'))
        caplog.clear()
        with caplog.at_level("WARNING", logger="skewguard.baseline.bundle"):
            Baseline.load(tmp_path)
        (record,) = caplog.records
        assert old_spelling in record.getMessage() and "rebuild" in record.getMessage()
    for fine in ("9007199254740993", "1.5", "1e+3", "v1.0"):  # an exact id, small numbers, a name
        (tmp_path / "profile.json").write_text(text.replace('"mobile"', f'"{fine}"'))
        caplog.clear()
        with caplog.at_level("WARNING", logger="skewguard.baseline.bundle"):
            Baseline.load(tmp_path)
        assert not caplog.records, fine


def test_tampered_state_is_refused_on_load(raw: pd.DataFrame, tmp_path: Path) -> None:
    build(raw, 6_000).save(tmp_path)
    meta = json.loads((tmp_path / "baseline.json").read_text())
    meta["feature_state_hash"] = "0" * 64
    (tmp_path / "baseline.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="does not match the hash"):
        Baseline.load(tmp_path)


def test_too_little_data_for_a_holdout_block_is_explained(raw: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="too little training data to hold out a block"):
        build_baseline(
            CTR_FEATURES,
            chunked(raw.head(3_000), 3_000),
            model="ctr",
            options=BaselineOptions(window_size=1000),
        )


def test_cli_builds_from_parquet_with_progress(raw: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "train.parquet"
    raw.to_parquet(data)
    out = tmp_path / "baseline"
    result = CliRunner().invoke(
        app,
        [
            "baseline", "build", "--features", "features.ctr:CTR_FEATURES", "--data", str(data),
            "--out", str(out), "--model", "ctr", "--prediction-column", "score", "--label-column", "click",
            "--window-size", "1000", "--chunk-rows", "4000", "--fit-rows", "5000",
        ],
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert "pass 2/2: profiling" in result.output
    assert Baseline.load(out).rows == len(raw) - 2_000


def test_cli_names_a_missing_prediction_column(raw: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "train.parquet"
    raw.head(3_000).to_parquet(data)
    result = CliRunner().invoke(
        app,
        [
            "baseline", "build", "--features", "features.ctr:CTR_FEATURES", "--data", str(data),
            "--out", str(tmp_path / "b"), "--model", "ctr", "--prediction-column", "nope",
        ],
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "no column 'nope'" in result.output


def test_cli_stores_the_holdout_metrics_the_daemon_compares_with(raw: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "train.parquet"
    raw.to_parquet(data)
    common = [
        "baseline", "build", "--features", "features.ctr:CTR_FEATURES", "--data", str(data),
        "--model", "ctr", "--prediction-column", "score", "--label-column", "click",
        "--window-size", "1000", "--fit-rows", "5000",
    ]  # fmt: skip
    out = tmp_path / "baseline"
    given = ["--metric", "auc=0.81+-0.006", "--metric", "log_loss=0.45", "--metric", "accuracy=0.7±0.01"]
    result = CliRunner().invoke(app, [*common, "--out", str(out), *given])
    assert result.exit_code == EXIT_OK, result.output
    loaded = Baseline.load(out)
    assert loaded.metrics == {"auc": 0.81, "log_loss": 0.45, "accuracy": 0.7}
    # The standard errors given; a metric given without one is exact (none stored).
    assert loaded.metric_errors == {"auc": 0.006, "accuracy": 0.01}
    # A standard error edited into something that is not one is named on load (NaN would switch the
    # metric's check off silently).
    meta_path = out / "baseline.json"
    meta = json.loads(meta_path.read_text())
    meta["metric_errors"]["auc"] = float("nan")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"metric_errors\['auc'\] is nan; expected a number >= 0"):
        Baseline.load(out)
    meta["metric_errors"]["auc"] = 0.006
    meta["metrics"]["auc"] = float("nan")  # likewise a metric
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"metrics\['auc'\] is nan; expected a number$"):
        Baseline.load(out)
    del meta["rows"]  # a key gone is named, not a KeyError
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"baseline.json lacks the key 'rows'"):
        Baseline.load(out)
    # A metric the model's kind does not have, or a value or error that is not a number, is named.
    for bad in ("rmse=0.2", "auc=high", "auc", "auc=0.8+-", "auc=0.8+-x"):
        result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--metric", bad])
        assert result.exit_code == EXIT_USAGE
        assert f"--metric {bad!r}" in result.output and "'auc', 'log_loss', 'accuracy'" in result.output
    for bad, why in (
        ("auc=81", "a share in [0, 1]"),
        ("log_loss=-0.1", "a loss or error >= 0"),
        ("auc=0.8+--0.1", "standard error after +- must be >= 0"),
    ):
        result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--metric", bad])
        assert result.exit_code == EXIT_USAGE and why in result.output, result.output


def test_a_numeric_column_with_no_value_in_the_fit_sample_is_named_in_a_warning(
    raw: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    # Bins are fitted on the fit_rows sample: a prediction null in every sampled row but not in the
    # data gets a placeholder bin (its binned tests see little), which the build says.
    sparse = raw.copy()
    sparse["score"] = np.nan
    sparse.loc[sparse.index[-5:], "score"] = 0.5  # the sample's uniform draw misses them (seed 0)
    options = BaselineOptions(window_size=1000, fit_rows=500, calibration_draws=20)
    with caplog.at_level("WARNING", logger="skewguard.baseline.bundle"):
        baseline = build_baseline(
            CTR_FEATURES, chunked(sparse, 5_000), model="ctr", prediction_column="score", options=options
        )
    column = baseline.profile.layout.column("prediction")
    assert isinstance(column, NumericColumnLayout) and column.fitted_without_values
    assert baseline.profile.numeric("prediction").count == 5
    assert any(
        "column 'prediction' has 5 values, but none in the sample" in r.message for r in caplog.records
    )
