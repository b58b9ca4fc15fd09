"""Producer, consumer, group, offsets, lag, admin and dead letters against the real embedded broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from skewguard.errors import BrokerError, ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import (
    ChangeKind,
    KafkaProfile,
    KafkaSettings,
    RawConsumer,
    RawMessage,
    RawProducer,
    TopicPartition,
    delete_topics,
    ensure_topics,
    publish_dead_letter,
    read_dead_letter,
)
from skewguard.records import ServingRecord, decode_message, encode_record, encode_records

pytestmark = pytest.mark.kafka

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(kafka_broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings.local(kafka_broker.bootstrap_servers)


@pytest.fixture
def producer(settings: KafkaSettings) -> Iterator[RawProducer]:
    with RawProducer(settings) as prod:
        yield prod


def consume(consumer: RawConsumer, count: int, timeout_s: float = 15.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(consumer.poll(timeout_ms=200))
    return got


def record(i: int) -> ServingRecord:
    return ServingRecord(
        request_id=f"req-{i}",
        event_time=T0 + timedelta(milliseconds=i),
        model="churn",
        model_version="v3",
        feature_state_hash="3f2a",
        features={"x": i * 0.5, "plan": "pro" if i % 2 else "free"},
        prediction=[0.2, 0.8],
    )


# ---------------------------------------------------------------------------------- round trips


def test_single_messages_round_trip_with_keys_headers_and_offsets(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    for i in range(50):
        producer.send(topic, b"value-%d" % i, key=b"k%d" % i, headers=[("trace", b"t%d" % i)])
    producer.flush(10)
    with RawConsumer(settings, partitions=[TopicPartition(topic, 0)]) as consumer:
        got = consume(consumer, 50)
    assert [m.value for m in got] == [b"value-%d" % i for i in range(50)]
    assert [m.offset for m in got] == list(range(50))
    assert got[7].key == b"k7"
    assert got[7].headers == [("trace", b"t7")]
    assert {(m.topic, m.partition) for m in got} == {(topic, 0)}
    assert all(m.timestamp_ms > 0 for m in got)


def test_record_and_batch_messages_decode_after_the_trip_through_kafka(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    singles = [record(i) for i in range(10)]
    batch = [record(i) for i in range(10, 310)]
    for r in singles:
        producer.send(topic, encode_record(r))
    delivered = producer.send(topic, encode_records(batch)).wait(10)
    assert delivered.topic == topic
    assert delivered.offset == 10
    with RawConsumer(settings, partitions=[TopicPartition(topic, 0)]) as consumer:
        got = consume(consumer, 11)
    decoded = [r for m in got for r in decode_message(m.value).records]
    assert decoded == singles + batch


# ---------------------------------------------------------------------------------- groups and offsets


def test_two_group_members_split_the_partitions_and_read_each_message_once(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=4)
    for i in range(200):
        producer.send(topic, b"%d" % i, partition=i % 4)
    producer.flush(10)
    group = f"g-{topic}"
    first = RawConsumer(settings, [topic], group_id=group)
    second = RawConsumer(settings, [topic], group_id=group)
    try:
        seen: dict[str, list[bytes | None]] = {"first": [], "second": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen["first"].extend(m.value for m in first.poll(100))
            seen["second"].extend(m.value for m in second.poll(100))
            a, b = first.assignment(), second.assignment()
            if a and b and not (a & b) and len(seen["first"]) + len(seen["second"]) >= 200:
                break
        a, b = first.assignment(), second.assignment()
        assert a and b, "both members own partitions"
        assert not a & b
        assert a | b == {TopicPartition(topic, p) for p in range(4)}
        # the assignment each member holds was announced to its poll loop
        changes = second.assignment_changes()
        last_assigned = [c for c in changes if c.kind is ChangeKind.ASSIGNED][-1]
        assert last_assigned.partitions == b
        # steps a poll loop could not act on (its store down) come back first, in their order
        assert second.assignment_changes() == []
        second.requeue_changes(changes)
        assert second.assignment_changes() == changes
        everything = seen["first"] + seen["second"]
        # at-least-once across a rebalance: every message arrives; none is lost
        assert {int(v or b"-1") for v in everything} == set(range(200))
    finally:
        first.close()
        second.close()


def test_commit_then_restart_resumes_from_the_committed_offsets(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=2)
    for i in range(100):
        producer.send(topic, b"%d" % i, partition=i % 2)
    producer.flush(10)
    group = f"g-{topic}"
    with RawConsumer(settings, [topic], group_id=group) as consumer:
        got = consume(consumer, 100)
        assert len(got) == 100
        # pretend only the first 20 of each partition were processed durably
        done = {TopicPartition(topic, p): 20 for p in range(2)}
        consumer.commit(done)
        assert consumer.committed(TopicPartition(topic, 0)) == 20
    with RawConsumer(settings, [topic], group_id=group) as restarted:
        again = consume(restarted, 60)
    assert len(again) == 60
    for p in range(2):
        offsets = sorted(m.offset for m in again if m.partition == p)
        assert offsets == list(range(20, 50))


def test_seek_rereads_from_the_given_offset(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    for i in range(30):
        producer.send(topic, b"%d" % i)
    producer.flush(10)
    tp = TopicPartition(topic, 0)
    with RawConsumer(settings, partitions=[tp]) as consumer:
        assert len(consume(consumer, 30)) == 30
        consumer.seek(tp, 25)
        assert [m.offset for m in consume(consumer, 5)] == [25, 26, 27, 28, 29]
        assert consumer.position(tp) == 30
        # A partition revoked meanwhile (kafka-python: ValueError) is a BrokerError, never a crash.
        with pytest.raises(BrokerError, match=r"seek .*\[1\] failed: ValueError: Unassigned partition"):
            consumer.seek(TopicPartition(topic, 1), 0)


def test_lag_is_highwater_minus_position(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()
    for i in range(50):
        producer.send(topic, b"%d" % i)
    producer.flush(10)
    tp = TopicPartition(topic, 0)
    with RawConsumer(settings, partitions=[tp]) as consumer:
        got: list[RawMessage] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=200, max_records=20)
        assert len(got) == 20
        assert consumer.lag() == {tp: 30}
        consume(consumer, 30)
        assert consumer.lag() == {tp: 0}


# ---------------------------------------------------------------------------------- admin, dead letters


def test_ensure_topics_creates_only_missing_topics_and_delete_ignores_unknown(
    settings: KafkaSettings, kafka_topic: Callable[..., str]
) -> None:
    existing = kafka_topic(partitions=3)
    fresh = f"{existing}-new"
    try:
        assert ensure_topics(settings, {existing: 3, fresh: 2}) == [fresh]
        assert ensure_topics(settings, {existing: 3, fresh: 2}) == []
        with RawProducer(settings) as producer:
            assert producer.partitions_for(fresh) == {0, 1}
    finally:
        delete_topics(settings, [fresh, f"{existing}-never-created"])


def test_ensure_topics_refuses_zero_partitions(settings: KafkaSettings) -> None:
    with pytest.raises(ConfigError, match="at least 1 partition"):
        ensure_topics(settings, {"t": 0})


def test_dead_letter_carries_reason_detail_source_and_the_original_bytes(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    dlq = kafka_topic()
    original = b"\xff\x00not json at all"
    publish_dead_letter(
        producer, dlq, original, "undecodable", "message is not UTF-8 JSON", ("serving-log", 3, 1234)
    ).wait(10)
    with RawConsumer(settings, partitions=[TopicPartition(dlq, 0)]) as consumer:
        [message] = consume(consumer, 1)
    letter = read_dead_letter(message)
    assert letter.value == original
    assert letter.reason == "undecodable"
    assert letter.detail == "message is not UTF-8 JSON"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("serving-log", 3, 1234)


def test_a_keyless_tombstone_and_a_too_big_value_are_dead_lettered_without_their_value(
    settings: KafkaSettings, producer: RawProducer, kafka_topic: Callable[..., str]
) -> None:
    """Kafka takes no message without key and value, and a producer none above its request size."""
    dlq = kafka_topic()
    source = ("serving-log", 0, 7)
    publish_dead_letter(producer, dlq, None, "undecodable", "a tombstone", source).wait(10)
    big = b"x" * 5_000
    publish_dead_letter(producer, dlq, big, "oversized", "too big", source, max_value_bytes=4_096).wait(10)
    publish_dead_letter(producer, dlq, big, "oversized", "fits", source, max_value_bytes=5_000).wait(10)
    with RawConsumer(settings, partitions=[TopicPartition(dlq, 0)]) as consumer:
        tombstone, omitted, kept = map(read_dead_letter, consume(consumer, 3))
    assert (tombstone.value, tombstone.value_omitted) == (b"", None)
    assert (omitted.value, omitted.value_omitted, omitted.detail) == (b"", 5_000, "too big")
    assert (kept.value, kept.value_omitted) == (big, None)


def test_reading_an_ordinary_message_as_dead_letter_is_refused() -> None:
    plain = RawMessage("t", 0, 5, None, b"x", 0, [])
    with pytest.raises(BrokerError, match="not a dead letter"):
        read_dead_letter(plain)
    names = ("reason", "detail", "source_topic", "source_partition", "source_offset")
    headers = [(f"skewguard.{name}", b"x") for name in names]  # (a partition that is no number)
    with pytest.raises(BrokerError, match="not a dead letter: invalid literal"):  # (was ValueError)
        read_dead_letter(RawMessage("t", 0, 6, None, b"x", 0, headers))


# ---------------------------------------------------------------------------------- settings


def test_production_defaults_are_safe_for_a_real_cluster() -> None:
    s = KafkaSettings(bootstrap_servers="kafka-1:9092, kafka-2:9092")
    assert s.bootstrap_servers == ["kafka-1:9092", "kafka-2:9092"]
    assert s.profile is KafkaProfile.PRODUCTION
    assert s.session_timeout_ms >= 6000  # real Kafka refuses shorter sessions
    assert s.acks == "all"
    assert s.enable_idempotence
    config = s.consumer_config("g")
    assert config["enable_auto_commit"] is False
    assert config["auto_offset_reset"] == "earliest"
    assert "value_deserializer" not in config
    assert s.producer_config()["compression_type"] == "lz4"


def test_local_profile_speeds_up_group_joins_but_explicit_values_win() -> None:
    s = KafkaSettings.local("127.0.0.1:9092")
    assert (s.session_timeout_ms, s.heartbeat_interval_ms) == (2000, 300)
    assert not s.enable_idempotence
    tuned = KafkaSettings.local("127.0.0.1:9092", session_timeout_ms=5000)
    assert (tuned.session_timeout_ms, tuned.heartbeat_interval_ms) == (5000, 300)


def test_inconsistent_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        KafkaSettings(bootstrap_servers="k:9092", session_timeout_ms=2000, heartbeat_interval_ms=3000)
    with pytest.raises(ValidationError, match="bootstrap_servers"):
        KafkaSettings(bootstrap_servers="")
    with pytest.raises(ValidationError, match="unknown_option"):
        KafkaSettings(bootstrap_servers="k:9092", unknown_option=1)  # type: ignore[call-arg]


def test_security_options_pass_through_without_leaking_secrets_in_repr() -> None:
    s = KafkaSettings(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="hunter2",
        ssl_cafile="ca.pem",
        client_options={"connections_max_idle_ms": 60000},
    )
    config = s.consumer_config("g")
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "hunter2"
    assert config["ssl_cafile"] == "ca.pem"
    assert config["connections_max_idle_ms"] == 60000
    assert "hunter2" not in repr(s)
    # a consumer-only option reaches the consumer but not the producer, which would refuse it
    tuned = KafkaSettings(bootstrap_servers="k:9092", client_options={"fetch_min_bytes": 1024})
    assert tuned.consumer_config("g")["fetch_min_bytes"] == 1024
    assert "fetch_min_bytes" not in tuned.producer_config()
    with pytest.raises(ValidationError, match="no_such_option"):
        KafkaSettings(bootstrap_servers="k:9092", client_options={"no_such_option": 1})


def test_consumer_refuses_deserializers_and_auto_commit(settings: KafkaSettings) -> None:
    with pytest.raises(ConfigError, match="value_deserializer"):
        RawConsumer(settings, ["t"], group_id="g", value_deserializer=bytes.decode)
    with pytest.raises(ConfigError, match="either topics"):
        RawConsumer(settings, group_id="g")


# ---------------------------------------------------------------------------------- outages


def test_consumer_rides_out_an_outage_and_reads_again_after_the_broker_returns() -> None:
    with EmbeddedBroker() as broker:
        settings = KafkaSettings.local(broker.bootstrap_servers, unavailable_deadline_s=20)
        ensure_topics(settings, {"events": 1})
        tp = TopicPartition("events", 0)
        with RawProducer(settings) as producer:
            producer.send("events", b"before").wait(10)
        consumer = RawConsumer(settings, partitions=[tp])
        try:
            assert [m.value for m in consume(consumer, 1)] == [b"before"]
            broker.stop()
            started = time.monotonic()
            while time.monotonic() - started < 1.5:
                assert consumer.poll(timeout_ms=100) == []  # no exception while the broker is down
            assert consumer.broker_down_for_s > 0
            broker.restart()  # same port, empty broker
            ensure_topics(settings, {"events": 1})
            with RawProducer(settings) as producer:
                for i in range(3):
                    producer.send("events", b"after-%d" % i)
            # the consumer goes on from its position (1); the emptied broker numbered from 0 again
            assert [m.value for m in consume(consumer, 2, timeout_s=20)] == [b"after-1", b"after-2"]
            assert consumer.broker_down_for_s == 0
        finally:
            consumer.close(timeout_s=1)


def test_consumer_raises_broker_error_once_the_outage_deadline_passes() -> None:
    with EmbeddedBroker() as broker:
        settings = KafkaSettings.local(broker.bootstrap_servers, unavailable_deadline_s=1.0)
        ensure_topics(settings, {"events": 1})
        consumer = RawConsumer(settings, partitions=[TopicPartition("events", 0)])
        try:
            consumer.poll(timeout_ms=200)
            broker.stop()
            started = time.monotonic()
            with pytest.raises(BrokerError, match="unreachable"):
                while time.monotonic() - started < 15:
                    consumer.poll(timeout_ms=100)
            assert 1.0 <= time.monotonic() - started < 10
        finally:
            consumer.close(timeout_s=1)


def test_producer_close_with_the_broker_gone_returns_within_its_timeout() -> None:
    with EmbeddedBroker() as broker:
        settings = KafkaSettings.local(broker.bootstrap_servers)
        ensure_topics(settings, {"events": 1})
        producer = RawProducer(settings)
        producer.send("events", b"x").wait(10)
        broker.stop()
        producer.send("events", b"stranded")
        started = time.monotonic()
        assert producer.close(timeout_s=1.0) is False
        assert time.monotonic() - started < 5
