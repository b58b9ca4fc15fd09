"""The serving-log codec: round trips, every refusal reason, batches, and agreement with the JSON Schema."""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from skewguard import records as records_module
from skewguard.errors import RecordError
from skewguard.records import (
    LABEL_REQUIRED_FIELDS,
    RECORD_OPTIONAL_FIELDS,
    RECORD_REQUIRED_FIELDS,
    LabelRecord,
    Reason,
    ServingBatch,
    ServingRecord,
    column_values,
    decode_label_message,
    decode_message,
    decode_serving,
    encode_label,
    encode_labels,
    encode_record,
    encode_record_fragment,
    encode_records,
    envelope_from_fragments,
    load_json_schema,
    to_us,
)

# ---------------------------------------------------------------------------------------------- helpers

T0 = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def make_record(i: int = 0, **overrides: Any) -> ServingRecord:
    fields: dict[str, Any] = {
        "request_id": f"req-{i}",
        "event_time": T0 + timedelta(seconds=i),
        "model": "churn",
        "model_version": "v3",
        "feature_state_hash": "3f2a9c",
        "features": {"age": 41.5, "plan": "pro", "is_new": False, "tenure": 7, "missing": None},
        "prediction": 0.73,
    }
    fields.update(overrides)
    return ServingRecord(**fields)


def record_dict(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(encode_record(make_record()))
    obj.update(overrides)
    return obj


def decode_one(obj: Any) -> ServingRecord:
    result = decode_message(orjson.dumps(obj))
    assert len(result.records) == 1
    return result.records[0]


def refusal(raw: bytes, **kwargs: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        decode_message(raw, **kwargs)
    return info.value


SERVING_VALIDATOR = Draft202012Validator(load_json_schema("serving_record"))
LABEL_VALIDATOR = Draft202012Validator(load_json_schema("label_record"))

# ------------------------------------------------------------------------------------------ strategies

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
feature_values = st.one_of(finite, int64, names, st.booleans(), st.none())
predictions = st.one_of(
    finite, int64, names, st.booleans(), st.lists(st.floats(0, 1), min_size=1, max_size=5)
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), int64, finite, names),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# hypothesis takes naive bounds and attaches the zones itself
aware_times = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC) | offsets,
)
records = st.builds(
    ServingRecord,
    request_id=names,
    event_time=aware_times,
    model=names,
    model_version=names,
    feature_state_hash=names,
    features=st.dictionaries(names, feature_values, max_size=8),
    prediction=predictions,
    raw_inputs=st.none() | st.dictionaries(names, json_values, max_size=4),
    shadow_predictions=st.dictionaries(names, predictions, max_size=3),
    defaulted=st.lists(names, max_size=3),
)


