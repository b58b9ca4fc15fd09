"""The late-record policy: every policy counts stragglers; drop, dead-letter or fold them as configured."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import LATE, MonitorDaemon
from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.records import ServingRecord, decode_message
from skewguard.settings import load_settings
from skewguard.windows import LatePolicy
from tests.daemon.helpers import (
    T0,
    WINDOW,
    closing_record,
    produce,
    read_dead_letters,
    results_by_start,
    step_until,
    window_records,
)

pytestmark = pytest.mark.kafka

ON_TIME_0, ON_TIME_2, LATE_COUNT = 300, 400, 37


def _stream(baseline: Baseline) -> tuple[list[ServingRecord], list[ServingRecord]]:
    """Window 0, then window 2 (its records seal window 0 everywhere), then stragglers of window 0."""
    first = window_records(baseline, 0, ON_TIME_0, seed=1)
    second = window_records(baseline, 2, ON_TIME_2, seed=2)
    stragglers = [
        dataclasses.replace(r, request_id=f"straggler-{i}")
        for i, r in enumerate(window_records(baseline, 0, LATE_COUNT, seed=3))
    ]
    return first + second + stragglers, stragglers


@pytest.mark.parametrize("policy", list(LatePolicy))
def test_late_records_are_counted_and_handled_by_the_policy(
    policy: LatePolicy,
    daemon_for: Callable[..., MonitorDaemon],
    baseline: Baseline,
    kafka_broker: EmbeddedBroker,
) -> None:
    daemon = daemon_for(window={"size_s": 60.0, "lateness_s": 5.0, "idle_timeout_s": 3600.0,
                                "late_policy": policy.value})  # fmt: skip
    records, stragglers = _stream(baseline)
    bootstrap = kafka_broker.bootstrap_servers
    produce(bootstrap, daemon.topics.serving, records)
    produce(bootstrap, daemon.topics.serving, closing_record(baseline, 9), batch=1)
    folded = ON_TIME_0 + ON_TIME_2 + (LATE_COUNT if policy is LatePolicy.ARRIVAL else 0)
    step_until(daemon, lambda: daemon.counters.late == LATE_COUNT and daemon.counters.windows >= 2)

    results = results_by_start(daemon.store, daemon.group)
    window0, window2 = results[T0], results[T0 + 2 * WINDOW]
    # Window 0 is sealed before the stragglers arrive: no policy changes it.
    assert (window0.records, window0.late_records) == (ON_TIME_0, 0)
    # The stragglers are reported with the window they arrived in, under every policy.
    assert window2.late_records == LATE_COUNT
    assert window2.records == ON_TIME_2 + (LATE_COUNT if policy is LatePolicy.ARRIVAL else 0)
    assert daemon.counters.records == folded + len(closing_record(baseline, 9))

    if policy is LatePolicy.DEAD_LETTER:
        letters = read_dead_letters(bootstrap, daemon.topics.dead_letter, daemon.settings)
        assert {letter.reason for letter in letters} == {LATE}
        lettered = [_request_id(letter.value) for letter in letters]
        assert sorted(lettered) == sorted(r.request_id for r in stragglers)
        assert all("already closed" in letter.detail for letter in letters)
        assert daemon.counters.dead_letters[LATE] == LATE_COUNT
    else:
        assert daemon.counters.dead_letters.get(LATE, 0) == 0


def _request_id(value: bytes | None) -> str:
    (record,) = decode_message(value).records
    return record.request_id


def test_an_unknown_late_policy_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="late_policy"):
        load_settings(
            None,
            kafka={"bootstrap_servers": "localhost:9092"},
            models=[{"name": "m", "baseline": "b", "features": "x:y"}],
            window={"late_policy": "keep"},
        )


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_max_future_must_be_a_finite_number_of_seconds(value: str) -> None:
    with pytest.raises(ConfigError, match="max_future_s"):
        load_settings(
            None,
            kafka={"bootstrap_servers": "localhost:9092"},
            models=[{"name": "m", "baseline": "b", "features": "x:y"}],
            window={"max_future_s": float(value)},
        )
