"""The serving-log record schema (version 1) and its byte codec: the one home of the wire format.

Serving code writes records through :mod:`skewguard.serving`; the monitor daemon reads them back with
:func:`decode_message`. Both sides import this module, so the format cannot drift between them. The
same format is described for humans and other languages by the JSON Schema files
``skewguard/schemas/serving_record.v1.json`` and ``skewguard/schemas/label_record.v1.json``; a test
keeps them in step with this code.

Wire format (UTF-8 JSON, written and read with orjson):

* One Kafka message holds ONE record ``{"v": 1, "request_id": ..., ...}`` or a batch envelope
  ``{"v": 1, "batch": [record, ...]}``. Records inside an envelope may omit ``"v"``.
* ``event_time`` is an ISO-8601 string WITH a UTC offset (``2024-05-01T12:00:00.250000+00:00``).
  ISO rather than epoch milliseconds because it keeps microseconds, reads unambiguously in a topic
  dump, and lets the decoder reject a naive timestamp instead of silently assuming UTC. Decoded times
  are aware datetimes normalised to UTC.
* ``features`` maps feature name to a number, string, bool or null (NaN and infinities are written
  as null: JSON has no such numbers). ``raw_inputs`` (optional) maps an input name to any JSON value;
  datetimes inside it are written as ISO strings with their offset, naive ones are refused.
* ``prediction`` is a score (number), class probabilities (non-empty list of numbers) or a value
  (number, string or bool). ``shadow_predictions`` maps a candidate model version to its prediction;
  ``defaulted`` lists the features that fell back to their declared defaults.
* Unknown fields are ignored, so version 1 can grow optional fields without breaking readers.

Decoding is on the daemon's hot path (it must keep up with raw kafka-python consumption), so it is
orjson plus a few direct type checks into ``slots`` dataclasses, deliberately not pydantic per record.
Bad input raises :class:`~skewguard.errors.RecordError` whose ``reason`` is one of :class:`Reason`.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final, Generic, Literal, NoReturn, TypeAlias, TypeVar

import orjson

from skewguard.errors import ConfigError, RecordError

__all__ = [
    "LABEL_OPTIONAL_FIELDS",
    "LABEL_REQUIRED_FIELDS",
    "MAX_MESSAGE_BYTES",
    "RECORD_OPTIONAL_FIELDS",
    "RECORD_REQUIRED_FIELDS",
    "SCHEMA_VERSION",
    "DecodeResult",
    "FeatureValue",
    "JSONValue",
    "LabelRecord",
    "LabelValue",
    "Prediction",
    "Reason",
    "RejectedRecord",
    "ServingRecord",
    "decode_label_message",
    "decode_message",
    "encode_label",
    "encode_labels",
    "encode_record",
    "encode_record_fragment",
    "encode_records",
    "envelope_from_fragments",
    "load_json_schema",
]

SCHEMA_VERSION: Final = 1
#: Kafka's default ``max.message.bytes``; a larger message would be refused by a default broker anyway.
MAX_MESSAGE_BYTES: Final = 1_048_576

#: Fields a single-record message must carry (a record inside a batch envelope may omit ``"v"``).
RECORD_REQUIRED_FIELDS: Final = (
    "v",
    "request_id",
    "event_time",
    "model",
    "model_version",
    "feature_state_hash",
    "features",
    "prediction",
)
RECORD_OPTIONAL_FIELDS: Final = ("raw_inputs", "shadow_predictions", "defaulted")
LABEL_REQUIRED_FIELDS: Final = ("v", "request_id", "event_time", "label")
LABEL_OPTIONAL_FIELDS: Final = ()

FeatureValue: TypeAlias = float | int | str | bool | None
LabelValue: TypeAlias = float | int | str | bool
Prediction: TypeAlias = float | int | str | bool | list[float]
JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"


class Reason(StrEnum):
    """Why a record was refused: the dead-letter reason and the metrics label."""

    UNDECODABLE = "undecodable"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NAIVE_TIMESTAMP = "naive_timestamp"
    UNSUPPORTED_VERSION = "unsupported_version"
    OVERSIZED = "oversized"


@dataclass(slots=True)
class ServingRecord:
    """One served request as the monitor sees it.

    Construction only checks ``event_time`` (aware, normalised to UTC) so that decoding stays cheap;
    the other fields are checked by :func:`encode_record` before anything is written.
    """

    request_id: str
    event_time: datetime
    model: str
    model_version: str
    feature_state_hash: str
    features: dict[str, FeatureValue]
    prediction: Prediction
    raw_inputs: dict[str, JSONValue] | None = None
    shadow_predictions: dict[str, Prediction] = field(default_factory=dict)
    defaulted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        event_time = self.event_time
        if type(event_time) is not datetime or event_time.tzinfo is not UTC:  # fast path: decoded UTC
            self.event_time = _aware_utc(event_time, "event_time", self.request_id)


@dataclass(slots=True)
class LabelRecord:
    """The ground truth for one request, arriving later on its own topic."""

    request_id: str
    event_time: datetime
    label: LabelValue

    def __post_init__(self) -> None:
        self.event_time = _aware_utc(self.event_time, "event_time", self.request_id)


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record inside a batch envelope that could not be used; the rest of the batch still was.

    ``raw`` is the record re-encoded on its own, so it can be dead-lettered without its neighbours.
    """

    index: int
    error: RecordError
    raw: bytes


