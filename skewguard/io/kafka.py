"""Typed wrappers around kafka-python: settings, a raw-bytes producer and consumer, topic admin, dead letters.

Everything crosses this boundary as bytes and small typed objects; kafka-python errors become
:class:`~skewguard.errors.BrokerError` here. Decisions that follow from the broker notes
(KAFKA_BROKER.md) and kafka-python 3's behaviour:

* No kafka-python deserializer: a deserializer that raises wedges the next poll, so the consumer
  hands out raw bytes and :mod:`skewguard.records` decodes them.
* Offsets are committed synchronously from the poll loop, never inside a rebalance listener (a
  blocking call there deadlocks kafka-python 3). The listener only queues what changed;
  :meth:`RawConsumer.assignment_changes` hands that to the poll loop.
* Lag is ``highwater - position``: ``end_offsets()`` is wrong on Tansu.
* New groups start at ``earliest`` (``latest`` is wrong on Tansu, and losing the head of a serving log
  is worse than re-reading it).
* Broker outages: kafka-python reconnects by itself with backoff; these wrappers keep polling quietly
  and raise a BrokerError only when the broker has been unreachable for longer than
  ``KafkaSettings.unavailable_deadline_s``. Client construction waits for a TCP answer first, because a
  kafka-python client whose bootstrap fails leaves its IO thread behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Any, Final, Literal, NamedTuple, Self, TypeVar

import kafka.errors as kafka_errors
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as _KafkaTP
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from skewguard.errors import BrokerError, ConfigError, MessageTooLarge

__all__ = [
    "KEY_OMITTED_HEADER",
    "VALUE_OMITTED_HEADER",
    "AssignmentChange",
    "ChangeKind",
    "CommitFailed",
    "Compression",
    "DeadLetter",
    "DeliveredRecord",
    "Delivery",
    "KafkaProfile",
    "KafkaSettings",
    "RawConsumer",
    "RawMessage",
    "RawProducer",
    "SaslMechanism",
    "SecurityProtocol",
    "TopicPartition",
    "broker_reachable",
    "delete_topics",
    "ensure_topics",
    "publish_dead_letter",
    "read_dead_letter",
    "topic_name_problem",
    "wait_for_broker",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Header names of a dead-lettered message (values are UTF-8).
DEAD_LETTER_HEADERS: Final = (
    "skewguard.reason",
    "skewguard.detail",
    "skewguard.source_topic",
    "skewguard.source_partition",
    "skewguard.source_offset",
)
_MAX_DETAIL_CHARS: Final = 2000
#: Header of a dead letter whose value was too big to send: the original value's size in bytes.
VALUE_OMITTED_HEADER: Final = "skewguard.value_omitted"
#: Present (value ``1``) on a dead letter sent without its source message's key.
KEY_OMITTED_HEADER: Final = "skewguard.key_omitted"


# ======================================================================================= settings


class KafkaProfile(StrEnum):
    """Default sets: ``production`` for real clusters, ``local`` for the embedded broker (tests, demo)."""

    PRODUCTION = "production"
    LOCAL = "local"


class SecurityProtocol(StrEnum):
    """Kafka ``security.protocol``."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    """Kafka ``sasl.mechanism``."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    GSSAPI = "GSSAPI"
    OAUTHBEARER = "OAUTHBEARER"


class Compression(StrEnum):
    """Producer compression codec; lz4 is the fast default (the kafka-python extra is a dependency)."""

    NONE = "none"
    GZIP = "gzip"
    LZ4 = "lz4"
    ZSTD = "zstd"
    SNAPPY = "snappy"


#: Values the ``local`` profile applies to every field the user did not set. Group join takes half the
#: session timeout, so 2 s sessions make tests and the demo start in ~1 s; real Kafka refuses sessions
#: under 6 s, which is why these are not the defaults. Idempotence is off because a restarted
#: in-memory broker forgets producer ids and an idempotent producer then fails for good.
_LOCAL_PROFILE: Final[Mapping[str, Any]] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 300,
    "enable_idempotence": False,
    "unavailable_deadline_s": 30.0,
    "reconnect_backoff_max_ms": 1000,
}


