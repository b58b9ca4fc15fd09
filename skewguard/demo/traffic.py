"""Synthetic click-through-rate traffic with a known ground truth, for the demo, tests and benchmarks.

Requests follow ``features.ctr``'s raw inputs; the click label is drawn from a fixed logistic model of
those inputs, so a model can learn it and a monitor can tell real drift from noise. Every knob that the
demo later turns (category mix, missing-price rate, timezones) is an argument, so a drifted stream is the
same generator with other arguments, not another code path.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import FeatureSet, FeatureState
from features.ctr import CTR_FEATURES, DEVICES
from skewguard.baseline import Baseline, BaselineOptions, build_baseline
from skewguard.io.kafka import KafkaSettings, RawProducer, group_by_partition
from skewguard.labels.performance import auc
from skewguard.records import ServingRecord, encode_records

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "UTC")
CATEGORIES = tuple(f"cat_{i:02d}" for i in range(24))


@dataclass(frozen=True)
class TrafficShape:
    """The distribution of generated requests; the defaults are the training world."""

    zones: Sequence[str] = ZONES
    zone_weights: Sequence[float] = (0.3, 0.3, 0.2, 0.1, 0.1)
    categories: Sequence[str] = CATEGORIES
    #: Zipf-like category popularity; drift demos reweight this.
    category_weights: Sequence[float] | np.ndarray[Any, Any] | None = None
    devices: Sequence[str] = DEVICES
    device_weights: Sequence[float] = (0.45, 0.45, 0.10)
    price_log_mean: float = 3.0
    price_log_sd: float = 1.0
    missing_price_rate: float = 0.05
    clicks_per_week: float = 3.0
    extra: dict[str, float] = field(default_factory=dict)

    def category_probabilities(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Normalised category weights (Zipf over the category list by default)."""
        weights = (
            np.asarray(self.category_weights, dtype=float)
            if self.category_weights is not None
            else 1.0 / np.arange(1, len(self.categories) + 1)
        )
        normalised: np.ndarray[Any, np.dtype[np.float64]] = weights / weights.sum()
        return normalised


def generate_requests(
    n: int,
    *,
    seed: int,
    start: dt.datetime,
    span: dt.timedelta = dt.timedelta(days=1),
    shape: TrafficShape | None = None,
) -> pd.DataFrame:
    """Generate ``n`` raw CTR requests over ``[start, start + span)``, with ids and true click labels.

    Columns: ``request_id``, the raw inputs of ``features.ctr``, and ``click`` (0/1).
    """
    if start.tzinfo is None:
        msg = "start must be timezone-aware"
        raise ValueError(msg)
    shape = shape or TrafficShape()
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, span.total_seconds(), n))
    start_ns = pd.Timestamp(start).tz_convert("UTC").value
    # Microsecond precision, like the serving log (ISO-8601 timestamps carry microseconds).
    event_ns = start_ns + (offsets * 1e6).astype("int64") * 1000
    event_time = pd.to_datetime(event_ns, unit="ns", utc=True)
    zone_p = np.asarray(shape.zone_weights, dtype=float)
    zones = rng.choice(np.asarray(shape.zones, dtype=object), size=n, p=zone_p / zone_p.sum())
    categories = rng.choice(
        np.asarray(shape.categories, dtype=object), size=n, p=shape.category_probabilities()
    )
    device_p = np.asarray(shape.device_weights, dtype=float)
    devices = rng.choice(np.asarray(shape.devices, dtype=object), size=n, p=device_p / device_p.sum())
    prices = np.exp(rng.normal(shape.price_log_mean, shape.price_log_sd, n)).round(2)
    price = pd.Series(prices, dtype="float64")
    price[rng.random(n) < shape.missing_price_rate] = np.nan
    positions = rng.integers(1, 11, n)
    n_clicks = rng.poisson(shape.clicks_per_week * 1.5, n)
    week_ns = 7 * 86_400 * 10**9
    # One vectorised draw for all histories, then split per request (as lists of aware Timestamps).
    owners = np.repeat(np.arange(n), n_clicks)
    ago = rng.uniform(0, 1.5 * week_ns / 1000, int(n_clicks.sum())).astype("int64") * 1000
    stamps = np.asarray(pd.to_datetime(event_ns[owners] - ago - 1000, unit="ns", utc=True), dtype=object)
    click_times = [chunk.tolist() for chunk in np.split(stamps, np.cumsum(n_clicks)[:-1])]
    frame = pd.DataFrame(
        {
            "request_id": [f"req-{seed}-{i}" for i in range(n)],
            "event_time": event_time,
            "user_tz": zones,
            "click_times": click_times,
            "price": price,
            "category": categories,
            "device": devices,
            "ad_position": positions,
        }
    )
    frame["click"] = _draw_clicks(frame, n_clicks, rng)
    return frame