T = TypeVar("T", ServingRecord, LabelRecord)


@dataclass(slots=True)
class DecodeResult(Generic[T]):
    """The usable records of one message, plus the batch members that were refused."""

    records: list[T]
    rejected: list[RejectedRecord] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# decoding


_MISSING: Final[Any] = object()
_SCALAR_TYPES: Final = frozenset({float, int, str, bool, type(None)})
_NUMBER_TYPES: Final = frozenset({float, int})
_VALUE_TYPES: Final = frozenset({float, int, str, bool})


def decode_message(raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES) -> DecodeResult[ServingRecord]:
    """Decode one serving-log Kafka message value into records.

    Raises :class:`RecordError` when the message as a whole is unusable (undecodable, oversized, not an
    object, unsupported version, or a single-record message whose record is bad). In a batch envelope
    one bad record does not lose the good ones: it is returned in ``rejected`` instead.
    """
    return _decode(raw, max_bytes, _parse_serving)


def decode_label_message(
    raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> DecodeResult[LabelRecord]:
    """Decode one labels-topic message (one label or a batch envelope); errors as in decode_message."""
    return _decode(raw, max_bytes, _parse_label)


def _decode(raw: bytes | None, max_bytes: int, parse: Callable[[Any, str, bool], T]) -> DecodeResult[T]:
    if raw is None:
        msg = "message has no value (a tombstone); expected a JSON object"
        raise RecordError(msg, reason=Reason.UNDECODABLE)
    if len(raw) > max_bytes:
        msg = f"message is {len(raw)} bytes; expected at most {max_bytes} bytes"
        raise RecordError(msg, reason=Reason.OVERSIZED)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"message is not UTF-8 JSON: {exc}"
        raise RecordError(msg, reason=Reason.UNDECODABLE) from exc
    if type(obj) is not dict:
        msg = f"message is a JSON {_json_type(obj)}; expected a JSON object (a record or a batch envelope)"
        raise RecordError(msg, reason=Reason.NOT_AN_OBJECT)
    batch = obj.get("batch", _MISSING)
    if batch is _MISSING:
        return DecodeResult([parse(obj, "", True)])
    _check_version(obj.get("v", _MISSING), "", required=True, record_id=None)
    if type(batch) is not list:
        msg = f"field 'batch': expected a list of records, got {_json_type(batch)}"
        raise RecordError(msg, reason=Reason.WRONG_TYPE)
    try:  # the common case, every member good: one comprehension, no per-member error context (~5 %)
        return DecodeResult([parse(item, "", False) for item in batch])
    except RecordError:
        pass
    # Some member is bad: parse them again one by one, naming each member's position in its error.
    records: list[T] = []
    rejected: list[RejectedRecord] = []
    for index, item in enumerate(batch):
        try:
            records.append(parse(item, f"batch[{index}].", False))
        except RecordError as exc:
            rejected.append(RejectedRecord(index, exc, orjson.dumps(item)))
    return DecodeResult(records, rejected)


def _parse_serving(obj: Any, where: str, top_level: bool) -> ServingRecord:
    """Check one decoded JSON object and build a record; the fast path is a handful of type checks."""
    if type(obj) is not dict:
        msg = f"{where or 'message'}: expected a JSON object (a record), got {_json_type(obj)}"
        raise RecordError(msg, reason=Reason.NOT_AN_OBJECT)
    try:
        request_id = obj["request_id"]
        event_time = obj["event_time"]
        model = obj["model"]
        model_version = obj["model_version"]
        feature_state_hash = obj["feature_state_hash"]
        features = obj["features"]
        prediction = obj["prediction"]
    except KeyError as exc:
        rid = obj.get("request_id")
        msg = f"field '{where}{exc.args[0]}' is missing; a serving record requires {_REQUIRED_TEXT}"
        raise RecordError(
            msg, reason=Reason.MISSING_FIELD, record_id=rid if type(rid) is str else None
        ) from None
    # fast path first: one combined test for the common case, the diagnosis only when it fails
    if (
        type(request_id) is not str
        or type(model) is not str
        or type(model_version) is not str
        or type(feature_state_hash) is not str
    ):
        _diagnose_strings(where, request_id, model, model_version, feature_state_hash)
    v = obj.get("v", _MISSING)
    if (top_level or v is not _MISSING) and (type(v) is not int or v != SCHEMA_VERSION):
        _check_version(v, where, required=True, record_id=request_id)  # raises, naming what is wrong
    if type(features) is not dict:
        _wrong(where, "features", "an object of feature name to value", features, request_id)
    if not _SCALAR_TYPES.issuperset(map(type, features.values())):
        _wrong_member(where, "features", features, "a number, string, bool or null", request_id)
    if type(prediction) not in _VALUE_TYPES and not _is_prediction(prediction):
        _wrong(where, "prediction", _PREDICTION_TEXT, prediction, request_id)
    try:
        when = datetime.fromisoformat(event_time)
    except (TypeError, ValueError):
        when = _parse_time(event_time, where, request_id)  # raises with the right reason
    if when.tzinfo is not UTC:
        when = _parse_time(event_time, where, request_id)
    raw_inputs = obj.get("raw_inputs")
    if raw_inputs is not None and type(raw_inputs) is not dict:
        _wrong(where, "raw_inputs", "an object of input name to JSON value, or null", raw_inputs, request_id)
    shadows = obj.get("shadow_predictions")
    if shadows is None:
        shadows = {}
    elif type(shadows) is not dict:
        _wrong(where, "shadow_predictions", "an object of model version to prediction", shadows, request_id)
    elif shadows:
        for version, shadow in shadows.items():
            if not _is_prediction(shadow):
                _wrong(where, f"shadow_predictions['{version}']", _PREDICTION_TEXT, shadow, request_id)
    defaulted = obj.get("defaulted")
    if defaulted is None:
        defaulted = []
    elif type(defaulted) is not list:
        _wrong(where, "defaulted", "a list of feature names", defaulted, request_id)
    elif defaulted and not all(type(name) is str for name in defaulted):
        _wrong(where, "defaulted", "a list of feature names (strings)", defaulted, request_id)
    return ServingRecord(
        request_id,
        when,
        model,
        model_version,
        feature_state_hash,
        features,
        prediction,
        raw_inputs,
        shadows,
        defaulted,
    )


def _parse_label(obj: Any, where: str, top_level: bool) -> LabelRecord:
    if type(obj) is not dict:
        msg = f"{where or 'message'}: expected a JSON object (a label), got {_json_type(obj)}"
        raise RecordError(msg, reason=Reason.NOT_AN_OBJECT)
    try:
        request_id = obj["request_id"]
        event_time = obj["event_time"]
        label = obj["label"]
    except KeyError as exc:
        rid = obj.get("request_id")
        msg = f"field '{where}{exc.args[0]}' is missing; a label record requires {_LABEL_REQUIRED_TEXT}"
        raise RecordError(
            msg, reason=Reason.MISSING_FIELD, record_id=rid if type(rid) is str else None
        ) from None
    if type(request_id) is not str:
        _wrong(where, "request_id", "a string", request_id, None)
    v = obj.get("v", _MISSING)
    if top_level or v is not _MISSING:
        _check_version(v, where, required=True, record_id=request_id)
    if type(label) not in _VALUE_TYPES:
        _wrong(where, "label", "a number, string or bool", label, request_id)
    return LabelRecord(request_id, _parse_time(event_time, where, request_id), label)


def _diagnose_strings(where: str, request_id: Any, model: Any, model_version: Any, state_hash: Any) -> None:
    if type(request_id) is not str:
        _wrong(where, "request_id", "a string", request_id, None)
    if type(model) is not str:
        _wrong(where, "model", "a string (the model name)", model, request_id)
    if type(model_version) is not str:
        _wrong(where, "model_version", "a string", model_version, request_id)
    _wrong(where, "feature_state_hash", "a string", state_hash, request_id)


def _is_prediction(value: Any) -> bool:
    kind = type(value)
    if kind in _VALUE_TYPES:
        return True
    return kind is list and bool(value) and _NUMBER_TYPES.issuperset(map(type, value))


def _parse_time(value: Any, where: str, record_id: str) -> datetime:
    if type(value) is not str:
        _wrong(where, "event_time", "an ISO-8601 string with a UTC offset", value, record_id)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        msg = f"field '{where}event_time': expected an ISO-8601 string with a UTC offset, got {value!r}"
        raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id) from None
    tz = parsed.tzinfo
    if tz is UTC:
        return parsed
    if tz is None:
        msg = (
            f"field '{where}event_time': {value!r} has no UTC offset; expected an aware timestamp "
            "such as '2024-05-01T12:00:00+00:00'"
        )
        raise RecordError(msg, reason=Reason.NAIVE_TIMESTAMP, record_id=record_id)
    return parsed.astimezone(UTC)