class KafkaSettings(BaseModel):
    """Connection and client settings shared by every skewguard Kafka client.

    Defaults are safe for a production cluster (45 s sessions, ``acks="all"``, idempotent producer).
    ``profile="local"`` switches the unset fields to the embedded-broker values. ``client_options``
    is passed, last, to each kafka-python client that knows the option, for anything not modelled here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # NoDecode: from the environment, "k1:9092,k2:9092" is split by _split_servers instead of parsed as JSON.
    bootstrap_servers: Annotated[list[str], NoDecode] = Field(min_length=1)
    client_id: str = "skewguard"
    profile: KafkaProfile = KafkaProfile.PRODUCTION

    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    client_options: dict[str, Any] = Field(default_factory=dict)

    request_timeout_ms: PositiveInt = 30_000
    reconnect_backoff_ms: PositiveInt = 100
    reconnect_backoff_max_ms: PositiveInt = 10_000
    #: How long the broker may stay unreachable before a client gives up with a BrokerError.
    unavailable_deadline_s: PositiveFloat = 120.0

    session_timeout_ms: PositiveInt = 45_000
    heartbeat_interval_ms: PositiveInt = 3_000
    max_poll_interval_ms: PositiveInt = 300_000
    fetch_max_wait_ms: PositiveInt = 500
    max_partition_fetch_bytes: PositiveInt = 1_048_576

    compression: Compression = Compression.LZ4
    linger_ms: NonNegativeInt = 5
    batch_size_bytes: PositiveInt = 262_144
    acks: Literal["all", 1, 0] = "all"
    enable_idempotence: bool = True
    max_request_size: PositiveInt = 1_048_576
    delivery_timeout_ms: PositiveInt = 120_000
    #: How long ``send`` may block for metadata or buffer space before failing.
    max_block_ms: PositiveInt = 60_000

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):  # a JSON list, e.g. from an environment variable
                try:
                    return json.loads(text)
                except ValueError:
                    return value
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, servers: list[str]) -> list[str]:
        # Here, not at the first connection: a logger's background thread would only count failures.
        for server in servers:
            try:
                _parse_server(server)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return servers

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and str(data.get("profile", "")) == KafkaProfile.LOCAL:
            return {**_LOCAL_PROFILE, **data}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            msg = (
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below session_timeout_ms "
                f"({self.session_timeout_ms}); Kafka recommends at most a third of it"
            )
            raise ValueError(msg)
        if self.fetch_max_wait_ms >= self.request_timeout_ms:
            msg = f"fetch_max_wait_ms ({self.fetch_max_wait_ms}) must be below request_timeout_ms"
            raise ValueError(msg)
        if self.sasl_mechanism is not None and not self.security_protocol.startswith("SASL"):
            msg = f"sasl_mechanism is set but security_protocol is {self.security_protocol}; use SASL_SSL"
            raise ValueError(msg)
        unknown = sorted(
            name
            for name in self.client_options
            if not any(name in cls.DEFAULT_CONFIG for cls in (KafkaConsumer, KafkaProducer, KafkaAdminClient))
        )
        if unknown:
            msg = f"client_options: {unknown} is not an option of any kafka-python client"
            raise ValueError(msg)
        if self.enable_idempotence and self.acks != "all":
            msg = f"enable_idempotence needs acks='all', got acks={self.acks!r}"
            raise ValueError(msg)
        return self

    @classmethod
    def local(cls, bootstrap_servers: str | Sequence[str], **overrides: Any) -> KafkaSettings:
        """Settings for the embedded broker (tests, demo): fast group joins, no idempotence."""
        return cls(bootstrap_servers=bootstrap_servers, profile=KafkaProfile.LOCAL, **overrides)

    # ------------------------------------------------------------------ kafka-python configs

    def common_config(self) -> dict[str, Any]:
        """Options every kafka-python client takes: connection, security, timeouts."""
        config: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": str(self.security_protocol),
            "request_timeout_ms": self.request_timeout_ms,
            "reconnect_backoff_ms": self.reconnect_backoff_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }
        if self.sasl_mechanism is not None:
            config["sasl_mechanism"] = str(self.sasl_mechanism)
        if self.sasl_username is not None:
            config["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
            config["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name) is not None:
                    config[name] = getattr(self, name)
            if self.ssl_password is not None:
                config["ssl_password"] = self.ssl_password.get_secret_value()
        return config

    def producer_config(self) -> dict[str, Any]:
        """Options for a KafkaProducer: batching, compression, durability."""
        config = self.common_config()
        config.update(
            compression_type=None if self.compression is Compression.NONE else str(self.compression),
            linger_ms=self.linger_ms,
            batch_size=self.batch_size_bytes,
            acks=-1 if self.acks == "all" else self.acks,
            enable_idempotence=self.enable_idempotence,
            max_request_size=self.max_request_size,
            delivery_timeout_ms=max(self.delivery_timeout_ms, self.linger_ms + self.request_timeout_ms),
            max_block_ms=self.max_block_ms,
        )
        config.update(_options_for(KafkaProducer, self.client_options))
        return config

    def consumer_config(self, group_id: str | None) -> dict[str, Any]:
        """Options for a KafkaConsumer: manual commits, earliest reset, raw bytes (no deserializer)."""
        config = self.common_config()
        config.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
        )
        config.update(_options_for(KafkaConsumer, self.client_options))
        return config

    def admin_config(self) -> dict[str, Any]:
        """Options for a KafkaAdminClient."""
        config = self.common_config()
        config.update(_options_for(KafkaAdminClient, self.client_options))
        return config


def _options_for(client: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The passthrough options this kafka-python client knows (each client refuses unknown ones)."""
    known = client.DEFAULT_CONFIG
    return {name: value for name, value in options.items() if name in known}


