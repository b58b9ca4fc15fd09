"""The monitor daemon against the real embedded broker: findings, dead letters, crash recovery."""

from __future__ import annotations

import base64
import collections
import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon, OwnedPartition, load_monitors
from skewguard.demo.traffic import TrafficShape, hour_in_utc_bug
from skewguard.errors import StoreError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import AssignmentChange, ChangeKind, TopicPartition, read_dead_letter
from skewguard.records import (
    encode_record,
    encode_record_fragment,
    encode_records,
    envelope_from_fragments,
    to_us,
)
from skewguard.results import Check, Severity
from skewguard.store import Store
from skewguard.windows import PartitionWindows
from tests.daemon.helpers import (
    T0,
    closing_record,
    config_file,
    produce,
    produce_raw,
    read_dead_letters,
    read_topic,
    results_by_start,
    run_killed,
    settings_for,
    step_until,
    window_records,
)

pytestmark = pytest.mark.kafka
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_skew_drift_and_alerts_from_a_live_stream(
    daemon_for: Callable[..., MonitorDaemon], baseline: Baseline, kafka_broker: EmbeddedBroker
) -> None:
    daemon: MonitorDaemon = daemon_for()
    rng = np.random.default_rng(5)
    clean = window_records(baseline, 0, 1_500, seed=10)
    bug_rows = rng.random(1_500) < 0.3
    buggy = window_records(baseline, 1, 1_500, seed=20, bug=hour_in_utc_bug, bug_rows=bug_rows)
    expected_mismatches = sum(
        bool(flag) and record.raw_inputs is not None and record.raw_inputs["user_tz"] != "UTC"
        for flag, record in zip(bug_rows, buggy, strict=True)
    )
    weights = 1.0 / np.arange(1, 25)
    weights[12:] *= 10
    drifted = window_records(baseline, 2, 1_500, seed=30, gen={"shape": _shape(weights)})
    topic = daemon.topics.serving
    produce(kafka_broker.bootstrap_servers, topic, clean + buggy + drifted)
    produce(kafka_broker.bootstrap_servers, topic, closing_record(baseline, 5), batch=1)

    step_until(daemon, lambda: daemon.counters.windows >= 3)

    results = results_by_start(daemon.store, daemon.group)
    ordered = [results[key] for key in sorted(results)]
    assert [r.records for r in ordered] == [1_500, 1_500, 1_500]
    assert ordered[0].flagged == ()
    skew = {f.subject: f for f in ordered[1].findings if f.check is Check.SKEW}
    assert skew["hour_of_day_local"].flagged
    assert skew["hour_of_day_local"].detail["mismatched"] == expected_mismatches
    assert skew["hour_of_day_local"].effect == pytest.approx(expected_mismatches / 1_500, abs=0)
    assert {f.subject for f in ordered[1].flagged} == {"hour_of_day_local"}
    assert ("drift", "category") in {(f.check.value, f.subject) for f in ordered[2].flagged}
    # The skew episode is resolved by the clean window after it, so ask for closed alerts too.
    alerts = {(a.check, a.subject): a for a in daemon.store.alerts(open_only=False)}
    assert alerts[(Check.SKEW, "hour_of_day_local")].severity is Severity.CRITICAL
    assert alerts[(Check.SKEW, "hour_of_day_local")].evidence["mismatched"] == expected_mismatches


def _shape(weights: np.ndarray[Any, Any]) -> TrafficShape:
    return TrafficShape(category_weights=weights)


