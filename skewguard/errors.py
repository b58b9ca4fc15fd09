"""The whole skewguard error hierarchy, in one place.

Third-party errors (kafka-python, SQLAlchemy, Great Expectations, torch) are converted at the
boundary where they occur, ``raise OurError(msg) from exc``, so callers only ever catch these::

    SkewguardError
    ├── ConfigError          bad configuration or command-line usage (CLI exit code 2)
    ├── DataError            a data file or frame that cannot be used as asked
    │   └── RecordError      one serving-log / label record that is malformed (dead-lettered)
    ├── ValidationFailed     data violated its expectation suite (CLI exit code 1)
    ├── StatisticsError      a statistic asked of inputs that cannot support it
    ├── BrokerError          the Kafka adapter could not do its job
    │   └── MessageTooLarge  a message refused for its size (sending it again unchanged never works)
    ├── StoreError           the results store could not do its job
    └── GateError            the overfit gate was used wrongly (not: the model failed the gate)

Errors raised by the feature library (``features.FeatureError``) are not part of this tree, because
``features/`` must never import ``skewguard``; the CLI reports them the same way.
"""

from __future__ import annotations


class SkewguardError(Exception):
    """Base class of every error skewguard raises on purpose."""


class ConfigError(SkewguardError):
    """Configuration or command-line usage is wrong; the message names the key and what was expected."""


class DataError(SkewguardError):
    """A data file or frame cannot be used: missing columns, unreadable format, empty input."""


class RecordError(DataError):
    """One record of the serving log or the labels topic is malformed.

    ``reason`` is a short machine-friendly tag (e.g. ``"undecodable"``, ``"missing_field"``) used as the
    dead-letter reason and metrics label; the message says what was wrong in words.
    """

    def __init__(self, message: str, *, reason: str, record_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.record_id = record_id


class ValidationFailed(SkewguardError):
    """Data violated its expectation suite; carries the list of violations."""


class StatisticsError(SkewguardError):
    """A statistic was asked of inputs that cannot support it (e.g. empty samples, mismatched bins)."""


class BrokerError(SkewguardError):
    """The Kafka adapter could not reach the broker or complete an operation."""


class MessageTooLarge(BrokerError):
    """The producer or the broker refused a message for its size.

    Unlike other broker errors it is no outage to wait out: the same message is refused at every
    retry, so a caller that must get it through has to send less (e.g. a dead letter without its value).
    """


class StoreError(SkewguardError):
    """The results store failed (connection, schema, transaction)."""


class StoreConfigError(ConfigError, StoreError):
    """The store's URL names no usable store (not a URL, an unsupported backend, a missing folder).

    A configuration error first (CLI exit 2), and still a StoreError to code that catches those.
    """


class GateError(SkewguardError):
    """The overfit gate was called wrongly (bad arguments); a model failing the gate is not an error."""
