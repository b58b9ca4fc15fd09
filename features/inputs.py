"""Raw inputs: their declared types, and the one coercion both the batch and the online path run.

Parity between ``transform_frame`` and ``transform_record`` starts here. A record is turned into a
one-row frame and coerced by exactly the same function as a training frame, so every raw column has
the same dtype in both paths (a lone ``None`` would otherwise become an ``object`` column in a one-row
frame but ``NaN`` in a float column of a large one, and the two paths would disagree).

Timestamps must be timezone-aware: a naive timestamp is ambiguous (server-local? UTC?) and is exactly
the kind of silent disagreement between training and serving that this library exists to prevent.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from features.errors import FeatureError

#: The canonical in-memory dtype of a timestamp input after coercion.
UTC_DTYPE = "datetime64[ns, UTC]"


class InputType(StrEnum):
    """The declared type of a raw input, and therefore its canonical column dtype after coercion."""

    FLOAT = "float"
    """Real number; stored as float64, null as NaN. Booleans and strings are rejected."""
    INT = "int"
    """Whole number; stored as float64 (so null is NaN in both paths), non-integral values rejected."""
    STRING = "string"
    """Text; stored as an object column of ``str`` or ``None``."""
    BOOL = "bool"
    """True/False; stored as pandas' nullable ``boolean``."""
    TIMESTAMP = "timestamp"
    """Timezone-aware instant; stored as ``datetime64[ns, UTC]``. Naive values are rejected."""
    TIMEZONE = "timezone"
    """IANA timezone name (``"Europe/Berlin"``); stored as ``str``. Unknown names are rejected."""
    TIMESTAMP_LIST = "timestamp_list"
    """A history of aware instants (e.g. past clicks); stored per row as an int64 array of UTC ns."""


@dataclass(frozen=True, slots=True)
class RawInput:
    """One raw input a feature reads: what training files and serving requests must provide.

    ``low``/``high`` bound numeric inputs and ``allowed`` lists the permitted strings; they feed the
    Great Expectations suite generated for raw data, not the coercion (a value outside the domain is a
    data-quality finding, not a reason to crash a serving request).
    """

    name: str
    type: InputType
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    allowed: tuple[str, ...] | None = None
    description: str = ""


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _null_to_none(objects: pd.Series[Any], nulls: np.ndarray[Any, np.dtype[np.bool_]]) -> pd.Series[Any]:
    """Every null spelling (NaN, NaT, pd.NA) as ``None``, the one null of object columns in both paths."""
    out = objects.copy()
    out[nulls] = None
    return out


def _first_bad(series: pd.Series[Any], bad: np.ndarray[Any, np.dtype[np.bool_]]) -> tuple[Any, Any]:
    position = int(np.flatnonzero(bad)[0])
    return series.index[position], series.iloc[position]


