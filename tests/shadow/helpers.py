"""Shared test pieces: deterministic scorers, a blockable candidate, reading the serving log back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from skewguard.io.kafka import KafkaSettings, RawConsumer, TopicPartition
from skewguard.records import ServingRecord, decode_message
from skewguard.serving import ServingLogger

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
#: A bound no prompt call comes near, even on a loaded 2-core machine; blocking would take far longer.
PROMPT_S = 2.0


def features_for(i: int) -> dict[str, Any]:
    """Request i's computed features (plain numbers, a category, a flag)."""
    return {"x": i * 0.25, "y": (i % 7) - 3.0, "plan": "pro" if i % 3 else "free", "flag": i % 2 == 0}


def production_score(features: Mapping[str, Any]) -> float:
    """A deterministic production model: a squashed linear score."""
    z = 0.1 * float(features["x"]) - 0.2 * float(features["y"]) + (0.3 if features["plan"] == "pro" else 0.0)
    score: float = 1.0 / (1.0 + 2.0 ** (-z))
    return score


def candidate_score(features: Mapping[str, Any]) -> float:
    """Another deterministic model, distinguishable from production."""
    return round(production_score(features) * 0.5 + 0.25, 9)


class BlockedCandidate:
    """A candidate that stops inside its first call until released: a worker stuck in a slow model.

    ``entered`` is set when a call has started, so tests can know the worker holds a request.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, features: Mapping[str, Any]) -> float:
        self.calls += 1
        self.entered.set()
        self.release.wait(30.0)  # a safety net: a broken test must not hang the session
        return 0.5


class MemoryLog:
    """An in-memory RequestLog: keeps the keyword arguments of every accepted ``log`` call.

    For behaviour that does not depend on Kafka (counts, responses); the broker tests use ServingLogger.
    """

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def log(self, **record: Any) -> bool:
        with self._lock:
            if self.accept:
                self.calls.append(record)
        return self.accept

    def by_request(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {call["request_id"]: call for call in self.calls}


def make_logger(settings: KafkaSettings, topic: str) -> ServingLogger:
    return ServingLogger(
        settings, topic, model="ctr", model_version="prod-1", feature_state_hash="f00d", linger_ms=5
    )


def read_records(
    settings: KafkaSettings, topic: str, expect: int, timeout_s: float = 20.0
) -> list[ServingRecord]:
    """Every record on a 1-partition topic, reading until ``expect`` arrived (and a moment more)."""
    records: list[ServingRecord] = []
    with RawConsumer(settings, partitions=[TopicPartition(topic, 0)]) as consumer:
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            for message in consumer.poll(timeout_ms=200, max_records=2000):
                records.extend(decode_message(message.value).records)
        for message in consumer.poll(timeout_ms=300):  # a duplicate would show up here
            records.extend(decode_message(message.value).records)
    return records


def event_time(i: int) -> datetime:
    return T0 + timedelta(milliseconds=i)


def ids(records: Iterable[ServingRecord]) -> list[str]:
    return [record.request_id for record in records]