# ======================================================================================= small types


class TopicPartition(NamedTuple):
    """A topic partition; equal to (and hashes like) kafka-python's own, so either can key a dict."""

    topic: str
    partition: int


class RawMessage(NamedTuple):
    """One consumed message, value undecoded. ``offset + 1`` is what to commit after processing it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes]]


#: Picks (topic, partition, offset, key, value, timestamp, headers) out of a kafka-python ConsumerRecord
#: by index (twice as fast as by attribute); the indices come from its ``_fields``, not hard-coded.
_RECORD_FIELDS: Final = operator.itemgetter(
    *(
        ConsumerRecord._fields.index(name)
        for name in ("topic", "partition", "offset", "key", "value", "timestamp", "headers")
    )
)


class ChangeKind(StrEnum):
    """Whether partitions were taken away from or given to this consumer."""

    REVOKED = "revoked"
    ASSIGNED = "assigned"


@dataclass(frozen=True, slots=True)
class AssignmentChange:
    """A rebalance step, recorded in the listener and handed to the poll loop in order."""

    kind: ChangeKind
    partitions: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class DeliveredRecord:
    """Where the broker stored a produced message."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered message read back: why it was refused, where it came from, its original bytes."""

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    value: bytes | None
    #: The original value's size when it was too big to dead-letter (then ``value`` is empty).
    value_omitted: int | None = None
    #: Whether the source message's key was left out too (the letter was still too big with it).
    key_omitted: bool = False


class CommitFailed(BrokerError):
    """An offset commit was refused, typically because the group rebalanced meanwhile.

    Harmless when results and offsets are checkpointed in the store: the new owner of the partition
    resumes from the stored offsets.
    """


# ======================================================================================= helpers


def _broker_error(action: str, exc: BaseException) -> BrokerError:
    text = f"Kafka {action} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, _TOO_LARGE):
        return MessageTooLarge(text)
    return BrokerError(text)


#: kafka-python's refusals of a message for its size: the producer's own check, or the broker's answer.
_TOO_LARGE: Final = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError)


def _to_kafka(tp: TopicPartition | tuple[str, int]) -> Any:
    return _KafkaTP(tp[0], tp[1])


def _parse_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep:
        return server, 9092
    host = host.strip("[]")  # IPv6 literal
    number = int(port) if port.isdigit() else -1
    if not host or not 1 <= number <= 65535:
        msg = f"bootstrap server {server!r}: expected host:port with a port in 1..65535"
        raise ConfigError(msg)
    return host, number


def _reachable(servers: Iterable[str], timeout_s: float) -> bool:
    for server in servers:
        host, port = _parse_server(server)
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


#: Kafka's rule for topic names (``org.apache.kafka.common.internals.Topic``).
_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse ``name`` as a topic name, or None when it is a legal one.

    Checked where names are configured: kafka-python only finds out at the first send or metadata
    request, with a ValueError that a background sender would count as a failed batch, record after
    record (and its own check lets a trailing newline through).
    """
    if name in {".", ".."}:
        return f'topic name {name!r} is reserved ("." and ".." are not topic names)'
    if not name:
        return "topic name is empty"
    if len(name) > 249:
        return f"topic name is {len(name)} characters long; Kafka allows at most 249"
    if _TOPIC_NAME.fullmatch(name) is None:
        return f"topic name {name!r} holds a character other than ASCII letters, digits, '.', '_' and '-'"
    return None


def broker_reachable(settings: KafkaSettings, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection now: a cheap probe before building clients."""
    return _reachable(settings.bootstrap_servers, timeout_s)