def _check_version(v: Any, where: str, *, required: bool, record_id: str | None) -> None:
    if v is _MISSING:
        if not required:
            return
        msg = f"field '{where}v' is missing; expected the schema version {SCHEMA_VERSION}"
        raise RecordError(msg, reason=Reason.MISSING_FIELD, record_id=record_id)
    if type(v) is not int:
        _wrong(where, "v", f"the integer schema version {SCHEMA_VERSION}", v, record_id)
    if v != SCHEMA_VERSION:
        msg = f"field '{where}v' is {v}; this skewguard reads schema version {SCHEMA_VERSION} only"
        raise RecordError(msg, reason=Reason.UNSUPPORTED_VERSION, record_id=record_id)


def _wrong(where: str, name: str, expected: str, got: Any, record_id: str | None) -> NoReturn:
    msg = f"field '{where}{name}': expected {expected}, got {_json_type(got)} {_preview(got)}"
    raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id)


def _wrong_member(
    where: str, name: str, mapping: dict[str, Any], expected: str, record_id: str | None
) -> None:
    for key, value in mapping.items():
        if type(value) not in _SCALAR_TYPES:
            _wrong(where, f"{name}['{key}']", expected, value, record_id)


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPE_NAMES: Final = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "bool",
    type(None): "null",
}
_REQUIRED_TEXT: Final = ", ".join(RECORD_REQUIRED_FIELDS)
_LABEL_REQUIRED_TEXT: Final = ", ".join(LABEL_REQUIRED_FIELDS)
_PREDICTION_TEXT: Final = "a number, string, bool, or a non-empty list of class probabilities (numbers)"


