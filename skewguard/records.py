"""The serving-log record schema (version 1) and its byte codec: the one home of the wire format.

Serving code writes records through :mod:`skewguard.serving`; the monitor daemon reads them back with
:func:`decode_message`. Both sides import this module, so the format cannot drift between them. The
same format is described for humans and other languages by the JSON Schema files
``skewguard/schemas/serving_record.v1.json`` and ``skewguard/schemas/label_record.v1.json``; a test
keeps them in step with this code.

Wire format (UTF-8 JSON, written and read with orjson):

* One Kafka message holds ONE record ``{"v": 1, "request_id": ..., ...}``, a batch envelope
  ``{"v": 1, "batch": [record, ...]}`` (records inside may omit ``"v"``), or a columnar envelope
  ``{"v": 1, "columns": {"request_id": [...], "features": {"name": [...]}, ...}}`` with one list per
  field (``model``, ``model_version`` and ``feature_state_hash`` may be one string for all). In a
  columnar envelope ``event_time``, ``prediction`` and any feature may be a *packed column* instead of
  a list: ``{"i8": base64}`` (epoch microseconds) or ``{"f8": base64}`` (floats, NaN for null), the
  base64 of little-endian 8-byte values. The :class:`~skewguard.serving.ServingLogger` writes columnar
  envelopes with packed times and float columns (:func:`encode_records`): about a third of the bytes
  of a row batch; the daemon reads a packed column as one copy and checks every other column once
  instead of each record's fields.
* ``event_time`` is an ISO-8601 string WITH a UTC offset (``2024-05-01T12:00:00.250000+00:00``).
  ISO rather than epoch milliseconds because it keeps microseconds, reads unambiguously in a topic
  dump, and lets the decoder reject a naive timestamp instead of silently assuming UTC. (A packed
  ``event_time`` column is integer microseconds since the epoch: exact, UTC by definition, and what the
  logger writes, since no person reads it.) Decoded times are aware datetimes normalised to UTC.
* ``features`` maps feature name to a number, string, bool or null (NaN and infinities are written
  as null: JSON has no such numbers). ``raw_inputs`` (optional) maps an input name to any JSON value;
  datetimes inside it are written as ISO strings with their offset, naive ones are refused.
* ``prediction`` is a score (number), class probabilities (non-empty list of numbers) or a value
  (number, string or bool). ``shadow_predictions`` maps a candidate model version to its prediction;
  ``defaulted`` lists the features that fell back to their declared defaults.
* Unknown fields are ignored, so version 1 can grow optional fields without breaking readers.

Decoding is on the daemon's hot path (it must keep up with raw kafka-python consumption), so it is
orjson plus type checks over whole columns (:func:`decode_serving` turns a poll's messages into one
columnar :class:`ServingBatch`), deliberately not pydantic per record; only a stretch of records that
fails a check is parsed record by record, to name each bad one. Bad input raises
:class:`~skewguard.errors.RecordError` whose ``reason`` is one of :class:`Reason`.
"""

from __future__ import annotations

import binascii
import importlib.resources
import math
import operator
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Generic, Literal, NoReturn, TypeAlias, TypeVar, cast