def wait_for_broker(settings: KafkaSettings, timeout_s: float | None = None) -> None:
    """Wait with backoff until a bootstrap server accepts TCP connections; BrokerError after the deadline.

    Checked before a kafka-python client is built, because a client whose bootstrap times out leaves
    its IO thread running for the rest of the process.
    """
    deadline = time.monotonic() + (settings.unavailable_deadline_s if timeout_s is None else timeout_s)
    delay = settings.reconnect_backoff_ms / 1000
    while not _reachable(settings.bootstrap_servers, timeout_s=1.0):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = settings.unavailable_deadline_s if timeout_s is None else timeout_s
            msg = f"no Kafka broker reachable at {','.join(settings.bootstrap_servers)} after {waited:g} s"
            raise BrokerError(msg)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, settings.reconnect_backoff_max_ms / 1000)


def _build(
    factory: Callable[..., Any], what: str, settings: KafkaSettings, timeout_s: float | None, **config: Any
) -> Any:
    wait_for_broker(settings, timeout_s)
    bootstrap_ms = int(1000 * (settings.unavailable_deadline_s if timeout_s is None else timeout_s))
    try:
        return factory(bootstrap_timeout_ms=max(bootstrap_ms, 1000), **config)
    except (kafka_errors.KafkaConfigurationError, ValueError) as exc:
        msg = f"Kafka {what} configuration refused: {exc}"
        raise ConfigError(msg) from exc
    except (kafka_errors.KafkaError, OSError) as exc:
        action = f"{what} start"
        raise _broker_error(action, exc) from exc