def _draw_clicks(
    frame: pd.DataFrame, n_clicks: np.ndarray[Any, Any], rng: np.random.Generator
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The ground truth: a fixed logistic model a CTR model can learn (position, recency, hour, device)."""
    local_hour = np.zeros(len(frame))
    for zone in frame["user_tz"].unique():
        mask = (frame["user_tz"] == zone).to_numpy()
        local_hour[mask] = frame.loc[mask, "event_time"].dt.tz_convert(zone).dt.hour.to_numpy()
    evening = ((local_hour >= 18) & (local_hour <= 23)).astype(float)
    mobile = (frame["device"] == "mobile").to_numpy(dtype=float)
    category_rank = frame["category"].str.slice(4).astype(int).to_numpy()
    logit = (
        -1.2
        - 0.25 * frame["ad_position"].to_numpy()
        + 0.35 * np.minimum(n_clicks, 8)
        + 0.9 * evening
        + 0.4 * mobile
        - 0.05 * category_rank
    )
    clicks: np.ndarray[Any, np.dtype[np.int64]] = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(
        "int64"
    )
    return clicks


def raw_inputs_json(row: Mapping[Any, Any], names: Sequence[str]) -> dict[str, Any]:
    """One request's raw inputs as the JSON a serving log carries (timestamps as ISO-8601 with offset)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, list | tuple | np.ndarray):
            return [plain(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return None if math.isnan(value) else float(value)
        return value

    return {name: plain(row[name]) for name in names}


def hour_in_utc_bug(features: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """A "hotfixed" serving path that computes the hour of day in UTC instead of the user's timezone."""
    event = pd.Timestamp(raw["event_time"]).tz_convert("UTC")
    return features | {"hour_of_day_local": float(event.hour)}


def serving_records(
    frame: pd.DataFrame,
    feature_set: FeatureSet,
    state: FeatureState,
    *,
    model: str,
    model_version: str = "v1",
    scores: Sequence[float] | None = None,
    with_raw: bool = True,
    bug: Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]] | None = None,
    bug_rows: Sequence[bool] | np.ndarray[Any, Any] | None = None,
) -> list[ServingRecord]:
    """Serving-log records for the requests in ``frame``, as a serving handler would log them.

    Features come from ``feature_set.transform_frame`` (the same code serving runs); ``bug`` rewrites the
    features of the rows selected by ``bug_rows`` (all rows when None) to simulate a serving path that
    computes a feature differently.
    """
    features = feature_set.transform_frame(frame, state)
    names = list(feature_set.inputs)
    rows = frame.to_dict("records")
    out: list[ServingRecord] = []
    for position, row in enumerate(rows):
        values = feature_set.row_values(features, position)
        raw = raw_inputs_json(row, names)
        if bug is not None and (bug_rows is None or bug_rows[position]):
            values = bug(values, raw)
        out.append(
            ServingRecord(
                request_id=str(row["request_id"]),
                event_time=pd.Timestamp(row["event_time"]).to_pydatetime(),
                model=model,
                model_version=model_version,
                feature_state_hash=state.content_hash,
                features=values,
                prediction=float(scores[position]) if scores is not None else 0.5,
                raw_inputs=raw if with_raw else None,
            )
        )
    return out


def ctr_baseline(
    *,
    rows: int,
    seed: int,
    end: dt.datetime,
    window_size: int,
    calibration_draws: int,
    scores: Callable[[pd.DataFrame], np.ndarray[Any, Any]] | None = None,
    with_label: bool = False,
) -> Baseline:
    """A CTR baseline built from a week of generated training traffic ending at ``end``.

    ``scores(train)`` gives the model's training scores (default: Beta(2, 5) noise seeded ``seed + 1``);
    ``with_label`` also profiles the click label and records the training AUC as the holdout metric.
    """
    train = generate_requests(rows, seed=seed, start=end - dt.timedelta(days=7), span=dt.timedelta(days=7))
    train["score"] = scores(train) if scores is not None else np.random.default_rng(seed + 1).beta(2, 5, rows)
    metrics = (
        {"auc": auc(train["score"].to_numpy(), train["click"].to_numpy().astype(float))} if with_label else {}
    )
    return build_baseline(
        CTR_FEATURES,
        lambda: iter([train]),
        model="ctr",
        prediction_column="score",
        label_column="click" if with_label else None,
        options=BaselineOptions(window_size=window_size, calibration_draws=calibration_draws),
        metrics=metrics,
    )


def produce_records(
    bootstrap: str, topic: str, records: Sequence[ServingRecord], *, batch: int = 100
) -> None:
    """Write records as batch envelopes on the partition their request ids hash to.

    As ServingLogger does, so the serving log stays co-partitioned with labels keyed by request id.
    """
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        partitions = len(producer.partitions_for(topic))
        groups = group_by_partition(records, lambda record: record.request_id, partitions)
        for partition, members in sorted(groups.items()):
            for start in range(0, len(members), batch):
                producer.send(topic, encode_records(members[start : start + batch]), partition=partition)
        producer.flush(60)
    finally:
        producer.close(5)
