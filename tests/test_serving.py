"""ServingLogger against the real broker (delivery, outages, flush/close) and the FeatureGroupFetcher."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import (
    KafkaSettings,
    RawConsumer,
    RawMessage,
    TopicPartition,
    ensure_topics,
    partition_for_key,
)
from skewguard.records import ServingRecord, decode_message
from skewguard.serving import FeatureGroupFetcher, ServingLogger

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def dead_settings() -> KafkaSettings:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return KafkaSettings.local(f"127.0.0.1:{port}")


def read_all(settings: KafkaSettings, topic: str, partitions: int, expect_records: int) -> list[RawMessage]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    messages: list[RawMessage] = []
    records = 0
    with RawConsumer(settings, partitions=tps) as consumer:
        deadline = time.monotonic() + 20
        while records < expect_records and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=2000)
            messages.extend(batch)
            records += sum(len(decode_message(m.value).records) for m in batch)
        # anything beyond the expected count would be a duplicate: give it a moment to show up
        messages.extend(consumer.poll(timeout_ms=300))
    return messages


def decoded(messages: list[RawMessage]) -> list[ServingRecord]:
    return [r for m in messages for r in decode_message(m.value).records]


def make_logger(
    settings: KafkaSettings, topic: str, kind: type[ServingLogger] = ServingLogger, **kwargs: Any
) -> ServingLogger:
    """A logger of model churn v3 (``kind``: a subclass that alters one step, for a fault test)."""
    return kind(settings, topic, model="churn", model_version="v3", feature_state_hash="3f2a", **kwargs)


def log_n(logger: ServingLogger, n: int, start: int = 0) -> list[bool]:
    return [
        logger.log(
            request_id=f"req-{i}",
            features={"x": i * 0.5, "plan": "pro", "flag": i % 2 == 0},
            prediction=0.25,
            raw_inputs={"signup": "2024-01-01T00:00:00+00:00"},
            event_time=T0 + timedelta(milliseconds=i),
        )
        for i in range(start, start + n)
    ]


# ------------------------------------------------------------------------------------------ delivery


@pytest.mark.kafka
def test_ten_thousand_logged_records_arrive_exactly_once_in_batch_envelopes(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=2)
    with make_logger(settings, topic, batch_records=100) as logger:
        assert all(log_n(logger, 10_000))
        assert logger.flush(timeout_s=30)
        stats = logger.stats()
    assert (stats.sent, stats.dropped, stats.failed, stats.invalid, stats.queued) == (10_000, 0, 0, 0, 0)

    messages = read_all(settings, topic, 2, 10_000)
    records = decoded(messages)
    counts = Counter(r.request_id for r in records)
    assert set(counts) == {f"req-{i}" for i in range(10_000)}
    assert max(counts.values()) == 1, "no record may arrive twice"
    assert len(messages) <= 10_000 // 10, "records travel in batch envelopes, not one per message"
    sample = next(r for r in records if r.request_id == "req-4321")
    assert sample.features == {"x": 4321 * 0.5, "plan": "pro", "flag": False}
    assert (sample.model, sample.model_version, sample.feature_state_hash) == ("churn", "v3", "3f2a")
    assert sample.event_time == T0 + timedelta(milliseconds=4321)


class FailingOnce(ServingLogger):
    """A logger whose own code fails once mid-batch (a bug, or a library raising what it should not):
    after sending the first partition's envelope, the second partition's run raises."""

    failed = False

    def _send_run(self, producer: Any, records: list[ServingRecord], first_seq: int, partition: int) -> None:
        if self._handed and not FailingOnce.failed:
            FailingOnce.failed = True
            msg = "a bug in the sender"
            raise RuntimeError(msg)
        super()._send_run(producer, records, first_seq, partition)


@pytest.mark.kafka
def test_an_error_mid_batch_fails_only_the_unsent_records_and_the_logger_goes_on(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    """The whole batch was resolved as failed over ranges already sent: flush() then waited forever."""
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=2)
    FailingOnce.failed = False
    with make_logger(settings, topic, FailingOnce) as logger:
        assert all(log_n(logger, 40))
        assert logger.flush(timeout_s=30)
        first = logger.stats()
        assert FailingOnce.failed and first.sent > 0 and first.failed > 0
        assert first.sent + first.failed == 40 and first.queued == 0
        assert "a bug in the sender" in (first.last_error or "")
        assert all(log_n(logger, 10, start=40))  # the thread lives on
        assert logger.flush(timeout_s=30)
        assert logger.stats().sent == first.sent + 10
    assert len(decoded(read_all(settings, topic, 2, first.sent + 10))) == first.sent + 10


class TrafficDuringSend(ServingLogger):
    """Five more records arrive while the first batch is being sent (steady traffic, in one test)."""

    arrived = False

    def _send(self, producer: Any, records: list[ServingRecord], first_seq: int, partitions: int) -> None:
        if not TrafficDuringSend.arrived:
            TrafficDuringSend.arrived = True
            log_n(self, 5, start=1000)
        super()._send(producer, records, first_seq, partitions)


@pytest.mark.kafka
def test_after_a_flush_under_traffic_batches_linger_again(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    """A flush asked while records kept arriving stayed pending until the queue happened to be empty:
    meanwhile every batch skipped its linger, so steady traffic went out in tiny envelopes."""
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=1)
    TrafficDuringSend.arrived = False
    with make_logger(settings, topic, TrafficDuringSend, linger_ms=600_000) as logger:
        assert all(log_n(logger, 10))
        assert logger.flush(timeout_s=30)  # the ten logged before it
        time.sleep(0.5)
        assert TrafficDuringSend.arrived and logger.stats().sent == 10  # the five wait for their linger
        assert logger.flush(timeout_s=30)
        assert logger.stats().sent == 15


@pytest.mark.kafka
def test_one_defaulted_feature_named_as_a_string_is_logged_as_that_name(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=1)
    with make_logger(settings, topic) as logger:
        assert logger.log(request_id="r", features={"plan": "free"}, prediction=0.5, defaulted="plan")
        assert logger.flush(timeout_s=30)
    [record] = decoded(read_all(settings, topic, 1, 1))
    assert record.defaulted == ["plan"]  # (not ["p", "l", "a", "n"])


def test_bootstrap_servers_are_checked_when_configured_not_at_the_first_connection() -> None:
    with pytest.raises(ValidationError, match=r"bootstrap server 'localhost:90x2'.*port in 1\.\.65535"):
        KafkaSettings.local("localhost:90x2")
    with pytest.raises(ValidationError, match="port in 1"):
        KafkaSettings.local("k1:9092,k2:0")


@pytest.mark.kafka
def test_a_full_batch_is_sent_without_waiting_out_the_linger_and_a_partial_one_waits(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    """Only a full batch (or flush/close) ends the linger early (the sleep's wake-ups, not its cost)."""
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=1)
    with make_logger(settings, topic, batch_records=50, linger_ms=600_000) as logger:
        assert all(log_n(logger, 49))
        time.sleep(0.5)
        assert logger.stats().sent == 0, "a partial batch waits for its linger (ten minutes here)"
        assert all(log_n(logger, 1, start=49))  # the 50th record fills the batch
        deadline = time.monotonic() + 30
        while logger.stats().sent < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logger.stats().sent == 50, "a full batch must not wait out the linger"
        assert all(log_n(logger, 10, start=50))
        assert logger.flush(timeout_s=30)  # flush ends the linger of a partial batch
        assert logger.stats().sent == 60
    assert sorted(r.request_id for r in decoded(read_all(settings, topic, 1, 60))) == sorted(
        f"req-{i}" for i in range(60)
    )


