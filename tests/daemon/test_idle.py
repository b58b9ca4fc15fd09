"""Idle partitions: a caught-up partition without traffic stops holding windows back after the timeout."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon
from skewguard.io.broker import EmbeddedBroker
from skewguard.records import encode_records
from tests.daemon.helpers import T0, WINDOW, closing_record, produce_raw, results_by_start, window_records

pytestmark = pytest.mark.kafka

IDLE_S = 2.0


def test_a_partition_that_never_had_a_message_does_not_hold_windows_back(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    daemon = daemon_for(partitions=2, window={"size_s": 60.0, "lateness_s": 5.0, "idle_timeout_s": IDLE_S})
    records = window_records(baseline, 0, 200, seed=1) + window_records(baseline, 1, 200, seed=2)
    records += closing_record(baseline, 9)
    # One key: every message lands in the same partition; the other one stays empty for good.
    messages = [encode_records(records[i : i + 50]) for i in range(0, len(records), 50)]
    produce_raw(kafka_broker.bootstrap_servers, daemon.topics.serving, messages, partition_key=b"one")

    deadline = time.monotonic() + 60
    while daemon.counters.windows < 2:
        daemon.step()
        assert time.monotonic() < deadline, f"windows not finalised: {daemon.counters}"
    # Before the fix the empty partition was never checkpointed, so nothing was ever finalised.
    results = results_by_start(daemon.store, daemon.group)
    assert [(results[T0 + i * WINDOW].records, results[T0 + i * WINDOW].late_records) for i in (0, 1)] == [
        (200, 0),
        (200, 0),
    ]
    empty = [tp for tp, part in daemon.owned.items() if part.windows.max_event_us is None]
    assert len(empty) == 1 and daemon.owned[empty[0]].next_offset == 0
