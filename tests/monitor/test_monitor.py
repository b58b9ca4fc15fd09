"""One model's monitor on records with known problems: exact skew rates, defaults, unknown state, drift."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from features import FeatureKind
from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline, BaselineOptions, build_baseline
from skewguard.demo.traffic import TrafficShape, generate_requests, hour_in_utc_bug, serving_records
from skewguard.monitor import ModelMonitor, MonitorOptions
from skewguard.records import ServingBatch, ServingRecord
from skewguard.results import Check, Severity, WindowKey, WindowResult

START = dt.datetime(2026, 4, 6, tzinfo=dt.UTC)
KEY = WindowKey("ctr", START, START + dt.timedelta(minutes=5))
SEASONAL = frozenset({"hour_of_day_local", "day_of_week_local"})


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    train = generate_requests(30_000, seed=1, start=START - dt.timedelta(days=7), span=dt.timedelta(days=7))
    train["score"] = np.random.default_rng(2).beta(2, 5, len(train))

    def chunks() -> Iterator[pd.DataFrame]:
        yield train

    return build_baseline(
        CTR_FEATURES,
        chunks,
        model="ctr",
        prediction_column="score",
        options=BaselineOptions(window_size=2_000, calibration_draws=100),
    )


@pytest.fixture(scope="module")
def monitor(baseline: Baseline) -> ModelMonitor:
    return ModelMonitor(baseline, CTR_FEATURES, options=MonitorOptions(drift_exclude=SEASONAL))


def window(monitor: ModelMonitor, records: list[ServingRecord]) -> WindowResult:
    accumulator = monitor.new_accumulator()
    for start in range(0, len(records), 700):  # several polls' worth of batches
        monitor.fold(accumulator, records[start : start + 700])
    return monitor.judge(KEY, accumulator)


def scores(n: int, seed: int, a: float = 2.0) -> list[float]:
    return [float(v) for v in np.random.default_rng(seed).beta(a, 5, n)]


def test_clean_window_flags_nothing(monitor: ModelMonitor, baseline: Baseline) -> None:
    frame = generate_requests(3_000, seed=50, start=START, span=dt.timedelta(minutes=5))
    records = serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(3_000, 51))
    result = window(monitor, records)
    assert result.records == 3_000
    assert [f for f in result.findings if f.flagged] == []
    skew = {f.subject: f for f in result.findings if f.check is Check.SKEW}
    assert set(skew) == set(CTR_FEATURES.features)
    assert all(f.detail["compared"] == 3_000 and f.detail["mismatched"] == 0 for f in skew.values())


def test_timezone_bug_is_reported_with_its_exact_mismatch_rate(
    monitor: ModelMonitor, baseline: Baseline
) -> None:
    frame = generate_requests(3_000, seed=60, start=START, span=dt.timedelta(minutes=5))
    buggy = np.random.default_rng(61).random(3_000) < 0.3
    records = serving_records(
        frame,
        CTR_FEATURES,
        baseline.state,
        model="ctr",
        scores=scores(3_000, 62),
        bug=hour_in_utc_bug,
        bug_rows=buggy,
    )
    # Rows whose user is in UTC compute the same hour either way: only the others are real mismatches.
    truly_wrong = buggy & (frame["user_tz"] != "UTC").to_numpy()
    result = window(monitor, records)
    skew = {f.subject: f for f in result.findings if f.check is Check.SKEW}
    hour = skew["hour_of_day_local"]
    assert hour.flagged and hour.severity is Severity.CRITICAL
    assert hour.detail["mismatched"] == int(truly_wrong.sum())
    assert hour.effect == pytest.approx(truly_wrong.mean(), abs=0)
    assert set(hour.detail["examples"]) <= set(frame["request_id"][truly_wrong])
    assert [name for name, f in skew.items() if f.flagged] == ["hour_of_day_local"]


def test_defaulted_feature_group_is_flagged_above_its_rate(monitor: ModelMonitor, baseline: Baseline) -> None:
    frame = generate_requests(2_000, seed=70, start=START, span=dt.timedelta(minutes=5))
    records = serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(2_000, 71))
    defaults = CTR_FEATURES.group_defaults()["history"]
    for record in records[:300]:  # 15 % of requests: the history group timed out
        record.features.update(defaults)
        record.defaulted = list(defaults)
    result = window(monitor, records)
    found = {f.subject: f for f in result.findings if f.check is Check.DEFAULTS and f.flagged}
    assert set(found) == {"clicks_7d", "clicks_24h"}
    assert all(f.effect == pytest.approx(0.15) for f in found.values())
    # Every other feature that can default says so at rate 0, and a window whose defaults stopped
    # reports 0 for these too: an open alert is resolved only by an unflagged finding of its subject.
    others = [f for f in result.findings if f.check is Check.DEFAULTS and not f.flagged]
    assert {f.subject for f in others} == set(CTR_FEATURES.features) - {"clicks_7d", "clicks_24h"}
    assert all(f.effect == 0.0 for f in others)
    clean = window(
        monitor, serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(2_000, 71))
    )
    recovered = {f.subject: f for f in clean.findings if f.check is Check.DEFAULTS}
    assert not recovered["clicks_24h"].flagged and recovered["clicks_24h"].effect == 0.0
    (state,) = [f for f in clean.findings if f.check is Check.UNKNOWN_STATE]
    assert not state.flagged  # likewise the unknown-hash check, when every hash is known
    # Defaulted values are not compared in the replay: no false skew from the fallback.
    assert not any(f.flagged for f in result.findings if f.check is Check.SKEW)


def test_names_a_serving_bug_makes_up_mint_no_findings_without_bound(
    monitor: ModelMonitor, baseline: Baseline
) -> None:
    # Each defaulted name and shadow version becomes a finding's subject, an alert key and a /metrics
    # series (and a PostgreSQL VARCHAR(250)): made-up ones (a request id, 300 characters) minted them
    # without bound, and one too long wedged every checkpoint on PostgreSQL.
    frame = generate_requests(600, seed=72, start=START, span=dt.timedelta(minutes=5))
    records = serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(600, 73))
    for i, record in enumerate(records):
        record.defaulted = ["clicks_24h", f"req-{i}", "x" * 300]
        record.shadow_predictions = {f"v{i % 40:02d}": 0.5, "y" * 300: 0.5}
    accumulator = monitor.new_accumulator()
    for start in range(0, len(records), 100):
        batch = records[start : start + 100]
        monitor.fold(accumulator, batch)
        monitor.fold_shadow(accumulator, ServingBatch.from_records(batch))
    assert set(accumulator.defaulted) == {"clicks_24h"}
    assert len(accumulator.shadow) == 16 and all(len(version) <= 200 for version in accumulator.shadow)
    subjects = {f.subject for f in monitor.judge(KEY, accumulator).findings}
    assert max(map(len, subjects)) <= 200 and not any(s.startswith("req-") for s in subjects)


def test_unknown_feature_state_is_itself_a_finding(monitor: ModelMonitor, baseline: Baseline) -> None:
    frame = generate_requests(500, seed=80, start=START, span=dt.timedelta(minutes=5))
    records = serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(500, 81))
    records = [
        dataclasses.replace(r, feature_state_hash="f" * 64) if i < 50 else r for i, r in enumerate(records)
    ]
    result = window(monitor, records)
    unknown = [f for f in result.findings if f.check is Check.UNKNOWN_STATE]
    assert len(unknown) == 1
    assert unknown[0].flagged and unknown[0].effect == pytest.approx(0.1)
    assert unknown[0].detail["hashes"] == {"f" * 64: 50}


def test_category_drift_and_prediction_drift_are_flagged(monitor: ModelMonitor, baseline: Baseline) -> None:
    weights = 1.0 / np.arange(1, 25)
    weights[10:] *= 8  # rare categories become common
    frame = generate_requests(
        3_000,
        seed=90,
        start=START,
        span=dt.timedelta(minutes=5),
        shape=TrafficShape(category_weights=weights),
    )
    records = serving_records(
        frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(3_000, 91, a=4.0)
    )
    result = window(monitor, records)
    flagged = {(f.check, f.subject) for f in result.findings if f.flagged}
    assert flagged == {(Check.DRIFT, "category"), (Check.PREDICTION_DRIFT, "prediction")}


def test_span_drift_compares_with_the_previous_window(monitor: ModelMonitor, baseline: Baseline) -> None:
    frame = generate_requests(3_000, seed=95, start=START, span=dt.timedelta(minutes=5))
    previous = monitor.new_accumulator()
    monitor.fold(
        previous, serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores(3_000, 96))
    )
    shifted = frame.assign(ad_position=np.minimum(frame["ad_position"] + 3, 10))
    current = monitor.new_accumulator()
    monitor.fold(
        current, serving_records(shifted, CTR_FEATURES, baseline.state, model="ctr", scores=scores(3_000, 97))
    )
    result = monitor.judge(KEY, current, previous.profile)
    span = {f.subject for f in result.findings if f.check is Check.SPAN_DRIFT and f.flagged}
    assert span == {"ad_position"}
    assert pd.notna(result.records)


def test_a_feature_that_is_infinite_on_both_sides_is_not_skew(monitor: ModelMonitor) -> None:
    """The codec logs ±inf as null (JSON has none), so a replayed ±inf must read as null too.

    Otherwise a feature that is legitimately -inf (log of 0) counted as a mismatch at every request,
    with an infinite largest difference.
    """
    name = next(n for n, f in CTR_FEATURES.features.items() if f.kind is FeatureKind.NUMERIC)
    replayed = pd.Series([-np.inf, np.inf, 2.0, 3.0])
    mismatched, largest = monitor._mismatches(name, [None, None, 2.0, 4.0], replayed, np.ones(4, dtype=bool))
    assert mismatched.tolist() == [False, False, False, True] and largest == 1.0