class _OutageClock:
    """Tracks how long the broker has looked unreachable, so callers raise only after the deadline."""

    __slots__ = ("_deadline_s", "_down_since")

    def __init__(self, deadline_s: float) -> None:
        self._deadline_s = deadline_s
        self._down_since: float | None = None

    def healthy(self) -> None:
        self._down_since = None

    def unhealthy(self, what: str) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("Kafka broker unreachable (%s); reconnecting with backoff", what)
        elif now - self._down_since > self._deadline_s:
            msg = f"Kafka broker unreachable for more than {self._deadline_s:g} s ({what})"
            raise BrokerError(msg)

    @property
    def down_for_s(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since


def _connection_count(client: Any) -> float:
    """Open broker connections of a kafka-python client, from its public metrics."""
    for group in client.metrics().values():
        count = group.get("connection-count")
        if count is not None:
            return float(count)
    return 0.0


# ======================================================================================= producer


class Delivery:
    """The pending outcome of one ``send``: wait for it, or attach a callback run on the IO thread."""

    __slots__ = ("_future",)

    def __init__(self, future: Any) -> None:
        self._future = future

    @property
    def done(self) -> bool:
        """Whether the broker has acknowledged or the send has failed."""
        return bool(self._future.is_done)

    def wait(self, timeout_s: float | None = None) -> DeliveredRecord:
        """Block until acknowledged; BrokerError if it failed or ``timeout_s`` passed."""
        try:
            meta = self._future.get(timeout=timeout_s)
        except kafka_errors.KafkaError as exc:
            action = "delivery"
            raise _broker_error(action, exc) from exc
        return DeliveredRecord(meta.topic, meta.partition, meta.offset)

    def on_done(self, callback: Callable[[DeliveredRecord | None, BrokerError | None], None]) -> None:
        """Call ``callback(record, None)`` on success or ``callback(None, error)`` on failure.

        Runs on kafka-python's IO thread: keep it short and never block in it.
        """

        def ok(meta: Any) -> None:
            callback(DeliveredRecord(meta.topic, meta.partition, meta.offset), None)

        def failed(exc: BaseException) -> None:
            callback(None, _broker_error("delivery", exc))

        self._future.add_callback(ok)
        self._future.add_errback(failed)


class RawProducer:
    """Bytes in, batched and lz4-compressed on the way out. Thread-safe, like KafkaProducer."""

    def __init__(
        self, settings: KafkaSettings, *, connect_timeout_s: float | None = None, **overrides: Any
    ) -> None:
        """Connect (waiting up to ``connect_timeout_s``, default the settings' outage deadline).

        ``overrides`` are kafka-python producer options that win over the settings (e.g. ``linger_ms``).
        """
        self._settings = settings
        config = settings.producer_config()
        config.update(overrides)
        self._producer = _build(KafkaProducer, "producer", settings, connect_timeout_s, **config)
        self._closed = False

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        *,
        partition: int | None = None,
    ) -> Delivery:
        """Queue one message; returns at once unless the buffer is full or topic metadata is unknown.

        Those two cases block up to ``max_block_ms``, then raise BrokerError.
        """
        try:
            future = self._producer.send(
                topic,
                value=value,
                key=key,
                headers=list(headers) if headers else None,
                partition=partition,
            )
        except (kafka_errors.KafkaError, ValueError, AssertionError) as exc:
            # (kafka-python raises ValueError/AssertionError for a partition its metadata no longer has)
            action = f"send to {topic!r}"
            raise _broker_error(action, exc) from exc
        return Delivery(future)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued message is acknowledged or failed; BrokerError on timeout."""
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka_errors.KafkaError as exc:
            action = "flush"
            raise _broker_error(action, exc) from exc

    def partitions_for(self, topic: str) -> set[int]:
        """Partition ids of ``topic`` (fetches metadata, blocking up to ``max_block_ms``)."""
        try:
            return set(self._producer.partitions_for(topic) or ())
        except kafka_errors.KafkaError as exc:
            action = f"metadata for {topic!r}"
            raise _broker_error(action, exc) from exc

    def close(self, timeout_s: float = 5.0) -> bool:
        """Deliver what is queued within ``timeout_s``, then close; never raises.

        Returns False when undelivered messages were abandoned (broker down past the timeout).
        """
        if self._closed:
            return True
        self._closed = True
        delivered = True
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka_errors.KafkaError as exc:
            delivered = False
            log.warning("producer closing with undelivered messages (they fail): %s", exc)
            # kafka-python 3.0's close() re-flushes and raises on pending batches, leaving its sender
            # thread running (and raising again from __del__). Force-closing the sender first fails
            # those batches, so the close below completes.
            sender = getattr(self._producer, "_sender", None)
            if sender is not None and hasattr(sender, "force_close"):
                sender.force_close()
                sender.join(timeout_s)
        try:
            self._producer.close(timeout=0)
        except Exception as exc:  # closing must not take the caller down
            log.warning("producer close: %s", exc)
        return delivered

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ======================================================================================= consumer


class _AssignmentRecorder(ConsumerRebalanceListener):  # type: ignore[misc]
    """Queues rebalance steps; deliberately does nothing blocking (kafka-python 3 would deadlock)."""

    def __init__(self, changes: deque[AssignmentChange]) -> None:
        self._changes = changes

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        parts = frozenset(TopicPartition(tp.topic, tp.partition) for tp in revoked)
        if parts:
            self._changes.append(AssignmentChange(ChangeKind.REVOKED, parts))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        parts = frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        if parts:
            self._changes.append(AssignmentChange(ChangeKind.ASSIGNED, parts))


class RawConsumer:
    """A consumer of raw bytes: a group member on ``topics``, or a manual reader of ``partitions``.

    Offsets are never committed automatically: the caller commits, synchronously, what it has
    durably processed (``commit({tp: last_processed_offset + 1})``).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str] = (),
        *,
        group_id: str | None = None,
        partitions: Sequence[TopicPartition] = (),
        connect_timeout_s: float | None = None,
        **overrides: Any,
    ) -> None:
        """Join ``group_id`` on ``topics``, or read ``partitions`` by manual assignment.

        ``overrides`` are kafka-python consumer options that win over the settings; a value
        deserializer is refused, since a raising deserializer wedges the consumer.
        """
        if bool(topics) == bool(partitions):
            msg = "RawConsumer: give either topics (group subscription) or partitions (manual assignment)"
            raise ConfigError(msg)
        if topics and group_id is None:
            msg = "RawConsumer: subscribing to topics needs a group_id"
            raise ConfigError(msg)
        if isinstance(topics, str):
            msg = f"topics: expected a sequence of topic names, got the string {topics!r}"
            raise ConfigError(msg)
        bad = {"value_deserializer", "key_deserializer", "enable_auto_commit"} & overrides.keys()
        if bad:
            msg = f"RawConsumer decodes nothing and commits only on request; remove option(s) {sorted(bad)}"
            raise ConfigError(msg)
        self._settings = settings
        self._group_id = group_id
        self._changes: deque[AssignmentChange] = deque()
        config = settings.consumer_config(group_id)
        config.update(overrides)
        self._consumer = _build(KafkaConsumer, "consumer", settings, connect_timeout_s, **config)
        self._outage = _OutageClock(settings.unavailable_deadline_s)
        self._next_health_check = 0.0
        self._closed = False
        try:
            if topics:
                self._consumer.subscribe(list(topics), listener=_AssignmentRecorder(self._changes))
            else:
                self._consumer.assign([_to_kafka(tp) for tp in partitions])
        except (kafka_errors.KafkaError, ValueError, TypeError) as exc:
            self.close(timeout_s=1.0)
            action = "subscribe"
            raise _broker_error(action, exc) from exc

    # ------------------------------------------------------------------ the hot path

    def poll(self, timeout_ms: int = 100, max_records: int | None = None) -> list[RawMessage]:
        """Fetch what is available within ``timeout_ms``, in partition order; [] if nothing is.

        Never raises for a broker outage shorter than ``unavailable_deadline_s``; after it, BrokerError.
        Rebalances that happened during the call are queued for :meth:`assignment_changes`.
        """
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except kafka_errors.KafkaConnectionError as exc:
            self._outage.unhealthy(str(exc))
            return []
        except kafka_errors.KafkaError as exc:
            if getattr(exc, "retriable", False):
                self._outage.unhealthy(str(exc))
                return []
            action = "poll"
            raise _broker_error(action, exc) from exc
        if not batches:
            self._check_health()
            return []
        self._outage.healthy()
        # the hot path: build the tuples directly from kafka-python's ConsumerRecord fields (~0.2 us each)
        new, fields = tuple.__new__, _RECORD_FIELDS
        return [new(RawMessage, fields(r)) for records in batches.values() for r in records]

    def _check_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + 0.5
        if _connection_count(self._consumer) > 0:
            self._outage.healthy()
        else:
            self._outage.unhealthy("no open connection to any broker")

    # ------------------------------------------------------------------ assignment and offsets

    def assignment_changes(self) -> list[AssignmentChange]:
        """Rebalance steps since the last call, oldest first; act on them in the poll loop."""
        out: list[AssignmentChange] = []
        while self._changes:
            out.append(self._changes.popleft())
        return out

    def requeue_changes(self, changes: Sequence[AssignmentChange]) -> None:
        """Put back rebalance steps the caller could not act on; the next call returns them first."""
        self._changes.extendleft(reversed(changes))

    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions currently assigned to this consumer."""
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next poll of ``tp`` start at ``offset`` (e.g. the offset stored with a checkpoint)."""
        if offset < 0:
            msg = f"seek offset for {tp}: expected >= 0, got {offset}"
            raise ConfigError(msg)
        try:
            self._consumer.seek(_to_kafka(tp), offset)
        except (kafka_errors.KafkaError, AssertionError, TypeError, ValueError) as exc:
            # (kafka-python raises ValueError('Unassigned partition') for one revoked meanwhile)
            action = f"seek {tp.topic}[{tp.partition}]"
            raise _broker_error(action, exc) from exc

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] = ()) -> None:
        """Rewind the given partitions (all assigned ones by default) to their first offset."""
        try:
            self._consumer.seek_to_beginning(*[_to_kafka(tp) for tp in partitions])
        except kafka_errors.KafkaError as exc:
            action = "seek_to_beginning"
            raise _broker_error(action, exc) from exc

    def position(self, tp: TopicPartition, timeout_s: float = 5.0) -> int:
        """Offset of the next message this consumer will read from ``tp``."""
        try:
            pos = self._consumer.position(_to_kafka(tp), timeout_ms=int(timeout_s * 1000))
        except kafka_errors.KafkaError as exc:
            action = f"position of {tp.topic}[{tp.partition}]"
            raise _broker_error(action, exc) from exc
        if pos is None:
            msg = f"position of {tp.topic}[{tp.partition}] unknown after {timeout_s:g} s"
            raise BrokerError(msg)
        return int(pos)

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Commit, synchronously, the NEXT offset to read per partition (last processed + 1).

        Call from the poll loop only, never from a rebalance callback. Raises :class:`CommitFailed` when
        the group rebalanced meanwhile, BrokerError when the coordinator is unreachable.
        """
        if not offsets:
            return
        payload = {_to_kafka(tp): OffsetAndMetadata(int(off), "", -1) for tp, off in offsets.items()}
        timeout_ms = int(1000 * timeout_s) if timeout_s is not None else self._settings.request_timeout_ms
        try:
            self._consumer.commit(payload, timeout_ms=timeout_ms)
        except (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError) as exc:
            msg = f"offset commit refused (group {self._group_id!r} rebalanced): {exc}"
            raise CommitFailed(msg) from exc
        except kafka_errors.KafkaError as exc:
            action = "commit"
            raise _broker_error(action, exc) from exc

    def committed(self, tp: TopicPartition, timeout_s: float = 5.0) -> int | None:
        """The group's committed offset for ``tp``, or None if nothing was committed."""
        try:
            result = self._consumer.committed(_to_kafka(tp), timeout_ms=int(timeout_s * 1000))
        except kafka_errors.KafkaError as exc:
            action = f"committed offset of {tp.topic}[{tp.partition}]"
            raise _broker_error(action, exc) from exc
        return None if result is None else int(result)

    def lag(self) -> dict[TopicPartition, int]:
        """Messages not yet read per assigned partition: ``highwater - position``.

        From the highwater mark the last fetch reported (``end_offsets()`` is wrong on Tansu), so a
        partition not fetched yet is absent.
        """
        out: dict[TopicPartition, int] = {}
        for ktp in self._consumer.assignment():
            high = self._consumer.highwater(ktp)
            if high is None:
                continue
            try:
                pos = self._consumer.position(ktp, timeout_ms=0)
            except kafka_errors.KafkaError:
                continue
            if pos is not None:
                out[TopicPartition(ktp.topic, ktp.partition)] = max(0, int(high) - int(pos))
        return out

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching from ``partitions`` (backpressure) while staying in the group."""
        try:
            self._consumer.pause(*[_to_kafka(tp) for tp in partitions])
        except kafka_errors.KafkaError as exc:
            action = "pause"
            raise _broker_error(action, exc) from exc

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch again from paused ``partitions``."""
        try:
            self._consumer.resume(*[_to_kafka(tp) for tp in partitions])
        except kafka_errors.KafkaError as exc:
            action = "resume"
            raise _broker_error(action, exc) from exc

    @property
    def broker_down_for_s(self) -> float:
        """Seconds the broker has looked unreachable (0 when healthy): for health endpoints."""
        return self._outage.down_for_s

    def close(self, timeout_s: float = 5.0) -> None:
        """Leave the group and close within ``timeout_s``; never raises. Commits nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
        except Exception as exc:  # closing must not take the caller down
            log.warning("consumer close: %s", exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ======================================================================================= admin


@contextlib.contextmanager
def _admin(settings: KafkaSettings, timeout_s: float | None) -> Iterator[Any]:
    admin = _build(KafkaAdminClient, "admin client", settings, timeout_s, **settings.admin_config())
    try:
        yield admin
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def ensure_topics(
    settings: KafkaSettings,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet (name → partitions) and wait until they are usable.

    Existing topics are left as they are, whatever their partition count. Returns the created names.
    """
    for name, partitions in topics.items():
        if not name or partitions < 1:
            msg = f"topic {name!r}: expected a non-empty name and at least 1 partition, got {partitions}"
            raise ConfigError(msg)
    if not topics:
        return []
    with _admin(settings, timeout_s) as admin:
        try:
            existing = set(admin.list_topics())
            missing = [name for name in topics if name not in existing]
            if missing:
                new = [NewTopic(name, topics[name], replication_factor) for name in missing]
                result = admin.create_topics(new, timeout_ms=int(timeout_s * 1000), raise_errors=False)
                _raise_topic_errors(result, "create", ignore=(kafka_errors.TopicAlreadyExistsError,))
            admin.wait_for_topics(list(topics), timeout_ms=int(timeout_s * 1000))
        except kafka_errors.KafkaError as exc:
            action = f"ensure_topics {sorted(topics)}"
            raise _broker_error(action, exc) from exc
    return missing