def test_every_bad_input_kind_is_dead_lettered_and_counted(
    daemon_for,
    baseline: Baseline,
    kafka_broker: EmbeddedBroker,
) -> None:
    daemon: MonitorDaemon = daemon_for(max_message_bytes=50_000)
    good = window_records(baseline, 0, 300, seed=40)
    template = orjson.loads(encode_record(good[0]))
    naive = template | {"request_id": "naive", "event_time": "2026-06-01T12:00:10"}
    wrong_type = template | {"request_id": "wrong", "features": [1, 2, 3]}
    missing = {k: v for k, v in template.items() if k != "request_id"}
    version = template | {"request_id": "v99", "v": 99}
    other_model = dataclasses.replace(good[1], request_id="other", model="not-monitored")
    # Folded, a record dated years ahead would move the watermark past every later record (all late).
    future = dataclasses.replace(good[1], request_id="future", event_time=T0.replace(year=2100))
    oversized = orjson.dumps(template | {"request_id": "big", "raw_inputs": {"blob": "x" * 60_000}})
    # Valid JSON of the right shape, but text where the profile needs a number: found at fold time.
    text_in_numeric = orjson.loads(encode_records(good[5:8], packed=False))
    text_in_numeric["columns"]["features"]["ad_position"][1] = "top of the page"
    envelope = orjson.loads(envelope_from_fragments([encode_record_fragment(r) for r in good[2:5]]))
    envelope["batch"].append(template | {"request_id": "in-batch", "prediction": {"not": "a prediction"}})
    columnar = orjson.loads(encode_records(good[8:11]))  # the ServingLogger's form: packed columns
    scores = np.frombuffer(base64.b64decode(columnar["columns"]["prediction"]["f8"]), dtype="<f8").copy()
    scores[1] = np.nan  # no prediction
    columnar["columns"]["prediction"]["f8"] = base64.b64encode(scores.astype("<f8").tobytes()).decode()
    bad: list[bytes | None] = [
        b"\xff\x00 not json",
        None,  # a tombstone (its dead letter carries its key: Kafka takes no message without both)
        b"[1, 2, 3]",
        orjson.dumps(missing),
        orjson.dumps(wrong_type),
        orjson.dumps(naive),
        orjson.dumps(version),
        encode_record(other_model),
        encode_record(future),
        oversized,
        orjson.dumps(envelope),
        orjson.dumps(text_in_numeric),
        orjson.dumps(columnar),
    ]
    topic = daemon.topics.serving
    produce_raw(kafka_broker.bootstrap_servers, topic, bad)
    produce(kafka_broker.bootstrap_servers, topic, good[11:])
    produce(kafka_broker.bootstrap_servers, topic, closing_record(baseline, 5), batch=1)
    expected = collections.Counter(
        {
            "undecodable": 2,
            "not_an_object": 1,
            "missing_field": 1,
            "wrong_type": 4,
            "naive_timestamp": 1,
            "unsupported_version": 1,
            "unknown_model": 1,
            "oversized": 1,
            "future": 1,
        }
    )
    step_until(
        daemon, lambda: daemon.counters.windows >= 1 and sum(daemon.counters.dead_letters.values()) >= 13
    )

    assert dict(daemon.counters.dead_letters) == dict(expected)
    # Every good record is counted: 3 from the row envelope, 2 beside the text-in-numeric one, 2 beside
    # the bad columnar row, 289 on their own (plus the closers, later); the daemon kept going.
    first = min(results_by_start(daemon.store, daemon.group).items())[1]
    assert first.records == 296
    letters = read_dead_letters(kafka_broker.bootstrap_servers, daemon.topics.dead_letter, daemon.settings)
    assert collections.Counter(letter.reason for letter in letters) == expected
    by_reason = {letter.reason: letter for letter in letters}
    assert {letter.value for letter in letters if letter.reason == "undecodable"} == {
        b"\xff\x00 not json",
        None,
    }
    assert "request_id" in by_reason["missing_field"].detail
    assert "'future'" in by_reason["future"].detail and "max_future_s" in by_reason["future"].detail
    assert daemon.counters.late == 0
    wrong = [letter for letter in letters if letter.reason == "wrong_type"]
    # each refused member is dead-lettered alone, as itself
    assert {orjson.loads(letter.value or b"")["request_id"] for letter in wrong} == {
        "wrong",
        "in-batch",
        good[6].request_id,
        good[9].request_id,
    }
    assert any("columns[1].prediction" in letter.detail for letter in wrong)
    # Every refusal of a record with a readable request id names it, as the daemon's own refusals do.
    assert any(letter.detail.startswith("record 'wrong': field 'features'") for letter in wrong)
    assert by_reason["naive_timestamp"].detail.startswith("record 'naive': ")