def _not_a_non_finite_number(text: str) -> bool:
    """Texts such as "INFINITY" are refused as labels (they would read as a NaN metric)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return True


labels = st.builds(
    LabelRecord,
    request_id=names,
    event_time=aware_times,
    label=st.one_of(finite, int64, names.filter(_not_a_non_finite_number), st.booleans()),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------- round trips


@FAST
@given(records)
def test_single_record_round_trips_exactly(record: ServingRecord) -> None:
    raw = encode_record(record)
    result = decode_message(raw)
    assert result.rejected == []
    assert result.records == [record]
    assert result.records[0].event_time.tzinfo is UTC


@FAST
@given(st.lists(records, min_size=1, max_size=6))
def test_batch_envelope_round_trips_in_order(batch: list[ServingRecord]) -> None:
    result = decode_message(encode_records(batch))
    # A columnar envelope writes a feature some records lack as null for them (the same to the monitor).
    names = {name for record in batch for name in record.features}
    expected = [replace(r, features={n: r.features.get(n) for n in names}) for r in batch]
    assert result.records == expected
    assert result.rejected == []


@FAST
@given(st.lists(labels, min_size=1, max_size=6))
def test_labels_round_trip_single_and_batched(batch: list[LabelRecord]) -> None:
    assert decode_label_message(encode_labels(batch)).records == batch
    assert decode_label_message(encode_label(batch[0])).records == [batch[0]]


def test_event_time_with_offset_is_normalised_to_the_same_instant_in_utc() -> None:
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    raw = orjson.dumps(record_dict(event_time=local.isoformat()))
    decoded = decode_message(raw).records[0].event_time
    assert decoded == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert decoded.tzinfo is UTC


def test_event_time_is_written_as_iso_8601_with_offset() -> None:
    obj = orjson.loads(encode_record(make_record()))
    assert obj["event_time"] == "2024-05-01T12:00:00.250000+00:00"
    assert obj["v"] == 1


def test_numpy_values_and_nan_are_written_as_plain_json() -> None:
    record = make_record(
        features={"x": np.float64(1.5), "n": np.int32(4), "gap": float("nan"), "g32": np.float32(0.5)},
        prediction=np.array([0.25, 0.75]),
        raw_inputs={"when": datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=-4))), "xs": [1, 2]},
    )
    decoded = decode_message(encode_record(record)).records[0]
    assert decoded.features == {"x": 1.5, "n": 4, "gap": None, "g32": 0.5}
    assert decoded.prediction == [0.25, 0.75]
    assert decoded.raw_inputs == {"when": "2024-05-01T09:30:00-04:00", "xs": [1, 2]}


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"", b'{"v": 1,'])
def test_undecodable_bytes_are_refused_as_undecodable(raw: bytes) -> None:
    assert refusal(raw).reason == Reason.UNDECODABLE


def test_tombstone_without_value_is_refused_as_undecodable() -> None:
    err = refusal(None)  # type: ignore[arg-type]
    assert err.reason == "undecodable"
    assert "tombstone" in str(err)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a string"', b"42", b"null"])
def test_json_that_is_not_an_object_is_refused_as_not_an_object(raw: bytes) -> None:
    err = refusal(raw)
    assert err.reason == "not_an_object"
    assert "expected a JSON object" in str(err)


@pytest.mark.parametrize("name", RECORD_REQUIRED_FIELDS)
def test_each_missing_required_field_is_named(name: str) -> None:
    obj = record_dict()
    del obj[name]
    err = refusal(orjson.dumps(obj))
    assert err.reason == "missing_field"
    assert f"'{name}'" in str(err)
    if name != "request_id":
        assert err.record_id == "req-0"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("request_id", 17, "request_id"),
        ("model", None, "model"),
        ("model_version", 3, "model_version"),
        ("feature_state_hash", ["a"], "feature_state_hash"),
        ("features", [1.0, 2.0], "features"),
        ("features", {"age": 3, "bad": [1, 2]}, "features['bad']"),
        ("features", {"nested": {"a": 1}}, "features['nested']"),
        ("prediction", None, "prediction"),
        ("prediction", [], "prediction"),
        ("prediction", [[0.1, 0.9]], "prediction"),
        ("prediction", {"p": 0.3}, "prediction"),
        ("event_time", 1714564800000, "event_time"),
        ("event_time", "yesterday", "event_time"),
        ("raw_inputs", [1], "raw_inputs"),
        ("shadow_predictions", {"v4": "ok", "v5": None}, "shadow_predictions['v5']"),
        ("shadow_predictions", ["v4"], "shadow_predictions"),
        ("defaulted", "age", "defaulted"),
        ("defaulted", ["age", 3], "defaulted"),
        ("v", "1", "v"),
        ("v", True, "v"),
    ],
)
def test_wrong_types_are_refused_naming_the_field_and_expectation(name: str, value: Any, named: str) -> None:
    err = refusal(orjson.dumps(record_dict(**{name: value})))
    assert err.reason == "wrong_type"
    assert f"'{named}'" in str(err)
    assert "expected" in str(err)


def test_timestamp_without_offset_is_refused_as_naive() -> None:
    err = refusal(orjson.dumps(record_dict(event_time="2024-05-01T12:00:00")))
    assert err.reason == "naive_timestamp"
    assert "'event_time'" in str(err)
    assert err.record_id == "req-0"


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_an_event_time_beyond_the_datetime_range_in_utc_is_refused_not_raised(stamp: str) -> None:
    err = refusal(orjson.dumps(record_dict(event_time=stamp)))
    assert err.reason == "wrong_type"
    assert "outside the years 1 to 9999 in UTC" in str(err) and err.record_id == "req-0"
    run = decode_serving([orjson.dumps(record_dict(event_time=stamp)), orjson.dumps(record_dict())])
    assert [r.message for r in run.refused] == [0] and len(run.batch) == 1


@pytest.mark.parametrize("version", [0, 2, 99])
def test_other_schema_versions_are_refused_as_unsupported(version: int) -> None:
    err = refusal(orjson.dumps(record_dict(v=version)))
    assert err.reason == "unsupported_version"
    envelope = orjson.dumps({"v": version, "batch": [record_dict()]})
    assert refusal(envelope).reason == "unsupported_version"


def test_message_larger_than_the_limit_is_refused_as_oversized_before_parsing() -> None:
    raw = encode_record(make_record())
    assert decode_message(raw, max_bytes=len(raw)).records
    err = refusal(raw, max_bytes=len(raw) - 1)
    assert err.reason == "oversized"
    assert str(len(raw)) in str(err)
    assert refusal(b"x" * 200, max_bytes=100).reason == "oversized"


def test_batch_field_that_is_not_a_list_is_refused() -> None:
    err = refusal(orjson.dumps({"v": 1, "batch": {"a": 1}}))
    assert err.reason == "wrong_type"
    assert "'batch'" in str(err)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode_one(record_dict(added_in_v1_1="x")).request_id == "req-0"


# ---------------------------------------------------------------------------------------------- batches


def test_batch_with_bad_records_keeps_the_good_ones_and_reports_each_bad_one() -> None:
    good = [orjson.loads(encode_record(make_record(i))) for i in range(5)]
    bad_type = dict(good[1], prediction=None)
    missing = {k: v for k, v in good[3].items() if k != "features"}
    items = [good[0], bad_type, good[2], missing, "not a record", good[4]]
    result = decode_message(orjson.dumps({"v": 1, "batch": items}))

    assert [r.request_id for r in result.records] == ["req-0", "req-2", "req-4"]
    assert [(r.index, r.error.reason) for r in result.rejected] == [
        (1, "wrong_type"),
        (3, "missing_field"),
        (4, "not_an_object"),
    ]
    assert "batch[1].prediction" in str(result.rejected[0].error)
    assert result.rejected[0].error.record_id == "req-1"
    assert orjson.loads(result.rejected[1].raw or b"") == missing


def test_batch_member_with_wrong_version_is_rejected_alone() -> None:
    good = record_dict()
    result = decode_message(orjson.dumps({"v": 1, "batch": [good, dict(good, v=2)]}))
    assert len(result.records) == 1
    assert result.rejected[0].error.reason == "unsupported_version"


def test_envelope_without_version_is_refused_as_missing_field() -> None:
    err = refusal(orjson.dumps({"batch": [record_dict()]}))
    assert err.reason == "missing_field"
    assert "'v'" in str(err)


# ------------------------------------------------------------------------------ columnar envelopes, runs


def columnar(n: int = 3, *, packed: bool = False, **overrides: Any) -> dict[str, Any]:
    """A columnar envelope of ``n`` records as a dict (every column a JSON list unless ``packed``)."""
    records = [make_record(i) for i in range(n)]
    obj: dict[str, Any] = orjson.loads(encode_records(records, packed=packed))
    obj["columns"].update(overrides)
    return obj


def test_columnar_envelope_writes_each_field_once_and_shared_strings_once() -> None:
    obj = columnar(3)
    assert obj["v"] == 1
    body = obj["columns"]
    assert body["request_id"] == ["req-0", "req-1", "req-2"]
    assert body["model"] == "churn"  # the same for every record: written once
    assert body["features"]["age"] == [41.5, 41.5, 41.5]
    mixed = orjson.loads(encode_records([make_record(0), make_record(1, model="other")]))
    assert mixed["columns"]["model"] == ["churn", "other"]


@pytest.mark.parametrize(
    ("overrides", "reason", "names"),
    [
        ({"event_time": ["2024-05-01T12:00:00+00:00"]}, "wrong_type", "columns.event_time"),
        ({"features": {"age": [1.0]}}, "wrong_type", "columns.features['age']"),
        ({"features": [1, 2, 3]}, "wrong_type", "columns.features"),
        ({"request_id": "req-0"}, "wrong_type", "columns.request_id"),
        ({"model": 7}, "wrong_type", "columns.model"),
        ({"defaulted": "age"}, "wrong_type", "columns.defaulted"),
    ],
)
def test_a_columnar_envelope_of_the_wrong_shape_is_refused_whole(
    overrides: dict[str, Any], reason: str, names: str
) -> None:
    err = refusal(orjson.dumps(columnar(3, **overrides)))
    assert err.reason == reason
    assert names in str(err)


def test_a_columnar_envelope_missing_a_column_or_version_is_refused_whole() -> None:
    obj = columnar(2)
    del obj["columns"]["prediction"]
    err = refusal(orjson.dumps(obj))
    assert (err.reason, "'columns.prediction'" in str(err)) == ("missing_field", True)
    assert refusal(orjson.dumps({"columns": columnar(2)["columns"]})).reason == "missing_field"
    assert refusal(orjson.dumps({"v": 1, "columns": [1]})).reason == "wrong_type"


def test_bad_values_in_a_columnar_envelope_refuse_only_their_records() -> None:
    obj = columnar(
        4,
        prediction=[0.1, None, 0.3, 0.4],
        event_time=[
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:01+00:00",
            "2024-05-01T12:00:02",  # naive
            "2024-05-01T14:00:03+02:00",  # another offset: converted, kept
        ],
    )
    obj["columns"]["features"]["plan"] = ["pro", "pro", "pro", {"nested": 1}]
    result = decode_message(orjson.dumps(obj))
    assert [r.request_id for r in result.records] == ["req-0"]
    assert [(r.index, r.error.reason) for r in result.rejected] == [
        (1, "wrong_type"),
        (2, "naive_timestamp"),
        (3, "wrong_type"),
    ]
    assert "columns[1].prediction" in str(result.rejected[0].error)
    assert result.rejected[0].error.record_id == "req-1"
    assert "columns[3].features['plan']" in str(result.rejected[2].error)
    assert orjson.loads(result.rejected[1].raw or b"")["request_id"] == "req-2"  # dead-lettered alone
    obj["columns"]["features"]["plan"][3] = "pro"
    kept = decode_message(orjson.dumps(obj)).records
    assert kept[-1].event_time == datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)


def packed_floats(*values: float) -> dict[str, str]:
    return {"f8": base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode()}


def test_packed_envelope_packs_times_and_float_columns_and_leaves_the_rest_as_lists() -> None:
    records = [make_record(i) for i in range(3)]
    records[1].features["age"] = None
    records[2].features["age"] = float("inf")  # null, as the list form writes it
    body = orjson.loads(encode_records(records))["columns"]
    stamps = np.frombuffer(base64.b64decode(body["event_time"]["i8"]), dtype="<i8")
    assert stamps.tolist() == [to_us(r.event_time) for r in records]
    ages = np.frombuffer(base64.b64decode(body["features"]["age"]["f8"]), dtype="<f8")
    assert ages[0] == 41.5
    assert np.isnan(ages[1:]).all()
    assert np.frombuffer(base64.b64decode(body["prediction"]["f8"]), dtype="<f8").tolist() == [0.73] * 3
    # ints (a category may be coded as one), strings, bools and all-null columns stay lists
    assert body["features"]["tenure"] == [7, 7, 7]
    assert body["features"]["plan"] == ["pro"] * 3
    assert body["features"]["is_new"] == [False] * 3
    assert body["features"]["missing"] == [None] * 3
    decoded = decode_message(encode_records(records)).records
    assert [r.features["age"] for r in decoded] == [41.5, None, None]
    assert decoded[0] == records[0]
    # class probabilities and classes are not packed
    probabilities = orjson.loads(encode_records([make_record(0, prediction=[0.2, 0.8])]))["columns"]
    assert probabilities["prediction"] == [[0.2, 0.8]]


@FAST
@given(st.lists(records, min_size=1, max_size=8))
def test_packed_and_list_envelopes_decode_to_the_same_batch(batch: list[ServingRecord]) -> None:
    packed = decode_serving([encode_records(batch)])
    lists = decode_serving([encode_records(batch, packed=False)])
    assert packed.refused == lists.refused == []
    assert packed.batch.records() == lists.batch.records()
    assert packed.batch.event_us.tolist() == lists.batch.event_us.tolist()
    for name, column in packed.batch.features.items():
        assert column_values(column) == column_values(lists.batch.features[name])


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("event_time", {"i8": "not base64!"}, "not base64"),
        ("event_time", {"f8": base64.b64encode(bytes(24)).decode()}, "columns.event_time"),
        ("prediction", {"f8": base64.b64encode(bytes(16)).decode()}, "16 bytes (2 values)"),
        ("prediction", {"f8": base64.b64encode(bytes(24)).decode(), "x": 1}, "columns.prediction"),
        ("prediction", {"f8": 5}, "columns.prediction"),
    ],
)
def test_a_broken_packed_column_refuses_the_whole_message_naming_it(
    column: str, value: Any, expected: str
) -> None:
    err = refusal(orjson.dumps(columnar(3, packed=True, **{column: value})))
    assert err.reason == "wrong_type"
    assert expected in str(err)
    obj = columnar(3, packed=True)
    obj["columns"]["features"]["age"] = {"f8": base64.b64encode(bytes(8)).decode()}
    err = refusal(orjson.dumps(obj))
    assert (err.reason, "columns.features['age']" in str(err)) == ("wrong_type", True)


def test_bad_values_in_packed_columns_refuse_only_their_records() -> None:
    obj = columnar(4, packed=True, prediction=packed_floats(0.1, float("nan"), 0.3, 0.4))
    stamps = [to_us(T0), to_us(T0) + 1, 2**62, to_us(T0) + 3]  # 2**62 µs is after the year 9999
    obj["columns"]["event_time"] = {"i8": base64.b64encode(np.asarray(stamps, "<i8").tobytes()).decode()}
    result = decode_message(orjson.dumps(obj))
    assert [r.request_id for r in result.records] == ["req-0", "req-3"]
    assert [r.event_time for r in result.records] == [T0, T0 + timedelta(microseconds=3)]
    assert [(r.index, r.error.reason) for r in result.rejected] == [(1, "wrong_type"), (2, "wrong_type")]
    assert "columns[1].prediction" in str(result.rejected[0].error)
    assert "columns[2].event_time" in str(result.rejected[1].error)
    assert "years 1 to 9999" in str(result.rejected[1].error)
    assert result.rejected[1].error.record_id == "req-2"
    assert orjson.loads(result.rejected[1].raw or b"")["event_time"] == 2**62  # dead-lettered as it came


def test_packed_columns_stay_arrays_through_concat_and_take_and_become_lists_when_mixed() -> None:
    packed = decode_serving([encode_records([make_record(0), make_record(1, features={"age": None})])]).batch
    assert isinstance(packed.features["age"], np.ndarray)
    assert packed.features["plan"] == ["pro", None]
    both = ServingBatch.concat([packed, packed])
    assert isinstance(both.features["age"], np.ndarray)
    assert column_values(both.features["age"]) == [41.5, None, 41.5, None]
    assert column_values(both.take([3, 0]).features["age"]) == [None, 41.5]
    mixed = ServingBatch.concat([packed, ServingBatch.from_records([make_record(2)])])
    assert mixed.features["age"] == [41.5, None, 41.5]
    assert mixed.features["plan"] == ["pro", None, "pro"]
    assert mixed.record(1).features["age"] is None


def test_a_record_the_codec_would_refuse_is_refused_by_encode_records_naming_it() -> None:
    naive_raw = make_record(1, raw_inputs={"when": datetime(2024, 5, 1)})  # noqa: DTZ001
    with pytest.raises(RecordError) as info:
        encode_records([make_record(0), naive_raw])
    assert (info.value.reason, info.value.record_id) == ("naive_timestamp", "req-1")
    with pytest.raises(RecordError) as info:
        encode_records([make_record(0), make_record(1, prediction=[])])
    assert info.value.reason == "wrong_type"
    mutated = make_record(2)
    mutated.event_time = datetime(2024, 5, 1)  # noqa: DTZ001 - made naive after construction
    with pytest.raises(RecordError) as info:
        encode_records([make_record(0), mutated])
    assert (info.value.reason, info.value.record_id) == ("naive_timestamp", "req-2")


@FAST
@given(st.lists(records, min_size=1, max_size=8), st.integers(0, 2))
def test_a_run_of_messages_decodes_to_the_records_in_order_whatever_the_form(
    batch: list[ServingRecord], form: int
) -> None:
    """Every path of the column-at-a-time decoder (fast or record by record) gives the records back."""
    if form == 0:
        values = [encode_record(r) for r in batch]
        sources = list(range(len(batch)))
    elif form == 1:
        values = [envelope_from_fragments([encode_record_fragment(r) for r in batch])]
        sources = [0] * len(batch)
    else:
        values = (
            [encode_records(batch[:1]), encode_records(batch[1:])]
            if len(batch) > 1
            else [encode_records(batch)]
        )
        sources = [0] + [1] * (len(batch) - 1)
    run = decode_serving(values)
    assert run.refused == []
    assert run.batch.records() == ServingBatch.from_records(batch).records()
    assert run.message_of.tolist() == sources


def test_a_run_mixing_forms_and_bad_messages_keeps_order_and_names_each_refusal() -> None:
    values = [
        encode_record(make_record(0)),
        b"not json",
        encode_records([make_record(1), make_record(2)]),
        orjson.dumps(
            {"v": 1, "batch": [record_dict(request_id="req-3"), dict(record_dict(), prediction=None)]}
        ),
        None,
        encode_record(make_record(4)),
        orjson.dumps(record_dict(request_id="req-5", event_time="2024-05-01T12:00:00")),
    ]
    run = decode_serving(values)
    assert run.batch.request_ids == ["req-0", "req-1", "req-2", "req-3", "req-4"]
    assert run.message_of.tolist() == [0, 2, 2, 3, 5]
    assert [(r.message, r.member, r.error.reason) for r in run.refused] == [
        (1, None, "undecodable"),
        (3, 1, "wrong_type"),
        (4, None, "undecodable"),
        (6, None, "naive_timestamp"),
    ]
    assert run.refused[0].raw is None  # a whole message is dead-lettered as it came
    assert orjson.loads(run.refused[1].raw or b"")["prediction"] is None


def test_a_batch_takes_rows_and_concatenates_batches_with_different_columns() -> None:
    a = ServingBatch.from_records([make_record(0), make_record(1, defaulted=["age"])])
    b = ServingBatch.from_records([make_record(2, features={"other": 1.0}, shadow_predictions={"v4": 0.5})])
    both = ServingBatch.concat([a, b])
    assert both.request_ids == ["req-0", "req-1", "req-2"]
    assert both.features["other"] == [None, None, 1.0]
    assert both.features["age"] == [41.5, 41.5, None]
    assert both.defaulted == [[], ["age"], []]
    assert both.shadow_predictions == [{}, {}, {"v4": 0.5}]
    picked = both.take([2, 0])
    assert picked.request_ids == ["req-2", "req-0"]
    assert picked.event_us.tolist() == [both.event_us[2], both.event_us[0]]
    assert picked.record(0).shadow_predictions == {"v4": 0.5}
    assert len(ServingBatch.concat([])) == 0


# ------------------------------------------------------------------------------------ encoding refusals


def test_constructing_a_record_with_a_naive_event_time_is_refused() -> None:
    with pytest.raises(RecordError) as info:
        make_record(event_time=datetime(2024, 5, 1, 12, 0))  # noqa: DTZ001 - the naive input under test
    assert info.value.reason == "naive_timestamp"
    assert "event_time" in str(info.value)


def test_naive_datetime_inside_raw_inputs_is_refused_at_encoding() -> None:
    naive = datetime(2024, 5, 1, 12, 0)  # noqa: DTZ001 - the naive input under test
    with pytest.raises(RecordError) as info:
        encode_record(make_record(raw_inputs={"signup": naive}))
    assert info.value.reason == "naive_timestamp"
    assert info.value.record_id == "req-0"


@pytest.mark.parametrize(
    "overrides",
    [
        {"features": {"bad": [1, 2]}},
        {"features": {"bad": object()}},
        {"prediction": None},
        {"prediction": [[1.0]]},
        {"defaulted": [1]},
        {"features": {"huge": 2**70}},
    ],
)
def test_encoding_refuses_what_decoding_would_refuse(overrides: dict[str, Any]) -> None:
    with pytest.raises(RecordError) as info:
        encode_record(make_record(**overrides))
    assert info.value.reason == "wrong_type"


def test_encoding_refuses_a_record_above_the_size_limit() -> None:
    with pytest.raises(RecordError) as info:
        encode_record(make_record(raw_inputs={"blob": "x" * 2000}), max_bytes=1000)
    assert info.value.reason == "oversized"


def test_label_with_a_non_scalar_label_is_refused() -> None:
    raw = orjson.dumps({"v": 1, "request_id": "r", "event_time": T0.isoformat(), "label": [1]})
    with pytest.raises(RecordError) as info:
        decode_label_message(raw)
    assert info.value.reason == "wrong_type"
    assert "'label'" in str(info.value)


@pytest.mark.parametrize("text", ["nan", " NaN", "inf", "-Infinity"])
def test_a_label_text_that_reads_as_a_non_finite_number_is_refused(text: str) -> None:
    raw = orjson.dumps({"v": 1, "request_id": "r", "event_time": T0.isoformat(), "label": text})
    with pytest.raises(RecordError) as info:
        decode_label_message(raw)
    assert info.value.reason == "wrong_type" and "a finite number, a class name or a bool" in str(info.value)
    # Text that is not a number at all is a class name (or a yes/no label): accepted.
    for fine in ("owl", "yes", "2"):
        ok = orjson.dumps({"v": 1, "request_id": "r", "event_time": T0.isoformat(), "label": fine})
        assert decode_label_message(ok).records[0].label == fine


@pytest.mark.parametrize("name", LABEL_REQUIRED_FIELDS)
def test_label_missing_field_is_named(name: str) -> None:
    obj = orjson.loads(encode_label(LabelRecord("r-1", T0, 1)))
    del obj[name]
    with pytest.raises(RecordError) as info:
        decode_label_message(orjson.dumps(obj))
    assert info.value.reason == "missing_field"
    assert f"'{name}'" in str(info.value)


# ---------------------------------------------------------------------------------------------- JSON Schema


@FAST
@given(st.lists(records, min_size=1, max_size=3))
def test_encoded_records_validate_against_the_json_schema(batch: list[ServingRecord]) -> None:
    SERVING_VALIDATOR.validate(orjson.loads(encode_record(batch[0])))
    SERVING_VALIDATOR.validate(orjson.loads(encode_records(batch)))


@FAST
@given(st.lists(labels, min_size=1, max_size=3))
def test_encoded_labels_validate_against_the_json_schema(batch: list[LabelRecord]) -> None:
    LABEL_VALIDATOR.validate(orjson.loads(encode_label(batch[0])))
    LABEL_VALIDATOR.validate(orjson.loads(encode_labels(batch)))


def test_schema_and_codec_agree_on_required_and_known_fields() -> None:
    schema = load_json_schema("serving_record")
    defs = schema["$defs"]
    assert set(defs["single_record"]["required"]) == set(RECORD_REQUIRED_FIELDS)
    assert set(defs["batch_record"]["required"]) == set(RECORD_REQUIRED_FIELDS) - {"v"}
    columns = defs["columnar_envelope"]["properties"]["columns"]
    assert set(columns["required"]) == set(RECORD_REQUIRED_FIELDS) - {"v"}
    assert set(columns["properties"]) == (set(RECORD_REQUIRED_FIELDS) | set(RECORD_OPTIONAL_FIELDS)) - {"v"}
    known = set(defs["record_body"]["properties"])
    assert known == set(RECORD_REQUIRED_FIELDS) | set(RECORD_OPTIONAL_FIELDS)
    label_defs = load_json_schema("label_record")["$defs"]
    assert set(label_defs["single_label"]["required"]) == set(LABEL_REQUIRED_FIELDS)


@pytest.mark.parametrize("name", RECORD_REQUIRED_FIELDS)
def test_schema_and_codec_both_refuse_a_record_missing_a_required_field(name: str) -> None:
    obj = record_dict()
    del obj[name]
    assert not SERVING_VALIDATOR.is_valid(obj)
    assert refusal(orjson.dumps(obj)).reason == "missing_field"
    # inside an envelope, only "v" becomes optional, for both
    member = {"v": 1, "batch": [obj]}
    codec_ok = not decode_message(orjson.dumps(member)).rejected
    assert SERVING_VALIDATOR.is_valid(member) == codec_ok == (name == "v")


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_time": "2024-05-01T12:00:00"},
        {"features": {"a": [1]}},
        {"prediction": []},
        {"prediction": ["a"]},
        {"defaulted": [3]},
        {"v": 2},
        {"request_id": 5},
    ],
)
def test_schema_and_codec_both_refuse_bad_values(overrides: dict[str, Any]) -> None:
    obj = record_dict(**overrides)
    assert not SERVING_VALIDATOR.is_valid(obj)
    with pytest.raises(RecordError):
        decode_message(orjson.dumps(obj))


@pytest.mark.parametrize(
    "value", [{"f8": 5}, {"f8": "AAAAAAAAAAA=", "extra": 1}, {"i8": "AAAAAAAAAAA="}, {"f8": "AAAA"}]
)
def test_schema_and_codec_both_refuse_a_malformed_packed_column(value: dict[str, Any]) -> None:
    obj = columnar(1, packed=True)
    SERVING_VALIDATOR.validate(obj)
    obj["columns"]["features"]["age"] = value
    # the schema cannot count bytes (the last case); the codec does
    assert SERVING_VALIDATOR.is_valid(obj) == (value == {"f8": "AAAA"})
    with pytest.raises(RecordError):
        decode_message(orjson.dumps(obj))


def test_infinities_in_a_packed_feature_column_are_null_as_in_the_list_form() -> None:
    obj = columnar(3, packed=True)
    obj["columns"]["features"]["age"] = packed_floats(float("inf"), 1.5, float("-inf"))
    run = decode_serving([orjson.dumps(obj)])
    assert [r.features["age"] for r in run.batch.records()] == [None, 1.5, None]
    assert column_values(run.batch.features["age"]) == [None, 1.5, None]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": True}, "wrong_type"),
        ({"v": None}, "wrong_type"),
        ({"columns": 1}, "wrong_type"),  # a columnar envelope whose columns are not an object
        ({"features": {"age": [1]}}, "wrong_type"),
    ],
)
def test_one_bad_message_in_a_run_of_single_records_is_refused_and_the_rest_kept(
    change: dict[str, Any], reason: str
) -> None:
    values = [encode_record(make_record(i)) for i in range(5)]
    values[3] = orjson.dumps(record_dict(request_id="req-3", **change))
    unversioned = record_dict(request_id="req-4")
    del unversioned["v"]
    values[4] = orjson.dumps(unversioned)
    run = decode_serving(values)
    assert run.batch.request_ids == ["req-0", "req-1", "req-2"]
    assert [(r.message, r.error.reason) for r in run.refused] == [(3, reason), (4, "missing_field")]


@FAST
@given(
    st.lists(st.tuples(finite, st.one_of(finite, st.none()), names, st.booleans()), min_size=1, max_size=12),
    st.integers(1, 4),
)
def test_a_run_of_logger_envelopes_is_checked_at_once_and_gives_the_records_back(
    rows: list[tuple[float, float | None, str, bool]], pieces: int
) -> None:
    records = [
        make_record(i, features={"age": age, "maybe": maybe, "plan": plan, "is_new": flag})
        for i, (age, maybe, plan, flag) in enumerate(rows)
    ]
    size = -(-len(records) // pieces)
    chunks = [records[i : i + size] for i in range(0, len(records), size)]
    for chunk in chunks:  # "maybe" packed in every envelope (an all-null column is written as a list)
        chunk[0].features["maybe"] = 1.5
    values = [encode_records(chunk) for chunk in chunks]
    assert records_module._columnar_run([orjson.loads(v) for v in values]) is not None  # the run-wide path
    run = decode_serving(values)
    assert run.refused == []
    assert run.batch.records() == records
    assert run.message_of.tolist() == [m for m, chunk in enumerate(chunks) for _ in chunk]


def test_a_bad_record_in_a_run_of_logger_envelopes_is_refused_alone() -> None:
    values = [encode_records([make_record(3 * m + i) for i in range(3)]) for m in range(3)]
    middle = orjson.loads(values[1])
    middle["columns"]["prediction"] = packed_floats(0.1, float("nan"), 0.3)
    values[1] = orjson.dumps(middle)
    run = decode_serving(values)
    assert run.batch.request_ids == [f"req-{i}" for i in range(9) if i != 4]
    assert run.message_of.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [(r.message, r.member, r.error.reason) for r in run.refused] == [(1, 1, "wrong_type")]


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_values_nested_deeper_than_orjson_writes_or_repr_reads_are_refused_not_raised() -> None:
    """A prediction 1000 arrays deep made the error message's repr raise RecursionError out of the
    decoder; a batch member 300 deep could not be re-encoded for its dead letter (orjson writes 255
    levels). Either way the daemon's step raised, and a restart met the same message again."""
    good = '"request_id": "ok", "event_time": "2024-05-01T12:00:00+00:00", "model": "m", '
    good += '"model_version": "v", "feature_state_hash": "h", "features": {"x": 1.0}, "prediction": 0.5'
    deep = ('{"v": 1, ' + good.replace('"prediction": 0.5', f'"prediction": {_nested(1000)}') + "}").encode()
    run = decode_serving([deep])
    [refusal] = run.refused
    assert len(run.batch) == 0 and refusal.error.reason is Reason.WRONG_TYPE and refusal.raw is None
    member = (
        "{"
        + good.replace('"request_id": "ok"', '"request_id": "deep"').replace(
            '"features": {"x": 1.0}', f'"features": {{"x": {_nested(300)}}}'
        )
        + "}"
    )
    envelope = ('{"v": 1, "batch": [{' + good + "}, " + member + "]}").encode()
    run = decode_serving([envelope])
    assert run.batch.request_ids == ["ok"]
    [refusal] = run.refused
    assert refusal.member == 1 and refusal.raw is None  # (its dead letter carries the message)
    stamp = '"event_time": "2024-05-01T12:00:00+00:00"'
    labels = f'{{"v": 1, "batch": [{{"request_id": "a", {stamp}, "label": 1}}, '
    labels += f'{{"request_id": "b", {stamp}, "label": {_nested(300)}}}]}}'
    result = decode_label_message(labels.encode())
    assert [r.request_id for r in result.records] == ["a"]
    [rejected] = result.rejected
    assert rejected.index == 1 and rejected.raw is None


def test_a_refused_record_that_cannot_be_re_encoded_is_dead_lettered_as_its_message() -> None:
    from skewguard.daemon import _rebuilt
    from skewguard.io.kafka import RawMessage

    record = ServingRecord(
        "r1", T0, "m", "v", "h", {"x": 1.0}, 0.5, raw_inputs={"deep": orjson.loads(_nested(300))}
    )
    message = RawMessage("serving", 0, 7, None, b"the original bytes", 0, [])
    assert _rebuilt(message, record) == b"the original bytes"
    plain = dataclasses.replace(record, raw_inputs={"x": 1})
    rebuilt = _rebuilt(message, plain)
    assert rebuilt is not None and orjson.loads(rebuilt)["request_id"] == "r1"
