"""Count windows on the real broker: a share of each partition's records per window, idle partitions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon
from skewguard.demo.traffic import TrafficShape
from skewguard.io.broker import EmbeddedBroker
from skewguard.records import ServingRecord
from skewguard.results import Check, WindowResult
from tests.daemon.helpers import produce_to_partitions, window_records

pytestmark = pytest.mark.kafka

COUNT = 300  # two partitions: 150 records of each per window


def stored(daemon: MonitorDaemon) -> dict[int, WindowResult]:
    """The serving-stage results by window number."""
    out: dict[int, WindowResult] = {}
    for window in daemon.store.windows(group=daemon.group, limit=100):
        assert window.result.key.index is not None
        out[window.result.key.index] = window.result
    return out


def run_until(daemon: MonitorDaemon, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        daemon.step()
        assert time.monotonic() < deadline, f"not reached: {daemon.counters}"


def span(records: Sequence[ServingRecord]) -> tuple[dt.datetime, dt.datetime]:
    """The bounds a count window holding ``records`` is stored with: first event, last event + 1 µs."""
    times = [r.event_time for r in records]
    return min(times), max(times) + dt.timedelta(microseconds=1)


def test_a_count_window_holds_a_share_of_every_partition_in_offset_order(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    daemon = daemon_for(partitions=2, window={"count": COUNT, "lateness_s": 5.0, "idle_timeout_s": 3600.0})
    # Partition 0 runs ahead in event time: windows are counted, so that must not matter.
    first = window_records(baseline, 0, 320, seed=1)
    second = window_records(baseline, 3, 310, seed=2, gen={"shape": TrafficShape(price_log_mean=5.0)})
    second = [dataclasses.replace(r, request_id=f"p1-{i}") for i, r in enumerate(second)]
    produce_to_partitions(kafka_broker.bootstrap_servers, daemon.topics.serving, {0: first, 1: second})

    run_until(daemon, lambda: daemon.counters.records == 630 and daemon.counters.windows >= 2)
    daemon.checkpoint()
    results = stored(daemon)
    assert sorted(results) == [0, 1]  # window 2 (20 + 10 records so far) stays open: no idle timeout
    for number in (0, 1):
        members = first[150 * number : 150 * (number + 1)] + second[150 * number : 150 * (number + 1)]
        result = results[number]
        assert (result.records, result.late_records) == (300, 0)
        assert (result.key.start, result.key.end) == span(members)
    # Judged like any window: half of each window's prices come from partition 1's pricier traffic.
    price = next(f for f in results[0].findings if f.check is Check.DRIFT and f.subject == "log_price")
    assert price.flagged
    assert {tp.partition: part.windows.counts for tp, part in daemon.owned.items()} == {
        0: {"ctr": 320},
        1: {"ctr": 310},
    }


def test_an_idle_partition_lets_a_partial_count_window_close_and_no_record_is_lost(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    daemon = daemon_for(partitions=2, window={"count": COUNT, "lateness_s": 5.0, "idle_timeout_s": 1.0})
    first = window_records(baseline, 0, 320, seed=3)
    second = [
        dataclasses.replace(r, request_id=f"p1-{i}")
        for i, r in enumerate(window_records(baseline, 0, 180, seed=4))
    ]
    produce_to_partitions(kafka_broker.bootstrap_servers, daemon.topics.serving, {0: first, 1: second})
    # Window 1 lacks 120 of partition 1's records and window 2 has only partition 0's 20: both close
    # once both partitions are caught up and quiet for the idle timeout.
    run_until(daemon, lambda: daemon.counters.windows >= 3)
    results = stored(daemon)
    assert {n: r.records for n, r in results.items()} == {0: 300, 1: 180, 2: 20}

    # Partition 0 wakes up: its next records would number into window 2, which is already stored.
    more = [
        dataclasses.replace(r, request_id=f"more-{i}")
        for i, r in enumerate(window_records(baseline, 1, 200, seed=5))
    ]
    produce_to_partitions(kafka_broker.bootstrap_servers, daemon.topics.serving, {0: more})
    run_until(
        daemon,
        lambda: (
            daemon.counters.records == 700
            and sum(r.records + r.late_records for r in stored(daemon).values()) == 700
        ),
    )
    results = stored(daemon)
    assert results[2].records == 20  # a stored window never changes
    later = {n: r for n, r in results.items() if n > 2}
    # Every new record is in a later window: folded there, or counted late there if it had been
    # numbered into the stored window 2 before the daemon noticed.
    assert sum(r.records + r.late_records for r in later.values()) == 200
    assert daemon.counters.late == sum(r.late_records for r in later.values())