import numpy as np
import numpy.typing as npt
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
    "DecodedRun",
    "FeatureColumn",
    "FeatureValue",
    "JSONValue",
    "LabelRecord",
    "LabelValue",
    "Prediction",
    "Reason",
    "Refusal",
    "RejectedRecord",
    "ServingBatch",
    "ServingRecord",
    "column_values",
    "decode_label_message",
    "decode_message",
    "decode_serving",
    "defaulted_names",
    "encode_label",
    "encode_labels",
    "encode_record",
    "encode_record_fragment",
    "encode_records",
    "envelope_from_fragments",
    "from_us",
    "load_json_schema",
    "to_us",
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
#: A feature column of a :class:`ServingBatch`: values as written, or float64 (NaN = null) when the
#: column arrived packed.
FeatureColumn: TypeAlias = "list[FeatureValue] | npt.NDArray[np.float64]"


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

    ``raw`` is the record re-encoded on its own, so it can be dead-lettered without its neighbours;
    None when it cannot be (nested too deep for orjson): the whole message is dead-lettered then.
    """

    index: int
    error: RecordError
    raw: bytes | None


T = TypeVar("T", ServingRecord, LabelRecord)


@dataclass(slots=True)
class DecodeResult(Generic[T]):
    """The usable records of one message, plus the batch members that were refused."""

    records: list[T]
    rejected: list[RejectedRecord] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# the columnar form the daemon reads


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def to_us(instant: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (exact)."""
    return (instant - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """Integer microseconds since the epoch → aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


@dataclass(slots=True)
class ServingBatch:
    """Serving records held as columns: one list (or array) per field, all of the same length.

    This is what the daemon decodes messages into and what a monitor folds, because the fold works on
    columns anyway: building a :class:`ServingRecord` per request only to take it apart again cost more
    than all the statistics. A feature a record lacks is null in its column (absent and null mean the
    same to the monitor), and :meth:`record` gives it back as null. The optional columns are None when
    no record of the batch has the field. A feature column that arrived packed (a columnar envelope's
    ``{"f8": ...}``) stays a float64 array, maybe read-only, in which NaN and infinities are null (the
    profile reads non-finite numbers as null; :func:`column_values` and :meth:`record` give None).
    """

    request_ids: list[str]
    event_us: npt.NDArray[np.int64]
    models: list[str]
    model_versions: list[str]
    state_hashes: list[str]
    features: dict[str, FeatureColumn]
    predictions: list[Prediction]
    raw_inputs: list[dict[str, JSONValue] | None] | None = None
    shadow_predictions: list[dict[str, Prediction]] | None = None
    defaulted: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.request_ids)

    @classmethod
    def from_records(cls, records: Sequence[ServingRecord]) -> ServingBatch:
        """The columns of ``records`` (assumed valid: records are checked when they are encoded)."""
        names: dict[str, None] = {}
        for record in records:
            names.update(dict.fromkeys(record.features))
        raw_inputs = [r.raw_inputs for r in records]
        shadows = [r.shadow_predictions for r in records]
        defaulted = [r.defaulted for r in records]
        return cls(
            [r.request_id for r in records],
            np.fromiter((to_us(r.event_time) for r in records), dtype=np.int64, count=len(records)),
            [r.model for r in records],
            [r.model_version for r in records],
            [r.feature_state_hash for r in records],
            {name: [r.features.get(name) for r in records] for name in names},
            [r.prediction for r in records],
            raw_inputs if raw_inputs.count(None) != len(raw_inputs) else None,
            shadows if any(shadows) else None,
            defaulted if any(defaulted) else None,
        )

    @classmethod
    def concat(cls, batches: Sequence[ServingBatch]) -> ServingBatch:
        """One batch of the rows of ``batches``, in order."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls([], np.empty(0, dtype=np.int64), [], [], [], {}, [])
        names: dict[str, None] = {}
        for batch in batches:
            names.update(dict.fromkeys(batch.features))

        def optional(parts: list[list[Any] | None], fill: Any) -> list[Any] | None:
            if all(part is None for part in parts):
                return None
            return _joined(
                part if part is not None else [fill] * len(batch)
                for batch, part in zip(batches, parts, strict=True)
            )

        return cls(
            _joined(b.request_ids for b in batches),
            np.concatenate([batch.event_us for batch in batches]),
            _joined(b.models for b in batches),
            _joined(b.model_versions for b in batches),
            _joined(b.state_hashes for b in batches),
            {name: _joined_column(batches, name) for name in names},
            _joined(b.predictions for b in batches),
            optional([b.raw_inputs for b in batches], None),
            optional([b.shadow_predictions for b in batches], {}),
            optional([b.defaulted for b in batches], []),
        )

    def take(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> ServingBatch:
        """The batch of these rows, in the order given (a run of consecutive rows is sliced)."""
        index = rows.tolist() if isinstance(rows, np.ndarray) else list(rows)
        if index and index[-1] - index[0] + 1 == len(index) and index == list(range(index[0], index[-1] + 1)):
            return self.slice(index[0], index[-1] + 1)

        def pick(values: list[Any]) -> list[Any]:
            return [values[i] for i in index]

        positions = np.asarray(index, dtype=np.intp)
        return ServingBatch(
            pick(self.request_ids),
            self.event_us[positions],
            pick(self.models),
            pick(self.model_versions),
            pick(self.state_hashes),
            {
                name: column[positions] if isinstance(column, np.ndarray) else pick(column)
                for name, column in self.features.items()
            },
            pick(self.predictions),
            None if self.raw_inputs is None else pick(self.raw_inputs),
            None if self.shadow_predictions is None else pick(self.shadow_predictions),
            None if self.defaulted is None else pick(self.defaulted),
        )

    def slice(self, start: int, stop: int) -> ServingBatch:
        """Rows ``start`` to ``stop - 1``."""
        return ServingBatch(
            self.request_ids[start:stop],
            self.event_us[start:stop],
            self.models[start:stop],
            self.model_versions[start:stop],
            self.state_hashes[start:stop],
            {name: column[start:stop] for name, column in self.features.items()},
            self.predictions[start:stop],
            None if self.raw_inputs is None else self.raw_inputs[start:stop],
            None if self.shadow_predictions is None else self.shadow_predictions[start:stop],
            None if self.defaulted is None else self.defaulted[start:stop],
        )

    def record(self, row: int) -> ServingRecord:
        """Row ``row`` as a record (for a dead letter, a replay, a test)."""
        return ServingRecord(
            self.request_ids[row],
            from_us(int(self.event_us[row])),
            self.models[row],
            self.model_versions[row],
            self.state_hashes[row],
            {name: _cell(column, row) for name, column in self.features.items()},
            self.predictions[row],
            None if self.raw_inputs is None else self.raw_inputs[row],
            {} if self.shadow_predictions is None else self.shadow_predictions[row],
            [] if self.defaulted is None else self.defaulted[row],
        )

    def records(self) -> list[ServingRecord]:
        """Every row as a record."""
        return [self.record(row) for row in range(len(self))]


def defaulted_names(names: Iterable[str]) -> list[str]:
    """A record's defaulted features as a list; one name given as a string is that name, not its letters."""
    return [names] if isinstance(names, str) else list(names)


def column_values(column: FeatureColumn) -> list[FeatureValue]:
    """A feature column as a list of values, for record-wise work.

    A packed column's NaN and infinities are None: null, as the list form writes them.
    """
    if isinstance(column, np.ndarray):
        return [value if math.isfinite(value) else None for value in column.tolist()]
    return column


def _cell(column: FeatureColumn, row: int) -> FeatureValue:
    if isinstance(column, np.ndarray):
        value = float(column[row])
        return value if math.isfinite(value) else None
    return column[row]


def _joined(parts: Iterable[list[Any]]) -> list[Any]:
    """The lists one after the other, in one list."""
    out: list[Any] = []
    for part in parts:
        out.extend(part)  # C-level copies: a poll joins hundreds of envelopes
    return out


def _joined_column(batches: Sequence[ServingBatch], name: str) -> FeatureColumn:
    """Feature ``name`` of every batch, in order: an array while every part is packed (or lacks it)."""
    parts = [batch.features.get(name) for batch in batches]
    if all(part is None or isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(
            [
                np.full(len(batch), np.nan) if part is None else part
                for batch, part in zip(batches, parts, strict=True)
            ]
        )
    return _joined(
        [None] * len(batch) if part is None else column_values(part)
        for batch, part in zip(batches, parts, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message, or one record of a batch message, that could not be used (it goes to dead letters)."""

    #: Position of the message in the run passed to :func:`decode_serving`.
    message: int
    #: Position of the record inside its batch message; None when the whole message is refused.
    member: int | None
    error: RecordError
    #: The refused record re-encoded alone; None when the whole message is refused (send it as it came).
    raw: bytes | None


@dataclass(slots=True)
class DecodedRun:
    """The usable records of a run of messages as one batch, which message each came from, and refusals."""

    batch: ServingBatch
    #: For each row of ``batch``, the position of its message in the run.
    message_of: npt.NDArray[np.intp]
    refused: list[Refusal]


def decode_serving(values: Sequence[bytes | None], *, max_bytes: int = MAX_MESSAGE_BYTES) -> DecodedRun:
    """Decode a run of serving-log message values (a partition's poll, in order) into one batch.

    Row messages (a record, or a ``"batch"`` envelope) and columnar envelopes may be mixed; the rows
    come out in message order. Every check is done a column at a time: over the whole run when it is
    all single records or all columnar envelopes (the two forms a topic usually carries), else over
    each envelope or stretch of records. Only when a check fails are the records of that stretch
    parsed one by one, to name each bad record and keep the good ones.
    """
    objects = _loaded(values, max_bytes)
    if objects is not None:
        fast = _single_records(objects) or _columnar_run(objects)
        if fast is not None:
            return fast
    refused: list[Refusal] = []
    parts: list[ServingBatch] = []
    sources: list[npt.NDArray[np.intp]] = []
    rows: list[Any] = []
    row_message: list[int] = []
    row_member: list[int | None] = []

    def flush_rows() -> None:
        if rows:
            batch, keep = _rows_batch(rows, row_message, row_member, refused)
            parts.append(batch)
            sources.append(np.asarray(row_message, dtype=np.intp)[np.asarray(keep, dtype=np.intp)])
            rows.clear()
            row_message.clear()
            row_member.clear()

    for position, raw in enumerate(values):
        try:
            obj = _load_object(raw, max_bytes) if objects is None else objects[position]
            columns = obj.get("columns", _MISSING)
            batch = obj.get("batch", _MISSING)
            if columns is not _MISSING or batch is not _MISSING:
                _check_version(obj.get("v", _MISSING), "", required=True, record_id=None)
            if columns is not _MISSING:
                flush_rows()
                part, kept = _columns_batch(columns, position, refused)
                parts.append(part)
                sources.append(np.full(kept, position, dtype=np.intp))
            elif batch is _MISSING:
                v = obj.get("v", _MISSING)
                if type(v) is not int or v != SCHEMA_VERSION:
                    rid = obj.get("request_id")
                    _check_version(v, "", required=True, record_id=rid if type(rid) is str else None)
                rows.append(obj)
                row_message.append(position)
                row_member.append(None)
            elif type(batch) is not list:
                msg = f"field 'batch': expected a list of records, got {_json_type(batch)}"
                raise RecordError(msg, reason=Reason.WRONG_TYPE)
            else:
                rows.extend(batch)
                row_message.extend([position] * len(batch))
                row_member.extend(range(len(batch)))
        except RecordError as exc:
            refused.append(Refusal(position, None, exc, None))
    flush_rows()
    refused.sort(key=lambda r: (r.message, -1 if r.member is None else r.member))
    message_of = np.concatenate(sources) if sources else np.empty(0, dtype=np.intp)
    return DecodedRun(ServingBatch.concat(parts), message_of, refused)


def _loaded(values: Sequence[bytes | None], max_bytes: int) -> list[dict[str, Any]] | None:
    """Every message parsed, when every one is a JSON object within the size limit; else None."""
    if not values or not _only(_BYTES, values):
        return None
    present = cast("Sequence[bytes]", values)
    if max(map(len, present)) > max_bytes:
        return None
    try:
        objects = list(map(orjson.loads, present))
    except orjson.JSONDecodeError:
        return None
    return objects if _only(_DICT, objects) else None


def _versioned(objects: list[dict[str, Any]], *, required: bool = True) -> bool:
    """Whether every object's ``"v"`` is this schema version (a missing one counts as it unless required)."""
    versions = list(map(_GET_V if required else _GET_VERSION, objects))
    return versions.count(SCHEMA_VERSION) == len(versions) and _only(_INT, versions)


def _single_records(objects: list[dict[str, Any]]) -> DecodedRun | None:
    """A run of good single-record messages as one batch, checked a run at a time; else None.

    The common case of a topic of single-record messages, without the per-message bookkeeping of the
    general path (which takes over, from the start, for any run that fails a check here).
    """
    if any(map(_HAS_COLUMNS, objects)) or any(map(_HAS_BATCH, objects)) or not _versioned(objects):
        return None  # a single-record message must carry "v"
    batch = _rows_fast(objects)
    return None if batch is None else DecodedRun(batch, np.arange(len(objects), dtype=np.intp), [])


def _columnar_run(objects: list[dict[str, Any]]) -> DecodedRun | None:
    """A run of good columnar envelopes as one batch, checked a run at a time; else None.

    The logger's form: every envelope with packed event times, the same features (each packed in every
    envelope or a list in every one) and no optional columns. Each envelope's shape is read without
    looking at its values; the values are then checked a column at a time over the whole run, with the
    checks of a single envelope. Anything else returns None, and the general path takes the run from
    the start, naming what is wrong.
    """
    columns = list(map(_GET_COLUMNS, objects))
    if not _only(_DICT, columns) or not _versioned(objects):
        return None
    first = columns[0].get("features")
    if type(first) is not dict:
        return None
    names = list(first)
    packed_names = [name for name in names if type(first[name]) is dict]
    list_names = [name for name in names if type(first[name]) is list]
    if len(packed_names) + len(list_names) != len(names):
        return None
    counts: list[int] = []
    request_ids: list[Any] = []
    stamps: list[Any] = []
    scores: list[Any] = []
    predictions: list[Any] = []
    shared: dict[str, list[Any]] = {name: [] for name in _SHARED_STRING_FIELDS}
    packed: dict[str, list[Any]] = {name: [] for name in packed_names}
    listed: dict[str, list[Any]] = {name: [] for name in list_names}
    packed_scores = type(columns[0].get("prediction")) is dict
    for body in columns:
        ids = body.get("request_id")
        features = body.get("features")
        if type(ids) is not list or type(features) is not dict or len(features) != len(names):
            return None
        n = len(ids)
        if any(body.get(name) is not None for name in RECORD_OPTIONAL_FIELDS):
            return None
        event_time = body.get("event_time")
        prediction = body.get("prediction")
        if type(event_time) is not dict or len(event_time) != 1:
            return None
        stamps.append(event_time.get(_PACKED_INT))
        if packed_scores:
            if type(prediction) is not dict or len(prediction) != 1:
                return None
            scores.append(prediction.get(_PACKED_FLOAT))
        elif type(prediction) is not list or len(prediction) != n:
            return None
        else:
            predictions.extend(prediction)
        for name, column in shared.items():
            value = body.get(name)
            if type(value) is str:
                column.extend([value] * n)
            elif type(value) is list and len(value) == n:
                column.extend(value)
            else:
                return None
        for name, column in packed.items():
            value = features.get(name)
            if type(value) is not dict or len(value) != 1:
                return None
            column.append(value.get(_PACKED_FLOAT))
        for name, column in listed.items():
            value = features.get(name)
            if type(value) is not list or len(value) != n:
                return None
            column.extend(value)
        request_ids.extend(ids)
        counts.append(n)
    event_us = _unpacked_run(stamps, counts, _PACKED_INT)
    if event_us is None or not _datetimes(event_us):
        return None
    if packed_scores:
        values = _unpacked_run(scores, counts, _PACKED_FLOAT)
        if values is None or not np.isfinite(values).all():
            return None
        predictions = values.tolist()
    unpacked: dict[str, FeatureColumn] = {}
    for name, strings in packed.items():
        floats = _unpacked_run(strings, counts, _PACKED_FLOAT)
        if floats is None:
            return None
        unpacked[name] = floats
    feature_columns = {name: unpacked[name] if name in unpacked else listed[name] for name in names}
    absent: list[Any] = [None] * len(request_ids)
    batch = _checked_batch(
        request_ids,
        event_us,
        shared["model"],
        shared["model_version"],
        shared["feature_state_hash"],
        feature_columns,
        predictions,
        absent,
        absent,
        absent,
    )
    if batch is None:
        return None
    return DecodedRun(batch, np.repeat(np.arange(len(objects), dtype=np.intp), counts), [])


def _unpacked_run(strings: list[Any], counts: list[int], code: str) -> npt.NDArray[Any] | None:
    """One column of a run from each envelope's packed base64 text; None if any is not ``counts`` long."""
    if not _only(_STR, strings):
        return None
    try:
        chunks = [binascii.a2b_base64(text, strict_mode=True) for text in strings]
    except (binascii.Error, ValueError):
        return None
    if list(map(len, chunks)) != [8 * n for n in counts]:
        return None
    return _from_packed(b"".join(chunks), code)


_BYTES: Final = frozenset({bytes})
_DICT: Final = frozenset({dict})
_STR: Final = frozenset({str})
_GET_COLUMNS: Final = operator.methodcaller("get", "columns")
_INT: Final = frozenset({int})
_HAS_COLUMNS: Final = operator.methodcaller("__contains__", "columns")
_HAS_BATCH: Final = operator.methodcaller("__contains__", "batch")
_GET_V: Final = operator.methodcaller("get", "v")


def _load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
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
    return obj


_ROW_FIELDS: Final = operator.itemgetter(
    "request_id", "event_time", "model", "model_version", "feature_state_hash", "features", "prediction"
)
_GET_VERSION: Final = operator.methodcaller("get", "v", SCHEMA_VERSION)
_GET_RAW_INPUTS: Final = operator.methodcaller("get", "raw_inputs")
_GET_SHADOWS: Final = operator.methodcaller("get", "shadow_predictions")
_GET_DEFAULTED: Final = operator.methodcaller("get", "defaulted")
_TZINFO: Final = operator.attrgetter("tzinfo")


def _rows_batch(
    rows: list[Any], messages: list[int], members: list[int | None], refused: list[Refusal]
) -> tuple[ServingBatch, list[int]]:
    """Row-form records (whose messages passed their checks) as a batch; the positions kept.

    Records of single-record messages (``members[i] is None``) had their ``"v"`` checked already.
    """
    batch = _rows_fast(rows)
    if batch is not None:
        return batch, list(range(len(rows)))
    records: list[ServingRecord] = []
    keep: list[int] = []
    for position, (row, message, member) in enumerate(zip(rows, messages, members, strict=True)):
        where = "" if member is None else f"batch[{member}]."
        try:
            records.append(_parse_serving(row, where, False))
            keep.append(position)
        except RecordError as exc:
            raw = None if member is None else _alone(row)
            refused.append(Refusal(message, member, exc, raw))
    return ServingBatch.from_records(records), keep


def _rows_fast(rows: list[Any]) -> ServingBatch | None:
    """Row-form records as columns when every check passes at once; None sends them one by one."""
    if not _only(_DICT, rows) or not _versioned(rows, required=False):
        return None
    try:
        fields = list(map(_ROW_FIELDS, rows))
    except KeyError:
        return None
    request_ids, times, models, model_versions, hashes, features, predictions = map(
        list, zip(*fields, strict=True)
    )
    if not _only(_DICT, features):
        return None
    names = list(features[0])
    width = len(names)
    columns: dict[str, list[Any]]
    if any(len(f) != width for f in features):
        columns = _union_columns(features)
    elif width == 0:
        columns = {}
    elif width == 1:
        (name,) = names
        try:
            columns = {name: [f[name] for f in features]}
        except KeyError:
            columns = _union_columns(features)
    else:
        try:
            columns = dict(
                zip(
                    names,
                    map(list, zip(*map(operator.itemgetter(*names), features), strict=True)),
                    strict=True,
                )
            )
        except KeyError:
            columns = _union_columns(features)
    return _checked_batch(
        request_ids,
        times,
        models,
        model_versions,
        hashes,
        columns,
        predictions,
        list(map(_GET_RAW_INPUTS, rows)),
        list(map(_GET_SHADOWS, rows)),
        list(map(_GET_DEFAULTED, rows)),
    )


def _union_columns(features: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names: dict[str, None] = {}
    for f in features:
        names.update(dict.fromkeys(f))
    return {name: [f.get(name) for f in features] for name in names}


def _only(types: set[Any] | frozenset[Any], values: Iterable[Any]) -> bool:
    return types.issuperset(map(type, values))


_OPTIONAL_OBJECT: Final = frozenset({dict, type(None)})
_OPTIONAL_LIST: Final = frozenset({list, type(None)})


def _checked_batch(
    request_ids: list[Any],
    times: list[Any] | npt.NDArray[np.int64],
    models: list[Any],
    model_versions: list[Any],
    hashes: list[Any],
    features: Mapping[str, list[Any] | npt.NDArray[np.float64]],
    predictions: list[Any],
    raw_inputs: list[Any],
    shadows: list[Any],
    defaulted: list[Any],
) -> ServingBatch | None:
    """The batch of these columns when every value is valid, else None (checked a column at a time).

    ``times`` are ISO strings, or epoch microseconds already range-checked (a packed column); a feature
    column that is an array came packed and needs no check.
    """
    strings = {str}
    if not (
        _only(strings, request_ids)
        and _only(strings, models)
        and _only(strings, model_versions)
        and _only(strings, hashes)
        and all(isinstance(c, np.ndarray) or _only(_SCALAR_TYPES, c) for c in features.values())
        and (_only(_VALUE_TYPES, predictions) or all(map(_is_prediction, predictions)))
        and _only(_OPTIONAL_OBJECT, raw_inputs)
        and _only(_OPTIONAL_OBJECT, shadows)
        and _only(_OPTIONAL_LIST, defaulted)
    ):
        return None
    if isinstance(times, np.ndarray):
        event_us = times
    else:
        try:
            instants = list(map(datetime.fromisoformat, times))
        except (TypeError, ValueError):
            return None
        if set(map(_TZINFO, instants)) != {UTC}:
            return None  # naive (refused) or another offset (converted): one by one
        event_us = np.fromiter(map(to_us, instants), dtype=np.int64, count=len(instants))
    has_shadows = any(shadows)
    if has_shadows and not all(all(map(_is_prediction, s.values())) for s in shadows if s):
        return None
    has_defaulted = any(defaulted)
    if has_defaulted and not all(_only(strings, d) for d in defaulted if d):
        return None
    return ServingBatch(
        request_ids,
        event_us,
        models,
        model_versions,
        hashes,
        dict(features),
        predictions,
        raw_inputs if raw_inputs.count(None) != len(raw_inputs) else None,
        [s or {} for s in shadows] if has_shadows else None,
        [d or [] for d in defaulted] if has_defaulted else None,
    )


#: Fields of a columnar envelope that may be one string for every row instead of a list.
_SHARED_STRING_FIELDS: Final = ("model", "model_version", "feature_state_hash")
#: Packed columns: the key of the one-key object, and the little-endian dtype of its base64 bytes.
_PACKED_FLOAT: Final = "f8"
_PACKED_INT: Final = "i8"
_PACKED_DTYPES: Final = {_PACKED_FLOAT: np.dtype("<f8"), _PACKED_INT: np.dtype("<i8")}
_NATIVE_DTYPES: Final = {_PACKED_FLOAT: np.dtype(np.float64), _PACKED_INT: np.dtype(np.int64)}
#: Event times a datetime can hold (years 1 to 9999), in microseconds since the epoch.
_MIN_US: Final = to_us(datetime.min.replace(tzinfo=UTC))
_MAX_US: Final = to_us(datetime.max.replace(tzinfo=UTC))


def _columns_batch(columns: Any, message: int, refused: list[Refusal]) -> tuple[ServingBatch, int]:
    """A columnar envelope's ``"columns"`` as a batch, and how many records it kept.

    The shape (which fields, how long each column is, whether a packed column decodes to one value
    per record) is checked first: a wrong shape refuses the whole message. A bad value refuses only
    its record, named by its row.
    """
    if type(columns) is not dict:
        msg = f"field 'columns': expected an object of field name to column, got {_json_type(columns)}"
        raise RecordError(msg, reason=Reason.WRONG_TYPE)
    for name in RECORD_REQUIRED_FIELDS[1:]:
        if name not in columns:
            msg = f"field 'columns.{name}' is missing; a columnar envelope requires {_COLUMNS_REQUIRED_TEXT}"
            raise RecordError(msg, reason=Reason.MISSING_FIELD)
    request_ids = columns["request_id"]
    if type(request_ids) is not list:
        _wrong("columns.", "request_id", "a list of request ids (one per record)", request_ids, None)
    n = len(request_ids)
    event_us = _unpack(columns["event_time"], _PACKED_INT, n, "event_time")
    packed_predictions = _unpack(columns["prediction"], _PACKED_FLOAT, n, "prediction")
    lists: dict[str, list[Any]] = {}
    for name in ("event_time", "prediction", *_SHARED_STRING_FIELDS, *RECORD_OPTIONAL_FIELDS):
        value = columns.get(name)
        if name == "event_time" and event_us is not None:
            continue
        if name == "prediction" and packed_predictions is not None:
            # A non-finite packed prediction is no prediction: its record is refused as a null one.
            values = packed_predictions.tolist()
            if not np.isfinite(packed_predictions).all():
                values = [v if math.isfinite(v) else None for v in values]
            lists[name] = values
        elif value is None and name in RECORD_OPTIONAL_FIELDS:
            lists[name] = [None] * n
        elif type(value) is str and name in _SHARED_STRING_FIELDS:
            lists[name] = [value] * n
        elif type(value) is list and len(value) == n:
            lists[name] = value
        else:
            shared = " (or one string for every record)" if name in _SHARED_STRING_FIELDS else ""
            packed = f' (or a packed column {{"{_PACKED_FLOAT}": base64}})' if name == "prediction" else ""
            if name == "event_time":
                packed = f' (or a packed column {{"{_PACKED_INT}": base64}} of epoch microseconds)'
            _wrong("columns.", name, f"a list of {n} values, one per request_id{shared}{packed}", value, None)
    features = columns["features"]
    if type(features) is not dict:
        _wrong("columns.", "features", "an object of feature name to a list of values", features, None)
    feature_columns: dict[str, FeatureColumn] = {}
    for name, column in features.items():
        if type(column) is list and len(column) == n:
            feature_columns[name] = column
            continue
        floats = _unpack(column, _PACKED_FLOAT, n, name, feature=True)
        if floats is None:
            packed = f'(or a packed column {{"{_PACKED_FLOAT}": base64}})'
            expected = f"a list of {n} values, one per request_id {packed}"
            _wrong("columns.", f"features['{name}']", expected, column, None)
        feature_columns[name] = floats  # infinities stay: _cell and column_values read them as null
    batch = None
    if event_us is None or _datetimes(event_us):
        batch = _checked_batch(
            request_ids,
            lists["event_time"] if event_us is None else event_us,
            lists["model"],
            lists["model_version"],
            lists["feature_state_hash"],
            feature_columns,
            lists["prediction"],
            lists["raw_inputs"],
            lists["shadow_predictions"],
            lists["defaulted"],
        )
    if batch is not None:
        return batch, n
    records: list[ServingRecord] = []
    for row in range(n):
        obj: dict[str, Any] = {"request_id": request_ids[row]}
        for name, column in lists.items():
            if column[row] is not None or name not in RECORD_OPTIONAL_FIELDS:
                obj[name] = column[row]
        obj["features"] = {name: _cell(column, row) for name, column in feature_columns.items()}
        try:
            if event_us is not None:
                obj["event_time"] = _packed_time(int(event_us[row]), row, request_ids[row])
            records.append(_parse_serving(obj, f"columns[{row}].", False))
        except RecordError as exc:
            if event_us is not None and "event_time" not in obj:
                obj["event_time"] = int(event_us[row])
            refused.append(Refusal(message, row, exc, _alone(obj)))
    return ServingBatch.from_records(records), len(records)


def _unpack(value: Any, code: str, n: int, name: str, *, feature: bool = False) -> npt.NDArray[Any] | None:
    """The values of a packed column (native byte order, maybe read-only); None if ``value`` is not one.

    A packed column is ``{"f8": base64}`` (float64) or ``{"i8": base64}`` (int64), little-endian, 8 bytes
    per record. One that does not decode to ``n`` values refuses the whole message (its shape is wrong).
    """
    if type(value) is not dict:
        return None
    packed = value.get(code)
    if len(value) != 1 or type(packed) is not str:
        _wrong("columns.", _column_name(name, feature), _packed_text(code, n), value, None)
    try:
        data = binascii.a2b_base64(packed, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        msg = (
            f"field 'columns.{_column_name(name, feature)}': expected {_packed_text(code, n)}, got text "
            f"that is not base64 ({exc})"
        )
        raise RecordError(msg, reason=Reason.WRONG_TYPE) from None
    if len(data) != 8 * n:
        msg = (
            f"field 'columns.{_column_name(name, feature)}': expected {_packed_text(code, n)}, got "
            f"{len(data)} bytes ({len(data) / 8:g} values)"
        )
        raise RecordError(msg, reason=Reason.WRONG_TYPE)
    return _from_packed(data, code)


def _from_packed(data: bytes, code: str) -> npt.NDArray[Any]:
    """Packed little-endian bytes as an array in native byte order (read-only when no copy was needed)."""
    return np.frombuffer(data, dtype=_PACKED_DTYPES[code]).astype(_NATIVE_DTYPES[code], copy=False)


def _column_name(name: str, feature: bool) -> str:
    return f"features['{name}']" if feature else name


def _packed_text(code: str, n: int) -> str:
    return f'a packed column {{"{code}": base64 of {n} little-endian 8-byte values}}'


def _datetimes(event_us: npt.NDArray[np.int64]) -> bool:
    """Whether every packed event time is one a datetime can hold (years 1 to 9999)."""
    return len(event_us) == 0 or bool(event_us.min() >= _MIN_US and event_us.max() <= _MAX_US)


def _packed_time(value: int, row: int, record_id: Any) -> str:
    """A packed event time (epoch microseconds) as the ISO string the record-wise parser checks."""
    if _MIN_US <= value <= _MAX_US:
        return from_us(value).isoformat()
    msg = (
        f"field 'columns[{row}].event_time': expected microseconds since the epoch within the years "
        f"1 to 9999, got {value}"
    )
    raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id if type(record_id) is str else None)


_COLUMNS_REQUIRED_TEXT: Final = ", ".join(RECORD_REQUIRED_FIELDS[1:])


# --------------------------------------------------------------------------------------------------
# decoding


_MISSING: Final[Any] = object()
_SCALAR_TYPES: Final = frozenset({float, int, str, bool, type(None)})
_NUMBER_TYPES: Final = frozenset({float, int})
_VALUE_TYPES: Final = frozenset({float, int, str, bool})


def decode_message(raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES) -> DecodeResult[ServingRecord]:
    """Decode one serving-log Kafka message value into records.

    Raises :class:`RecordError` when the message as a whole is unusable (undecodable, oversized, not an
    object, unsupported version, a columnar envelope of the wrong shape, or a single-record message
    whose record is bad). In a batch envelope one bad record does not lose the good ones: it is
    returned in ``rejected`` instead. The daemon decodes whole polls with :func:`decode_serving`.
    """
    run = decode_serving([raw], max_bytes=max_bytes)
    rejected: list[RejectedRecord] = []
    for refusal in run.refused:
        if refusal.member is None or refusal.raw is None:
            raise refusal.error
        rejected.append(RejectedRecord(refusal.member, refusal.error, refusal.raw))
    return DecodeResult(run.batch.records(), rejected)


def decode_label_message(
    raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> DecodeResult[LabelRecord]:
    """Decode one labels-topic message (one label or a batch envelope); errors as in decode_message."""
    return _decode(raw, max_bytes, _parse_label)


def _decode(raw: bytes | None, max_bytes: int, parse: Callable[[Any, str, bool], T]) -> DecodeResult[T]:
    obj = _load_object(raw, max_bytes)
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
            rejected.append(RejectedRecord(index, exc, _alone(item)))
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
    if type(label) is str and _non_finite_text(label):  # would be a NaN metric, not a label
        _wrong(where, "label", "a finite number, a class name or a bool", label, request_id)
    return LabelRecord(request_id, _parse_time(event_time, where, request_id), label)


def _non_finite_text(text: str) -> bool:
    """Whether a text label reads as a number that is not finite ("nan", "inf", "-Infinity")."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


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
    return _aware_utc(parsed, f"{where}event_time", record_id)  # (refuses 9999-12-31T23:00-05:00)


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


#: Previews of refused values are bounded in depth and length: a value nested a thousand levels deep
#: (orjson reads up to 1024) made ``repr`` raise RecursionError, out of the decoder.
_PREVIEW: Final = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 4, 60, 60


def _preview(value: Any) -> str:
    text = _PREVIEW.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _alone(value: Any) -> bytes | None:
    """A refused member of a batch re-encoded on its own; None when orjson cannot.

    (Over 255 levels deep: its dead letter then carries the whole message.)
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # (orjson.JSONEncodeError is one)
        return None


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


def encode_records(
    records: Iterable[ServingRecord], *, max_bytes: int = MAX_MESSAGE_BYTES, packed: bool = True
) -> bytes:
    """Encode several records as one columnar batch envelope; any bad record raises RecordError.

    The envelope is what :class:`~skewguard.serving.ServingLogger` sends: one list per field, so the
    feature names are written once per message instead of once per record (about half the bytes) and
    the daemon reads a column with one check instead of a record with many. A feature some records
    lack is written as null for them; ``model``, ``model_version`` and ``feature_state_hash`` are
    written once when every record shares them. The bytes are decoded again before they are returned.

    ``packed`` (the default) writes the event times, and every float feature column and float
    prediction column, as packed columns: base64 of little-endian 8-byte values (``{"i8": ...}`` epoch
    microseconds, ``{"f8": ...}`` floats, NaN for null). Reading those is a copy instead of parsing a
    number per value — most of what decoding cost — and they take about half the bytes again.
    ``packed=False`` writes every column as a JSON list (readable in a topic dump).
    """
    batch = list(records)
    # First, so a record whose event_time was made naive after construction is a RecordError (the
    # logger counts those), not the TypeError from_records would meet subtracting it from the epoch.
    instants = [_aware_utc(r.event_time, "event_time", r.request_id) for r in batch]
    columns = ServingBatch.from_records(batch)
    body: dict[str, Any] = {
        "request_id": columns.request_ids,
        "event_time": (
            _packed(columns.event_us, _PACKED_INT) if packed else [t.isoformat() for t in instants]
        ),
        "model": _shared(columns.models),
        "model_version": _shared(columns.model_versions),
        "feature_state_hash": _shared(columns.state_hashes),
        "features": {
            name: _packed_feature(column_values(column)) if packed else column
            for name, column in columns.features.items()
        },
        "prediction": _packed_prediction(columns.predictions) if packed else columns.predictions,
    }
    if columns.raw_inputs is not None:
        body["raw_inputs"] = columns.raw_inputs
    if columns.shadow_predictions is not None:
        body["shadow_predictions"] = columns.shadow_predictions
    if columns.defaulted is not None:
        body["defaulted"] = columns.defaulted
    try:
        raw = _dumps({"v": SCHEMA_VERSION, "columns": body}, None)
    except RecordError:
        for record in batch:  # name the record that cannot be written
            encode_record_fragment(record)
        raise
    _check_size(raw, max_bytes, batch[0].request_id if len(batch) == 1 else None)
    refused = decode_serving([raw], max_bytes=max_bytes).refused
    if refused:
        raise refused[0].error
    return raw


#: Python floats and float64s (and null) are what a packed float column holds. An int column stays a
#: list, so an integer-coded category keeps its type; so does a float32 one, which the list form
#: writes as its shortest text (0.1, not the 0.10000000149011612 a float64 of it would keep).
_PACKABLE_FEATURE: Final = frozenset({float, np.float64, type(None)})
_PACKABLE_PREDICTION: Final = frozenset({float, np.float64})


def _packed(values: npt.NDArray[Any], code: str) -> dict[str, str]:
    data = np.ascontiguousarray(values, dtype=_PACKED_DTYPES[code]).tobytes()
    return {code: binascii.b2a_base64(data, newline=False).decode("ascii")}


def _packed_feature(column: list[FeatureValue]) -> list[FeatureValue] | dict[str, str]:
    """A float feature column packed (infinities as NaN: null, as the list form writes them)."""
    if not _only(_PACKABLE_FEATURE, column) or column.count(None) == len(column):
        return column  # not all floats, or no float at all (an empty or all-null column)
    values = np.array(column, dtype=np.float64)
    values[np.isinf(values)] = np.nan
    return _packed(values, _PACKED_FLOAT)


def _packed_prediction(predictions: list[Prediction]) -> list[Prediction] | dict[str, str]:
    """Float predictions packed; anything else (classes, probabilities, NaN) stays a list."""
    if not predictions or not _only(_PACKABLE_PREDICTION, predictions):
        return predictions
    values = np.array(predictions, dtype=np.float64)
    if not np.isfinite(values).all():
        return predictions  # written as null, so refused as a missing prediction: as in the list form
    return _packed(values, _PACKED_FLOAT)


def _shared(values: list[str]) -> str | list[str]:
    """One string when every record has the same (and there is at least one), else the column."""
    return values[0] if values and values.count(values[0]) == len(values) else values


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


def _dumps(obj: dict[str, Any], record_id: str | None) -> bytes:
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
    try:
        return value.astimezone(UTC)
    except OverflowError:  # (9999-12-31T23:00-05:00 is past the last datetime in UTC)
        msg = f"field '{name}': {value.isoformat()} is outside the years 1 to 9999 in UTC"
        raise RecordError(msg, reason=Reason.WRONG_TYPE, record_id=record_id) from None


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
