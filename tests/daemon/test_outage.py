"""A broker outage mid-stream: the daemon keeps running, reconnects, and loses or doubles nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon, load_monitors
from skewguard.io.broker import EmbeddedBroker
from skewguard.store import Store
from tests.daemon.helpers import (
    T0,
    WINDOW,
    closing_record,
    produce,
    results_by_start,
    settings_for,
    window_records,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PER_WINDOW = 1_500
#: Longer than the request timeout below, so in-flight fetches, heartbeats and commits fail and the
#: clients must reconnect, not merely wait.
OUTAGE_S = 8.0


def test_daemon_rides_out_a_frozen_broker_and_stores_every_record_once(
    baseline: Baseline, baseline_dir: Path, tmp_path: Path
) -> None:
    # Its own broker: the outage must not touch the other tests' broker.
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        settings = settings_for(
            bootstrap,
            baseline_dir,
            f"sqlite:///{tmp_path / 'outage.db'}",
            kafka={"bootstrap_servers": bootstrap, "profile": "local", "request_timeout_ms": 3_000,
                   "fetch_max_wait_ms": 200},
            max_poll_records=100,  # a slow reader, so the outage lands mid-stream
        )  # fmt: skip
        records = [r for i in range(3) for r in window_records(baseline, i, PER_WINDOW, seed=40 + i)]
        before, after = records[: PER_WINDOW * 3 // 2], records[PER_WINDOW * 3 // 2 :]
        produce(bootstrap, settings.topics.serving, before)

        store = Store(settings.store.url)
        daemon = MonitorDaemon(settings, load_monitors(settings), store)
        daemon.open()
        stop = threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            try:
                daemon.run(stop)
            except BaseException as exc:  # the test reports it; the daemon must never get here
                failures.append(exc)

        thread = threading.Thread(target=run, name="daemon", daemon=True)
        thread.start()
        try:
            # Everything produced so far is folded and checkpointed: from here on, every record the
            # daemon folds had to be fetched through the outage and the reconnect.
            _wait(lambda: daemon.counters.records == len(before), 60, daemon)
            time.sleep(2 * settings.checkpoint_interval_s)
            pid = broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(OUTAGE_S)
            finally:
                os.kill(pid, signal.SIGCONT)
            produce(bootstrap, settings.topics.serving, after)
            produce(bootstrap, settings.topics.serving, closing_record(baseline, 9), batch=1)
            _wait(lambda: daemon.counters.windows >= 3, 120, daemon)
            assert thread.is_alive(), failures
        finally:
            stop.set()
            thread.join(30)
            daemon.close()
        assert not failures, failures
        # The daemon felt the outage (its offset commits failed and were counted) and carried on.
        assert _sample(daemon, "skewguard_broker_errors_total") >= 1

        results = results_by_start(store, settings.group_id)
        assert [
            (results[T0 + i * WINDOW].records, results[T0 + i * WINDOW].late_records) for i in range(3)
        ] == [(PER_WINDOW, 0)] * 3
        assert not daemon.counters.dead_letters
        store.close()


def _wait(done: Callable[[], bool], timeout_s: float, daemon: MonitorDaemon) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            msg = f"condition not reached within {timeout_s:g} s; counters {daemon.counters}"
            raise AssertionError(msg)
        time.sleep(0.1)


def _sample(daemon: MonitorDaemon, name: str) -> float:
    for metric in daemon.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                return float(sample.value)
    msg = f"no metric {name}"
    raise AssertionError(msg)