@pytest.mark.parametrize(("key_bytes", "left_out"), [(40_000, "value"), (150_000, "value and key")])
def test_a_dead_letter_refused_for_its_size_is_sent_smaller_and_checkpoints_go_on(
    daemon_for, baseline: Baseline, kafka_broker: EmbeddedBroker, key_bytes: int, left_out: str
) -> None:
    # The refused bytes fit under the daemon's value limit, but with their long key the dead letter is
    # over the producer's max_request_size: refused at every retry, it held every checkpoint back.
    kafka = {
        "bootstrap_servers": kafka_broker.bootstrap_servers,
        "profile": "local",
        "max_request_size": 120_000,
    }
    daemon: MonitorDaemon = daemon_for(kafka=kafka, max_message_bytes=200_000)
    value = b"\xff" + b"x" * 90_000
    produce_raw(
        kafka_broker.bootstrap_servers, daemon.topics.serving, [value], partition_key=b"k" * key_bytes
    )
    produce(kafka_broker.bootstrap_servers, daemon.topics.serving, window_records(baseline, 0, 200, seed=41))
    produce(kafka_broker.bootstrap_servers, daemon.topics.serving, closing_record(baseline, 5), batch=1)

    step_until(daemon, lambda: daemon.counters.windows >= 1)

    assert dict(daemon.counters.dead_letters) == {"undecodable": 1}
    (message,) = read_topic(kafka_broker.bootstrap_servers, daemon.topics.dead_letter, daemon.settings)
    letter = read_dead_letter(message)
    assert (letter.reason, letter.value, letter.value_omitted) == ("undecodable", b"", len(value))
    assert message.key == (None if left_out == "value and key" else b"k" * key_bytes)
    assert letter.key_omitted == (left_out == "value and key")


def test_an_assignment_applied_after_its_partition_was_revoked_restores_nothing(daemon_for) -> None:
    # A change requeued after a store error, or one of several join rounds in a poll, can name a
    # partition revoked since: restoring it made the daemon fold and checkpoint a partition it does not
    # own (and seeking it raised ValueError out of the poll loop).
    daemon: MonitorDaemon = daemon_for()
    step_until(daemon, lambda: len(daemon.owned) == 2)
    stale = TopicPartition(daemon.topics.serving, 7)  # never assigned: the topic has 2 partitions
    daemon._apply_assignment_change(AssignmentChange(ChangeKind.ASSIGNED, frozenset({stale})))
    assert stale not in daemon.owned and len(daemon.owned) == 2


def test_an_open_window_finalised_elsewhere_with_nothing_lost_leaves_no_empty_window_behind(
    daemon_for,
) -> None:
    # Another replica finalised window W with everything this partition had folded into it (its idle
    # partition's stored state): W is dropped here. Retiring it used to create an empty accumulator for
    # the next window, stored as a 0-record result if the partition stayed idle.
    daemon: MonitorDaemon = daemon_for()
    part = OwnedPartition(PartitionWindows(daemon.spec), 10, 0)
    key = ("ctr", to_us(T0))
    folded = part.windows.accumulator(key, daemon.monitors["ctr"].new_accumulator)
    folded.records = 40
    part.saved[key] = (40, 0)
    daemon._retire_finalised_elsewhere(None, part, {key})
    assert part.windows.open == {} and part.windows.sealed == {}


