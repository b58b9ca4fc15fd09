"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

# Telemetry off before evidently / Great Expectations are imported anywhere.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


# ---- Kafka (skewguard.io): one embedded broker per test session, a unique topic per test ----------------
# skewguard.io is imported inside the fixtures, so runs without Kafka tests never import kafka-python.
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from skewguard.io.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu, memory storage) shared by the whole session."""
    from skewguard.io.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def kafka_topic(kafka_broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory ``kafka_topic(partitions=1) -> name`` of fresh topics, deleted after the test.

    Tansu keeps every message in memory, so topics are deleted rather than left to accumulate.
    """
    from skewguard.io.kafka import KafkaSettings, delete_topics, ensure_topics

    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]

    def make(partitions: int = 1) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        ensure_topics(settings, {name: partitions})
        created.append(name)
        return name

    yield make
    if created and kafka_broker.running:
        delete_topics(settings, created)
