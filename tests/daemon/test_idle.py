"""Idle partitions: a caught-up partition without traffic stops holding windows back after the timeout."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon, load_monitors
from skewguard.io.broker import EmbeddedBroker
from skewguard.records import ServingRecord, encode_records, to_us
from skewguard.store import Store
from tests.daemon.helpers import (
    T0,
    WINDOW,
    closing_record,
    produce_raw,
    produce_to_partitions,
    results_by_start,
    window_records,
)

pytestmark = pytest.mark.kafka

T0_US = to_us(T0)
WINDOW_US = int(WINDOW.total_seconds() * 1e6)

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


def test_records_of_a_window_stored_while_their_partition_was_idle_are_late_not_lost(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    daemon = daemon_for(partitions=2, window={"size_s": 60.0, "lateness_s": 5.0, "idle_timeout_s": 1.0})
    bootstrap, topic = kafka_broker.bootstrap_servers, daemon.topics.serving

    def renamed(records: list[ServingRecord], prefix: str) -> list[ServingRecord]:
        return [dataclasses.replace(r, request_id=f"{prefix}-{i}") for i, r in enumerate(records)]

    ahead = window_records(baseline, 0, 100, seed=1) + renamed(window_records(baseline, 3, 50, seed=2), "a")
    behind = renamed(window_records(baseline, 0, 80, seed=3), "b")
    produce_to_partitions(bootstrap, topic, {0: ahead, 1: behind})
    # Partition 1 never passes window 0; once it is quiet, its idle timeout lets window 0 close.
    deadline = time.monotonic() + 60
    while daemon.counters.windows < 1:
        daemon.step()
        assert time.monotonic() < deadline, f"window 0 not finalised: {daemon.counters}"
    assert results_by_start(daemon.store, daemon.group)[T0].records == 180

    # Partition 1 wakes up with 30 more records of window 0 and, in the same message, 10 far ahead
    # that move its watermark past window 0 at once (the stored window must not be reopened or lost).
    stragglers = renamed(window_records(baseline, 0, 30, seed=4), "s")
    far = renamed(window_records(baseline, 5, 10, seed=5), "f")
    produce_to_partitions(bootstrap, topic, {1: stragglers + far})
    while T0 + WINDOW not in (results := results_by_start(daemon.store, daemon.group)):
        daemon.step()
        assert time.monotonic() < deadline, f"window 1 not finalised: {daemon.counters}"
    assert results[T0].records == 180  # a stored window never changes
    # The stragglers arrived after window 0 was stored: counted late in the next window, not lost.
    assert (results[T0 + WINDOW].records, results[T0 + WINDOW].late_records) == (0, 30)
    assert daemon.counters.late == 30


def test_records_a_replica_folds_into_a_window_another_replica_finalised_are_late_not_lost(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    """Replica A finalises window 0 from B's stored state (B's partition idle); B meanwhile folds more
    records into window 0 and seals it. Those records are late in B's arrival window: not dropped with
    the sealed window, and the ones A's result counted are not reported again."""
    a = daemon_for(
        partitions=2,
        window={"size_s": 60.0, "lateness_s": 5.0, "idle_timeout_s": 1.0},
        checkpoint_interval_s=3600.0,  # checkpoints only when the test says
    )
    b = MonitorDaemon(a.settings, load_monitors(a.settings), Store(a.settings.store.url))
    b.open()
    try:
        # Each steps in its own thread while the group rebalances: a join blocks its poll until every
        # member has rejoined, so stepping both from one thread would wait out the rebalance timeout.
        assigned = threading.Event()

        def join(daemon: MonitorDaemon) -> None:
            while not assigned.is_set():
                daemon.step()

        joiners = [threading.Thread(target=join, args=(d,)) for d in (a, b)]
        for joiner in joiners:
            joiner.start()
        deadline = time.monotonic() + 90
        while not (len(a.owned) == 1 and len(b.owned) == 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assigned.set()
        for joiner in joiners:
            joiner.join()
        assert len(a.owned) == len(b.owned) == 1, f"no one-partition-each assignment: {a.owned} {b.owned}"
        (tp_a,), (tp_b,) = a.owned, b.owned
        bootstrap, topic = kafka_broker.bootstrap_servers, a.topics.serving

        def renamed(records: list[ServingRecord], prefix: str) -> list[ServingRecord]:
            return [dataclasses.replace(r, request_id=f"{prefix}-{i}") for i, r in enumerate(records)]

        ahead = window_records(baseline, 0, 100, seed=1) + renamed(
            window_records(baseline, 3, 50, seed=2), "a"
        )
        behind = renamed(window_records(baseline, 0, 80, seed=3), "b")
        produce_to_partitions(bootstrap, topic, {tp_a.partition: ahead, tp_b.partition: behind})
        while not (a.counters.records == 150 and b.counters.records == 80):
            a.step()
            b.step()
            assert time.monotonic() < deadline, f"records not folded: {a.counters} {b.counters}"
        b.checkpoint()  # B's stored state: window 0 open with 80 records, caught up
        time.sleep(1.2)  # ... and idle
        a.checkpoint()  # finalises window 0 (and window 3: A's partition is as quiet by now)
        assert results_by_start(a.store, a.group)[T0].records == 180

        # Before B checkpoints again, 30 more records of window 0 reach it, with 10 far ahead that seal it.
        stragglers = renamed(window_records(baseline, 0, 30, seed=4), "s")
        far = renamed(window_records(baseline, 5, 10, seed=5), "f")
        produce_to_partitions(bootstrap, topic, {tp_b.partition: stragglers + far})
        while b.counters.records < 120:
            b.step()
            assert time.monotonic() < deadline, f"stragglers not folded: {b.counters}"
        assert ("ctr", T0_US) in b.owned[tp_b].windows.sealed
        b.checkpoint()
        assert b.counters.late == 30  # not 0 (dropped with the sealed window), not 110 (counted twice)
        arrival = b.owned[tp_b].windows.open[("ctr", T0_US + 5 * WINDOW_US)]
        assert (arrival.records, arrival.late_records) == (10, 30)
        assert results_by_start(a.store, a.group)[T0].records == 180  # a stored window never changes
    finally:
        b.close()
        b.store.close()