def _to_utc_ns(value: Any, spec: RawInput, row: Any) -> int:
    """One timestamp value → UTC nanoseconds, rejecting naive and unparseable values by name."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            msg = f"input {spec.name!r} row {row!r}: {value!r} is not an ISO-8601 timestamp"
            raise FeatureError(msg, input=spec.name, value=value, row=row) from exc
    if isinstance(value, np.datetime64):
        msg = (
            f"input {spec.name!r} row {row!r}: naive numpy datetime64 {value!r} carries no timezone; "
            "pass an aware datetime or an ISO-8601 string with an offset"
        )
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    if not isinstance(value, dt.datetime):
        kind = type(value).__name__
        msg = f"input {spec.name!r} row {row!r}: expected an aware timestamp, got {kind} {value!r}"
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = (
            f"input {spec.name!r} row {row!r}: naive timestamp {value.isoformat()!r} rejected; "
            "timestamps must carry a timezone (e.g. '+00:00')"
        )
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    try:
        return int(pd.Timestamp(value).tz_convert("UTC").as_unit("ns").value)
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        msg = (
            f"input {spec.name!r} row {row!r}: {value.isoformat()!r} is outside the timestamps this "
            "library computes with (years 1677 to 2262, nanoseconds in UTC)"
        )
        raise FeatureError(msg, input=spec.name, value=value, row=row) from exc


def _coerce_timestamp(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        try:
            utc_ns = series.dt.tz_convert("UTC").dt.as_unit("ns").dt.tz_localize(None)
            return _utc_series(utc_ns.to_numpy(dtype="datetime64[ns]").view("int64"), series)
        except pd.errors.OutOfBoundsDatetime:
            pass  # a coarser unit holds years nanoseconds cannot: value by value, naming the bad one
    if pd.api.types.is_datetime64_dtype(series.dtype):
        row, value = (series.index[0], series.iloc[0]) if len(series) else (None, None)
        msg = (
            f"input {spec.name!r}: naive timestamps rejected (column dtype {series.dtype}, "
            f"first value {value!r} at row {row!r}); localise them to their real timezone first"
        )
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    values = np.full(len(series), _NAT_NS, dtype="int64")
    for position, (row, value) in enumerate(series.items()):
        if not _is_null(value):
            values[position] = _to_utc_ns(value, spec, row)
    return _utc_series(values, series)


#: numpy's NaT as int64 nanoseconds.
_NAT_NS = np.iinfo("int64").min


def _utc_series(values_ns: np.ndarray[Any, np.dtype[np.int64]], like: pd.Series[Any]) -> pd.Series[Any]:
    """UTC nanoseconds (NaT as int64 min) → a ``datetime64[ns, UTC]`` series shaped like ``like``."""
    index = pd.DatetimeIndex(values_ns.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(index, index=like.index, name=like.name)


def _coerce_timestamp_list(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    out: list[Any] = []
    for row, value in series.items():
        if _is_null(value):
            out.append(None)
            continue
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            msg = (
                f"input {spec.name!r} row {row!r}: expected a list of aware timestamps, "
                f"got {type(value).__name__}"
            )
            raise FeatureError(msg, input=spec.name, value=value, row=row)
        if isinstance(value, np.ndarray) and value.ndim != 1:
            # A 0-d array is a lone value, not a history, and iterating it raises a bare TypeError; a
            # 2-d one would iterate rows, not timestamps. Either way the caller sent the wrong shape.
            msg = (
                f"input {spec.name!r} row {row!r}: expected a one-dimensional list of aware timestamps, "
                f"got a {value.ndim}-d array {value!r}"
            )
            raise FeatureError(msg, input=spec.name, value=value, row=row)
        out.append(np.array([_to_utc_ns(item, spec, row) for item in value], dtype="int64"))
    return pd.Series(out, index=series.index, name=series.name, dtype=object)


def _coerce_number(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        msg = f"input {spec.name!r}: expected a number, got a boolean column"
        raise FeatureError(msg, input=spec.name)
    if pd.api.types.is_numeric_dtype(dtype):
        out = series.astype("float64")
    else:
        objects = series.astype(object)
        wrong = objects.map(lambda v: isinstance(v, str | bool | bytes | np.bool_)).to_numpy(dtype=bool)
        if wrong.any():
            row, value = _first_bad(objects, wrong)
            msg = f"input {spec.name!r} row {row!r}: expected a number, got {type(value).__name__} {value!r}"
            raise FeatureError(msg, input=spec.name, value=value, row=row)
        try:
            out = pd.to_numeric(objects.map(lambda v: np.nan if _is_null(v) else v)).astype("float64")
        except (TypeError, ValueError) as exc:
            msg = f"input {spec.name!r}: expected numbers, {exc}"
            raise FeatureError(msg, input=spec.name) from exc
    if spec.type is InputType.INT:
        values = out.to_numpy()
        fractional = ~np.isnan(values) & (values != np.floor(values))
        if fractional.any():
            row, value = _first_bad(out, fractional)
            msg = f"input {spec.name!r} row {row!r}: expected a whole number, got {value!r}"
            raise FeatureError(msg, input=spec.name, value=value, row=row)
    return out


def _coerce_string(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    objects = series.astype(object)
    nulls = objects.map(_is_null).to_numpy(dtype=bool)
    wrong = ~nulls & ~objects.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if wrong.any():
        row, value = _first_bad(objects, wrong)
        msg = f"input {spec.name!r} row {row!r}: expected a string, got {type(value).__name__} {value!r}"
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    return _null_to_none(objects, nulls)


def _coerce_bool(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    objects = series.astype(object)
    nulls = objects.map(_is_null).to_numpy(dtype=bool)
    wrong = ~nulls & ~objects.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    if wrong.any():
        row, value = _first_bad(objects, wrong)
        msg = f"input {spec.name!r} row {row!r}: expected true/false, got {type(value).__name__} {value!r}"
        raise FeatureError(msg, input=spec.name, value=value, row=row)
    return _null_to_none(objects, nulls).astype("boolean")


def _coerce_timezone(series: pd.Series[Any], spec: RawInput) -> pd.Series[Any]:
    out = _coerce_string(series, spec)
    for name in out.dropna().unique():
        try:
            ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            row = out.index[int(np.flatnonzero((out == name).to_numpy())[0])]
            msg = f"input {spec.name!r} row {row!r}: {name!r} is not an IANA timezone name"
            raise FeatureError(msg, input=spec.name, value=name, row=row) from exc
    return out


_COERCERS = {
    InputType.FLOAT: _coerce_number,
    InputType.INT: _coerce_number,
    InputType.STRING: _coerce_string,
    InputType.BOOL: _coerce_bool,
    InputType.TIMESTAMP: _coerce_timestamp,
    InputType.TIMEZONE: _coerce_timezone,
    InputType.TIMESTAMP_LIST: _coerce_timestamp_list,
}


class InputColumns(Mapping[str, "pd.Series[Any]"]):
    """Read-only view of the coerced raw-input columns a feature declared, and nothing else.

    Feature computations receive this instead of a DataFrame: selecting a sub-frame per feature costs
    more than most computations do on a one-row serving request, and restricting the view to declared
    inputs means a feature cannot silently read an input the serving log does not carry.
    """

    __slots__ = ("_columns", "_owner", "index")

    def __init__(self, columns: Mapping[str, pd.Series[Any]], index: pd.Index[Any], owner: str = "") -> None:
        self._columns = columns
        self._owner = owner
        self.index = index

    def __getitem__(self, name: str) -> pd.Series[Any]:
        try:
            return self._columns[name]
        except KeyError:
            msg = f"feature {self._owner!r} read raw input {name!r} it does not declare"
            raise FeatureError(msg, feature=self._owner or None, input=name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def select(self, names: Sequence[str], owner: str) -> InputColumns:
        """The view restricted to ``names`` (a feature's declared inputs)."""
        return InputColumns({name: self._columns[name] for name in names}, self.index, owner)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame of the columns (for callers that want one; not used on the hot path)."""
        return pd.DataFrame(dict(self._columns), index=self.index)


def coerce_columns(
    raw: Mapping[str, pd.Series[Any]], index: pd.Index[Any], inputs: Sequence[RawInput]
) -> InputColumns:
    """Coerce each declared input column to its canonical dtype (see ``coerce_inputs``)."""
    missing = [spec.name for spec in inputs if spec.name not in raw]
    if missing:
        msg = f"missing raw input(s) {missing}; present: {sorted(map(str, raw))}"
        raise FeatureError(msg, input=missing[0])
    columns: dict[str, pd.Series[Any]] = {}
    for spec in inputs:
        original = raw[spec.name]
        series = _COERCERS[spec.type](original, spec)
        if not spec.nullable:
            nulls = series.isna().to_numpy(dtype=bool)
            if nulls.any():
                row, value = _first_bad(original, nulls)
                msg = f"input {spec.name!r} row {row!r}: null value {value!r} in a non-nullable input"
                raise FeatureError(msg, input=spec.name, value=value, row=row)
        columns[spec.name] = series
    return InputColumns(columns, index)


def coerce_inputs(raw: pd.DataFrame, inputs: Sequence[RawInput]) -> pd.DataFrame:
    """Return a frame holding exactly ``inputs``, each in its canonical dtype.

    Raises ``FeatureError`` naming the input (and the row and value) for a missing column, a value of
    the wrong type, a naive timestamp, or a null in a non-nullable input.
    """
    columns = {str(name): raw[name] for name in raw.columns}
    return coerce_columns(columns, raw.index, inputs).to_frame()