@pytest.mark.kafka
def test_envelopes_are_co_partitioned_with_labels_keyed_by_request_id(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic(partitions=3)
    with make_logger(settings, topic, batch_records=50) as logger:
        assert all(log_n(logger, 1_500))
        assert logger.flush(timeout_s=30)
    messages = read_all(settings, topic, 3, 1_500)
    placed: Counter[int] = Counter()
    for message in messages:
        for record in decode_message(message.value).records:
            # The partition a label keyed by this request id goes to: the monitor joins there.
            assert message.partition == partition_for_key(record.request_id.encode(), 3)
            placed[message.partition] += 1
    assert sum(placed.values()) == 1_500
    assert len(placed) == 3


@pytest.mark.kafka
def test_close_delivers_what_is_still_queued_and_later_logs_are_dropped(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic()
    logger = make_logger(settings, topic, linger_ms=500)
    assert all(log_n(logger, 300))
    stats = logger.close(timeout_s=10)  # no flush before: close must deliver
    assert (stats.sent, stats.failed, stats.queued) == (300, 0, 0)
    assert logger.log(request_id="late", features={}, prediction=1.0) is False
    assert logger.stats().dropped == 1
    assert logger.close() == logger.stats()  # idempotent
    assert len(decoded(read_all(settings, topic, 1, 300))) == 300


@pytest.mark.kafka
def test_invalid_records_are_counted_and_their_neighbours_still_delivered(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic()
    naive = datetime(2024, 5, 1, 12, 0)  # noqa: DTZ001 - the naive input under test
    with make_logger(settings, topic) as logger:
        assert logger.log(request_id="ok-1", features={"x": 1}, prediction=0.5)
        # refused at once: naive event time
        assert logger.log(request_id="bad-time", features={}, prediction=0.5, event_time=naive) is False
        # refused by the encoder in the background: a naive datetime inside raw inputs
        assert logger.log(request_id="bad-raw", features={}, prediction=0.5, raw_inputs={"t": naive})
        assert logger.log(request_id="ok-2", features={"x": 2}, prediction=0.5)
        assert logger.flush(timeout_s=10)
        assert "bad-raw" in (logger.stats().last_error or "")
        # a request id that is no text: refused at once; one that is no UTF-8, in the background
        assert logger.log(request_id=123, features={}, prediction=0.5) is False  # type: ignore[arg-type]
        lone_surrogate = ServingRecord("bad-\ud800", datetime.now(UTC), "ctr", "v1", "h", {}, 0.5)
        assert logger.log_record(lone_surrogate)
        assert logger.flush(timeout_s=10)
        stats = logger.stats()
        assert "UTF-8" in (stats.last_error or "")
        # the sender lives on: a record after them is still delivered
        assert logger.log(request_id="ok-3", features={"x": 3}, prediction=0.5)
        assert logger.flush(timeout_s=10)
        stats = logger.stats()
    assert (stats.sent, stats.invalid, stats.failed, stats.queued) == (3, 4, 0, 0)
    assert [r.request_id for r in decoded(read_all(settings, topic, 1, 3))] == ["ok-1", "ok-2", "ok-3"]


@pytest.mark.kafka
def test_envelopes_are_columnar_never_above_the_size_limit_and_an_oversized_record_is_dropped_alone(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic()
    limit = 4_000
    with make_logger(settings, topic, max_message_bytes=limit, batch_records=500, linger_ms=200) as logger:
        for i in range(120):
            assert logger.log(request_id=f"r{i:03d}", features={"x": float(i), "plan": "pro"}, prediction=0.5)
        assert logger.log(request_id="huge", features={"text": "x" * 5_000}, prediction=0.5)
        assert logger.flush(timeout_s=10)
        stats = logger.stats()
    assert (stats.sent, stats.invalid, stats.failed, stats.queued) == (120, 1, 0, 0)
    assert stats.last_error is not None and "huge" in stats.last_error
    messages = read_all(settings, topic, 1, 120)
    assert len(messages) > 1  # 120 records do not fit in one 4 kB message: the run was halved
    assert all(len(m.value or b"") <= limit and b'"columns"' in (m.value or b"") for m in messages)
    assert sorted(r.request_id for r in decoded(messages)) == [f"r{i:03d}" for i in range(120)]


# ------------------------------------------------------------------------------------------ broker down


def test_log_never_blocks_or_raises_when_the_broker_is_unreachable() -> None:
    logger = make_logger(dead_settings(), "serving-log", queue_size=500, batch_records=100)
    try:
        slowest = 0.0
        results = []
        began = time.perf_counter()
        for i in range(5000):
            started = time.perf_counter()
            results.append(logger.log(request_id=f"r{i}", features={"x": i}, prediction=0.1))
            slowest = max(slowest, time.perf_counter() - started)
        # blocking would mean seconds (connect and metadata timeouts); the margins allow a loaded machine
        assert time.perf_counter() - began < 2.0
        assert slowest < 0.5, f"log() took {slowest * 1000:.1f} ms"
        stats = logger.stats()
        accepted = sum(results)
        assert stats.dropped == 5000 - accepted
        assert 500 <= accepted <= 600  # the queue, plus at most one batch the thread holds for retry
        assert stats.sent == 0
        assert stats.queued == accepted
        deadline = time.monotonic() + 5  # the background thread reports its failed attempt asynchronously
        while logger.stats().last_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "no broker reachable" in str(logger.stats().last_error)
        started = time.perf_counter()
        assert logger.flush(timeout_s=0.3) is False
        assert time.perf_counter() - started < 2
    finally:
        started = time.perf_counter()
        final = logger.close(timeout_s=0.5)
        assert time.perf_counter() - started < 4
    assert (final.sent, final.failed, final.queued) == (0, accepted, 0)
    assert final.sent + final.failed + final.dropped == 5000


@pytest.mark.kafka
def test_logger_reconnects_after_a_broker_restart() -> None:
    with EmbeddedBroker() as broker:
        settings = KafkaSettings.local(broker.bootstrap_servers)
        ensure_topics(settings, {"serving-log": 1})
        logger = make_logger(settings, "serving-log")
        try:
            assert all(log_n(logger, 100))
            assert logger.flush(timeout_s=10)
            broker.restart()  # an empty broker on the same port
            ensure_topics(settings, {"serving-log": 1})
            assert all(log_n(logger, 100, start=100))
            assert logger.flush(timeout_s=20)
        finally:
            stats = logger.close(timeout_s=5)
        assert (stats.sent, stats.failed, stats.dropped) == (200, 0, 0)
        after = decoded(read_all(settings, "serving-log", 1, 100))
        assert sorted(r.request_id for r in after) == sorted(f"req-{i}" for i in range(100, 200))


# ------------------------------------------------------------------------------------------ feature groups


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let a deliberately slow fetcher finish


def test_slow_and_raising_groups_fall_back_to_defaults_and_are_named(release: threading.Event) -> None:
    defaults: dict[str, dict[str, Any]] = {
        "profile": {"age": 30.0, "plan": "free"},
        "activity": {"clicks_7d": 0, "last_seen_h": 999.0},
        "fraud": {"risk": 0.0},
    }

    def slow() -> Mapping[str, Any]:
        release.wait(5)
        return {"clicks_7d": 12, "last_seen_h": 1.5}

    def broken() -> Mapping[str, Any]:
        raise TimeoutError("feature store unavailable")

    with FeatureGroupFetcher(defaults, timeout_s=0.2, max_workers=4) as fetcher:
        started = time.perf_counter()
        result = fetcher.fetch(
            {"profile": lambda: {"age": 41.0, "plan": "pro"}, "activity": slow, "fraud": broken}
        )
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert result.features == {"age": 41.0, "plan": "pro", "clicks_7d": 0, "last_seen_h": 999.0, "risk": 0.0}
    assert sorted(result.defaulted) == ["clicks_7d", "last_seen_h", "risk"]
    assert set(result.failed_groups) == {"activity", "fraud"}
    assert "timed out" in result.failed_groups["activity"]
    assert "feature store unavailable" in result.failed_groups["fraud"]


def test_hanging_fetchers_do_not_pile_up_and_a_closed_fetcher_gives_defaults(
    release: threading.Event,
) -> None:
    """Every worker stuck: fetches queued behind them without bound, each request paying the timeout."""

    def hangs() -> Mapping[str, Any]:
        release.wait(10)
        return {"age": 1.0}

    fetcher = FeatureGroupFetcher({"profile": {"age": 30.0}}, timeout_s=0.05, max_workers=2)
    reasons = [fetcher.fetch({"profile": hangs}).failed_groups["profile"] for _ in range(6)]
    assert reasons[:4] == ["timed out after 0.05 s"] * 4  # two running, two waiting behind them
    assert all("every fetch worker is busy" in reason for reason in reasons[4:])
    started = time.perf_counter()
    result = fetcher.fetch({"profile": hangs})
    assert time.perf_counter() - started < 0.04 and result.features == {"age": 30.0}  # at once
    assert fetcher._pool._work_queue.qsize() <= 2
    release.set()
    deadline = time.monotonic() + 5
    while "busy" in fetcher.fetch({"profile": lambda: {"age": 2.0}}).failed_groups.get("profile", ""):
        assert time.monotonic() < deadline, "the slots of finished fetches must come back"
        time.sleep(0.01)
    assert fetcher.fetch({"profile": lambda: {"age": 2.0}}).features == {"age": 2.0}
    fetcher.close()
    closed = fetcher.fetch({"profile": lambda: {"age": 3.0}})  # (it raised RuntimeError before)
    assert closed.features == {"age": 30.0} and "closed" in closed.failed_groups["profile"]


def test_missing_feature_in_an_answer_is_defaulted_alone() -> None:
    with FeatureGroupFetcher({"profile": {"age": 30.0, "plan": "free"}}, timeout_s=1.0) as fetcher:
        result = fetcher.fetch({"profile": lambda: {"age": 52.0}})
    assert result.features == {"age": 52.0, "plan": "free"}
    assert result.defaulted == ["plan"]
    assert result.failed_groups == {}


def test_non_mapping_answer_falls_back_to_defaults() -> None:
    with FeatureGroupFetcher({"profile": {"age": 30.0}}, timeout_s=1.0) as fetcher:
        result = fetcher.fetch({"profile": lambda: [52.0]})  # type: ignore[dict-item, return-value]
    assert result.features == {"age": 30.0}
    assert result.defaulted == ["age"]
    assert "expected a mapping" in result.failed_groups["profile"]


def test_group_without_declared_defaults_is_a_configuration_error() -> None:
    with (
        FeatureGroupFetcher({"profile": {"age": 30.0}}, timeout_s=1.0) as fetcher,
        pytest.raises(ConfigError, match="no declared defaults"),
    ):
        fetcher.fetch({"profile": dict, "unknown": dict})


def test_logger_and_fetcher_refuse_nonsense_settings() -> None:
    with pytest.raises(ConfigError, match="queue_size"):
        make_logger(dead_settings(), "t", queue_size=0)
    with pytest.raises(ConfigError, match=r"'serving log'.*character other than"):
        make_logger(dead_settings(), "serving log")
    with pytest.raises(ConfigError, match="timeout_s"):
        FeatureGroupFetcher({}, timeout_s=0)