def test_after_an_unexpected_error_in_a_step_close_leaves_the_last_checkpoint_alone(
    daemon_for, baseline: Baseline, kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails half-way may leave partitions half-folded: a final checkpoint would store that."""
    daemon: MonitorDaemon = daemon_for()
    produce(kafka_broker.bootstrap_servers, daemon.topics.serving, window_records(baseline, 0, 50, seed=3))
    step_until(daemon, lambda: daemon.counters.records >= 50)
    daemon.checkpoint()
    with daemon.store.transaction() as tx:
        before = tx.load_checkpoints(daemon.group, [daemon.topics.serving])
    produce(kafka_broker.bootstrap_servers, daemon.topics.serving, window_records(baseline, 0, 20, seed=4))

    def fail(*_args: Any) -> None:
        raise RuntimeError("a bug while folding")

    # In the model's fold: after the partition's offset has moved past the poll, before it is folded.
    for monitor in daemon.monitors.values():
        monkeypatch.setattr(monitor, "fold", fail)
    with pytest.raises(RuntimeError, match="a bug while folding"):
        step_until(daemon, lambda: False)
    daemon.close()  # (the fixture's close after this one does nothing)
    with daemon.store.transaction() as tx:
        after = tx.load_checkpoints(daemon.group, [daemon.topics.serving])
    assert {k: c.next_offset for k, c in after.items()} == {k: c.next_offset for k, c in before.items()}


def test_health_fails_while_checkpoints_fail_even_though_polls_succeed(daemon_for) -> None:
    daemon: MonitorDaemon = daemon_for()
    daemon.step()
    daemon.checkpoint()
    assert daemon.health()[0]
    daemon.store.drop_all()  # the store loses its tables: every checkpoint fails from now on
    with pytest.raises(StoreError):
        daemon.checkpoint()
    daemon.step()  # polls still succeed
    limit = max(30.0, 3 * daemon.settings.checkpoint_interval_s)
    daemon._last_checkpoint -= limit  # (as if that long had passed since the last good one)
    healthy, reason = daemon.health()
    assert not healthy and "no successful checkpoint" in reason
    daemon.store.create()
    daemon.checkpoint()
    assert daemon.health()[0]


# -- crash recovery -------------------------------------------------------------------------------------


def _summary(store: Store, group: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for start, result in sorted(results_by_start(store, group).items()):
        rows.append(
            (
                start,
                result.records,
                result.late_records,
                sorted((f.check.value, f.subject, f.flagged) for f in result.findings),
                sorted(
                    (f.check.value, f.subject, round(f.effect, 9))
                    for f in result.findings
                    if f.effect is not None
                ),
            )
        )
    return rows


#: Count windows of 600 records: an equal share from each partition of the serving topic.
COUNT_WINDOWS = {"count": 600, "lateness_s": 5.0, "idle_timeout_s": 3600.0}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "counted"),
    [
        ("sqlite", False),
        pytest.param("postgresql", False, marks=pytest.mark.postgres),
        pytest.param("sqlite", True, id="sqlite-count-windows"),
    ],
)
def test_sigkilled_daemon_stores_the_same_results_as_an_uninterrupted_one(
    backend: str,
    counted: bool,
    kafka_broker: EmbeddedBroker,
    baseline: Baseline,
    baseline_dir: Path,
    tmp_path: Path,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    schema = f"sg_crash_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'crash.db'}" if backend == "sqlite" else POSTGRES_URL
    store_cfg = {"url": url} | ({"db_schema": schema} if backend == "postgresql" else {})
    victim = settings_for(
        bootstrap,
        baseline_dir,
        url,
        partitions=3,
        store=store_cfg,
        checkpoint_interval_s=0.3,
        max_poll_records=200,
        **({"window": COUNT_WINDOWS} if counted else {}),
    )
    reference = victim.model_copy(update={"group_id": victim.group_id + "-ref"})
    records = [r for i in range(4) for r in window_records(baseline, i, 1_500, seed=100 + i)]
    # Some late arrivals (older event times after newer ones) so lateness is part of what must match.
    late = window_records(baseline, 0, 60, seed=200)
    late = [dataclasses.replace(r, request_id=f"late-{i}") for i, r in enumerate(late)]
    produce(bootstrap, victim.topics.serving, records[:3_000] + late + records[3_000:], batch=20)
    produce(bootstrap, victim.topics.serving, closing_record(baseline, 9), batch=1)

    ref_store = Store(url, schema=schema if backend == "postgresql" else None)
    ref = MonitorDaemon(reference, load_monitors(reference), ref_store)
    ref.open()
    try:
        if counted:  # the windows every partition has filled its share of (the rest stay open)
            step_until(ref, lambda: ref.counters.records == len(records) + len(late) + 20, timeout_s=120)
            windows = min(part.windows.counts["ctr"] for part in ref.owned.values()) // ref.spec.share
            step_until(ref, lambda: ref.counters.windows >= windows, timeout_s=60)
        else:
            windows = 4
            step_until(ref, lambda: ref.counters.windows >= windows, timeout_s=120)
    finally:
        ref.close()
    expected = _summary(ref_store, reference.group_id)
    if counted:
        assert [row[1:3] for row in expected] == [(600, 0)] * windows  # in count windows nothing is late
        assert windows >= 8
    else:
        assert [row[1] for row in expected] == [1_500, 1_500, 1_500, 1_500]
        assert sum(row[2] for row in expected) == 60  # the late records are counted, not folded

    config = config_file(victim, tmp_path / "monitor.yaml")
    run_killed(
        config, tmp_path / "daemon.log", lambda: len(results_by_start(ref_store, victim.group_id)) >= windows
    )
    assert _summary(ref_store, victim.group_id) == expected
    if backend == "postgresql":
        ref_store.drop_all()
    ref_store.close()