# --------------------------------------------------------------------------------------------------
# encoding


_DUMPS_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME
#: pandas' NA and NaT (NaT is a datetime subclass), matched by name so this module needs no pandas.
_MISSING_MARKERS: Final = frozenset({"NAType", "NaTType"})


def encode_record(record: ServingRecord, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode one record as a single-record message.

    The bytes are decoded again before they are returned, so anything this accepts the daemon reads
    back identically; a record it would refuse raises :class:`RecordError` here, at the source.
    """
    raw = _dumps(_serving_dict(record, top_level=True), record.request_id)
    _check_size(raw, max_bytes, record.request_id)
    _parse_serving(orjson.loads(raw), "", True)
    return raw


def encode_record_fragment(record: ServingRecord) -> bytes:
    """Encode one record as a batch member (no ``"v"``), checked like :func:`encode_record`.

    The serving logger encodes records one by one so that one bad record is dropped alone, then joins
    the fragments with :func:`envelope_from_fragments`.
    """
    raw = _dumps(_serving_dict(record, top_level=False), record.request_id)
    _parse_serving(orjson.loads(raw), "", False)
    return raw


def envelope_from_fragments(fragments: Sequence[bytes]) -> bytes:
    """Join encoded batch members into one ``{"v":1,"batch":[...]}`` message without re-encoding them."""
    return b'{"v":%d,"batch":[%b]}' % (SCHEMA_VERSION, b",".join(fragments))


def encode_records(records: Iterable[ServingRecord], *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode several records as one batch-envelope message; any bad record raises RecordError."""
    raw = envelope_from_fragments([encode_record_fragment(record) for record in records])
    _check_size(raw, max_bytes, None)
    return raw


def encode_label(label: LabelRecord, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode one label as a single-label message on the labels topic."""
    raw = _dumps(_label_dict(label, top_level=True), label.request_id)
    _check_size(raw, max_bytes, label.request_id)
    _parse_label(orjson.loads(raw), "", True)
    return raw


def encode_labels(labels: Iterable[LabelRecord], *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode several labels as one batch-envelope message."""
    fragments = []
    for label in labels:
        raw = _dumps(_label_dict(label, top_level=False), label.request_id)
        _parse_label(orjson.loads(raw), "", False)
        fragments.append(raw)
    message = envelope_from_fragments(fragments)
    _check_size(message, max_bytes, None)
    return message


def _serving_dict(record: ServingRecord, *, top_level: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"v": SCHEMA_VERSION} if top_level else {}
    out["request_id"] = record.request_id
    out["event_time"] = _aware_utc(record.event_time, "event_time", record.request_id).isoformat()
    out["model"] = record.model
    out["model_version"] = record.model_version
    out["feature_state_hash"] = record.feature_state_hash
    out["features"] = record.features
    out["prediction"] = record.prediction
    if record.raw_inputs is not None:
        out["raw_inputs"] = record.raw_inputs
    if record.shadow_predictions:
        out["shadow_predictions"] = record.shadow_predictions
    if record.defaulted:
        out["defaulted"] = record.defaulted
    return out


def _label_dict(label: LabelRecord, *, top_level: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"v": SCHEMA_VERSION} if top_level else {}
    out["request_id"] = label.request_id
    out["event_time"] = _aware_utc(label.event_time, "event_time", label.request_id).isoformat()
    out["label"] = label.label
    return out


def _dumps(obj: dict[str, Any], record_id: str) -> bytes:
    try:
        return orjson.dumps(obj, default=_encode_extra, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, RecordError):
            exc.__cause__.record_id = record_id
            raise exc.__cause__ from None
        msg = f"record cannot be written as JSON: {exc}"
        raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id) from exc


def _encode_extra(value: Any) -> Any:
    """Write what orjson leaves to us: datetimes (aware only), pandas' missing markers, other scalars."""
    if type(value).__name__ in _MISSING_MARKERS:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            msg = f"a datetime in the record has no UTC offset ({value.isoformat()}); expected it aware"
            raise RecordError(msg, reason=Reason.NAIVE_TIMESTAMP)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        scalar = item()
        if isinstance(scalar, float) and not math.isfinite(scalar):
            return None
        return scalar
    msg = f"a value of type {type(value).__name__} cannot be written as JSON"
    raise RecordError(msg, reason=Reason.WRONG_TYPE)


def _aware_utc(value: Any, name: str, record_id: str | None) -> datetime:
    if not isinstance(value, datetime):
        msg = f"field '{name}': expected an aware datetime, got {type(value).__name__}"
        raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id)
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or value.utcoffset() is None:
        msg = f"field '{name}': {value.isoformat()} is naive; expected an aware datetime (e.g. in UTC)"
        raise RecordError(msg, reason=Reason.NAIVE_TIMESTAMP, record_id=record_id)
    return value.astimezone(UTC)


def _check_size(raw: bytes, max_bytes: int, record_id: str | None) -> None:
    if len(raw) > max_bytes:
        msg = f"encoded message is {len(raw)} bytes; expected at most {max_bytes} bytes"
        raise RecordError(msg, reason=Reason.OVERSIZED, record_id=record_id)


def load_json_schema(kind: Literal["serving_record", "label_record"]) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) shipped with the package for one message kind.

    For other languages writing to the serving log, and for documentation; Python code uses the codec.
    """
    if kind not in ("serving_record", "label_record"):
        msg = f"kind: expected 'serving_record' or 'label_record', got {kind!r}"
        raise ConfigError(msg)
    text = (
        importlib.resources.files("skewguard").joinpath(f"schemas/{kind}.v{SCHEMA_VERSION}.json").read_bytes()
    )
    schema: dict[str, Any] = orjson.loads(text)
    return schema
