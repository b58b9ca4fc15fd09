"""Shared pieces of the daemon tests: a CTR baseline, traffic in windows, producing, stepping."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline
from skewguard.bench.scale import spawn_monitor
from skewguard.daemon import MonitorDaemon
from skewguard.demo.traffic import ctr_baseline, generate_requests, produce_records, serving_records
from skewguard.io.kafka import (
    DeadLetter,
    KafkaSettings,
    RawConsumer,
    RawMessage,
    RawProducer,
    TopicPartition,
    read_dead_letter,
)
from skewguard.records import ServingRecord, encode_records
from skewguard.results import WindowResult
from skewguard.settings import MonitorSettings, load_settings
from skewguard.store import Store

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(seconds=60)
SEASONAL = ["hour_of_day_local", "day_of_week_local"]


def build_ctr_baseline(directory: Path) -> Baseline:
    baseline = ctr_baseline(rows=24_000, seed=1, end=T0, window_size=1_500, calibration_draws=100)
    baseline.save(directory, CTR_FEATURES)
    return baseline


def window_records(
    baseline: Baseline, index: int, n: int, *, seed: int, **kwargs: Any
) -> list[ServingRecord]:
    """``n`` records whose event times fall inside window ``index`` (windows of WINDOW from T0)."""
    start = T0 + index * WINDOW
    frame = generate_requests(
        n, seed=seed, start=start, span=WINDOW - dt.timedelta(seconds=1), **kwargs.pop("gen", {})
    )
    frame["request_id"] = [f"w{index}-{i}" for i in range(n)]
    scores = np.random.default_rng(seed + 1).beta(2, 5, n).tolist()
    return serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores, **kwargs)


def click_scores(clicks: np.ndarray[Any, Any], noise: float, seed: int) -> np.ndarray[Any, Any]:
    """Scores of a model that has learnt the clicks, up to Gaussian ``noise`` (clipped into (0, 1))."""
    rng = np.random.default_rng(seed)
    return np.clip(0.3 + 0.35 * clicks + rng.normal(0, noise, len(clicks)), 0.001, 0.999)


def produce(bootstrap: str, topic: str, records: Sequence[ServingRecord], *, batch: int = 50) -> None:
    produce_records(bootstrap, topic, records, batch=batch)


def produce_raw(
    bootstrap: str, topic: str, values: Sequence[bytes | None], *, partition_key: bytes = b"k"
) -> None:
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        for value in values:
            producer.send(topic, value, key=partition_key)
        producer.flush(30)
    finally:
        producer.close(5)


def produce_to_partitions(bootstrap: str, topic: str, parts: dict[int, Sequence[ServingRecord]]) -> None:
    """Each partition's records, in order, in 50-record envelopes sent to that partition explicitly."""
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        for partition, records in parts.items():
            for i in range(0, len(records), 50):
                producer.send(topic, encode_records(records[i : i + 50]), partition=partition)
        producer.flush(30)
    finally:
        producer.close(5)


def settings_for(
    bootstrap: str, baseline_dir: Path, store_url: str, *, partitions: int = 2, **overrides: Any
) -> MonitorSettings:
    suffix = uuid.uuid4().hex[:8]
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "profile": "local"},
        "group_id": f"sg-{suffix}",
        "topics": {
            "serving": f"serving-{suffix}",
            "labels": f"labels-{suffix}",
            "dead_letter": f"dead-{suffix}",
            "alerts": f"alerts-{suffix}",
            "create_partitions": partitions,
        },
        "store": {"url": store_url},
        "window": {"size_s": WINDOW.total_seconds(), "lateness_s": 5.0, "idle_timeout_s": 3600.0},
        "models": [{"name": "ctr", "baseline": str(baseline_dir), "features": "features.ctr:CTR_FEATURES",
                    "drift_exclude": SEASONAL}],
        "checkpoint_interval_s": 0.5,
        "http": {"port": 0},
    }  # fmt: skip
    data.update(overrides)
    return load_settings(None, **data)


def step_until(daemon: MonitorDaemon, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        daemon.step()
        if done():
            daemon.checkpoint()
            return
    msg = f"condition not reached within {timeout_s}s; counters {daemon.counters}"
    raise AssertionError(msg)


def closing_record(baseline: Baseline, index: int) -> list[ServingRecord]:
    """Records far enough in the future (one per partition key) to seal every earlier window."""
    return window_records(baseline, index, 20, seed=999)


def results_by_start(store: Store, group: str) -> dict[dt.datetime, WindowResult]:
    """The serving-stage results a group stored, by window start."""
    return {w.result.key.start: w.result for w in store.windows(group=group, limit=1000)}


def read_topic(bootstrap: str, topic: str, settings: MonitorSettings) -> list[RawMessage]:
    """Everything on one of the daemon's topics, from the beginning, until a poll comes back empty."""
    partitions = settings.topics.create_partitions or 1
    consumer = RawConsumer(
        KafkaSettings.local(bootstrap), partitions=[TopicPartition(topic, p) for p in range(partitions)]
    )
    try:
        consumer.seek_to_beginning()
        out: list[RawMessage] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            out += batch
            if not batch and out:
                break
        return out
    finally:
        consumer.close(2)


def read_dead_letters(bootstrap: str, topic: str, settings: MonitorSettings) -> list[DeadLetter]:
    """Everything on a dead-letter topic, from the beginning, until a poll comes back empty."""
    return [read_dead_letter(m) for m in read_topic(bootstrap, topic, settings)]


def config_file(settings: MonitorSettings, path: Path) -> Path:
    """The settings as a config file for ``skewguard monitor --config`` (JSON is YAML)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["kafka"] = {"bootstrap_servers": settings.kafka.bootstrap_servers, "profile": "local"}
    path.write_text(json.dumps(data))
    return path


def run_killed(
    config: Path, log_path: Path, done: Callable[[], bool], *, kills: int = 3, timeout_s: float = 120.0
) -> None:
    """Run ``skewguard monitor`` in a process SIGKILLed ``kills`` times at random points, then until ``done``.

    The last run is stopped with SIGTERM once ``done()`` holds; a run that exits early fails with its log.
    """
    chaos = random.Random(7)
    with log_path.open("ab") as log:
        for _kill in range(kills):
            proc = spawn_monitor(config, log)
            time.sleep(chaos.uniform(2.5, 5.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        proc = spawn_monitor(config, log)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done():
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