def delete_topics(settings: KafkaSettings, topics: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Delete topics, ignoring names that do not exist (Tansu keeps topics in memory: delete test ones)."""
    names = list(topics)
    if not names:
        return
    with _admin(settings, timeout_s) as admin:
        try:
            result = admin.delete_topics(names, timeout_ms=int(timeout_s * 1000), raise_errors=False)
        except kafka_errors.KafkaError as exc:
            action = f"delete_topics {names}"
            raise _broker_error(action, exc) from exc
        _raise_topic_errors(result, "delete", ignore=(kafka_errors.UnknownTopicOrPartitionError,))


def _raise_topic_errors(result: Any, action: str, *, ignore: tuple[type[Exception], ...]) -> None:
    entries = result.get("topics", []) if isinstance(result, Mapping) else []
    problems = []
    for entry in entries:
        code = entry.get("error_code", 0)
        if not code:
            continue
        error = kafka_errors.for_code(code)
        if issubclass(error, ignore):
            continue
        problems.append(f"{entry.get('name')}: {error.__name__} {entry.get('error_message') or ''}".strip())
    if problems:
        msg = f"Kafka could not {action} topic(s): {'; '.join(problems)}"
        raise BrokerError(msg)


# ======================================================================================= dead letters


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) gives ``key``.

    The serving log and the labels topic are joined partition by partition, so a producer that batches
    several requests into one message must place each batch where each request's own key would go.
    """
    if partitions < 1:
        msg = f"partitions must be >= 1, got {partitions}"
        raise ConfigError(msg)
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def group_by_partition(
    items: Iterable[T], request_id: Callable[[T], str], partitions: int
) -> dict[int, list[T]]:
    """``items`` by the partition their request id is keyed to, each group in the given order."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(partition_for_key(request_id(item).encode(), partitions), []).append(item)
    return groups


def publish_dead_letter(
    producer: RawProducer,
    topic: str,
    raw: bytes | None,
    reason: str,
    detail: str,
    source: tuple[str, int, int],
    *,
    key: bytes | None = None,
    max_value_bytes: int | None = None,
    key_omitted: bool = False,
) -> Delivery:
    """Send refused input to the dead-letter ``topic``: original bytes as value, why and whence in headers.

    ``source`` is (topic, partition, offset) of the original message; ``detail`` is truncated to 2000
    characters so a pathological error message cannot make the dead letter itself oversized. A value
    above ``max_value_bytes`` (an oversized message: the producer would refuse to send it, again at
    every retry) is left out, its size in the ``skewguard.value_omitted`` header; the source headers
    still locate the original. A tombstone without a key is sent with an empty value (Kafka takes no
    message without both).
    """
    src_topic, src_partition, src_offset = source
    headers = [
        ("skewguard.reason", reason.encode()),
        ("skewguard.detail", detail[:_MAX_DETAIL_CHARS].encode("utf-8", "replace")),
        ("skewguard.source_topic", src_topic.encode()),
        ("skewguard.source_partition", str(int(src_partition)).encode()),
        ("skewguard.source_offset", str(int(src_offset)).encode()),
    ]
    if raw is not None and max_value_bytes is not None and len(raw) > max_value_bytes:
        headers.append((VALUE_OMITTED_HEADER, str(len(raw)).encode()))
        raw = b""
    if key_omitted:  # (the caller left out a key it had: say so, unlike a message that had none)
        headers.append((KEY_OMITTED_HEADER, b"1"))
    if raw is None and key is None:
        raw = b""
    return producer.send(topic, raw, key=key, headers=headers)


def read_dead_letter(message: RawMessage) -> DeadLetter:
    """Read back a message written by :func:`publish_dead_letter`; BrokerError if it is not one."""
    found = {name: value for name, value in message.headers if name in DEAD_LETTER_HEADERS}
    missing = [name for name in DEAD_LETTER_HEADERS if name not in found]
    if missing:
        msg = (
            f"message {message.topic}[{message.partition}]@{message.offset} is not a dead letter: "
            f"missing header(s) {missing}"
        )
        raise BrokerError(msg)
    text = {name: value.decode("utf-8", "replace") for name, value in found.items()}
    try:
        return DeadLetter(
            reason=text["skewguard.reason"],
            detail=text["skewguard.detail"],
            source_topic=text["skewguard.source_topic"],
            source_partition=int(text["skewguard.source_partition"]),
            source_offset=int(text["skewguard.source_offset"]),
            value=message.value,
            value_omitted=next((int(v) for name, v in message.headers if name == VALUE_OMITTED_HEADER), None),
            key_omitted=any(name == KEY_OMITTED_HEADER for name, _ in message.headers),
        )
    except ValueError as exc:  # (a number header that is no number: not one of ours)
        msg = f"message {message.topic}[{message.partition}]@{message.offset} is not a dead letter: {exc}"
        raise BrokerError(msg) from None
