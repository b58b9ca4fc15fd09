"""Declare a feature once; compute it identically for a training frame and a serving request.

A ``Feature`` is a name, a kind, a domain, the raw inputs it reads and one vectorised function
``compute(frame, params) -> Series``. ``FeatureSet.transform_frame`` runs that function on a whole frame;
``FeatureSet.transform_record`` turns one request into a one-row frame and runs the *same* function.
There is no second implementation to drift apart, so training/serving parity holds by construction (and
the property tests in ``tests/features`` check it anyway).

Some features need values fitted on training data (an imputation median, a category vocabulary, scaling
constants). ``FeatureSet.fit`` computes them into a ``FeatureState``: plain JSON with a stable content
hash. Serving logs carry that hash, so the monitor knows exactly which fitted values produced a request's
features and can recompute them to detect implementation skew.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from features.errors import FeatureError
from features.inputs import InputColumns, RawInput, coerce_columns

#: Category a vocabulary maps unseen values to under ``UnknownCategory.OTHER``.
OTHER_CATEGORY = "__other__"

JSONValue = Any
Params = Mapping[str, JSONValue]
ComputeFn = Callable[[InputColumns, Params], "pd.Series[Any] | np.ndarray[Any, Any]"]
FitFn = Callable[[InputColumns], dict[str, JSONValue]]


class FeatureKind(StrEnum):
    """What a feature's values are; decides its output dtype, its expectations and its drift statistics."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class UnknownCategory(StrEnum):
    """What a categorical feature does with a value outside its vocabulary."""

    OTHER = "other"
    """Map it to ``__other__`` (the monitor's unseen-category statistic still sees the raw input)."""
    STRICT = "strict"
    """Raise ``FeatureError`` naming the feature and the value."""


_OUTPUT_DTYPE = {
    FeatureKind.NUMERIC: "float64",
    FeatureKind.CATEGORICAL: object,
    FeatureKind.BOOLEAN: "boolean",
}


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature, declared once and imported by training and serving code alike.

    ``low``/``high`` (numeric) and ``categories`` (categorical, when fixed at declaration) form the
    domain that validation and out-of-domain statistics check. A categorical feature with a fitted
    vocabulary instead stores it in its params under ``"vocabulary"``. ``group`` and ``default`` serve
    the online path: a feature group that cannot be fetched in time falls back to these defaults, and the
    serving log names the defaulted features.
    """

    name: str
    kind: FeatureKind
    inputs: tuple[str, ...]
    compute: ComputeFn
    fit: FitFn | None = None
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] | None = None
    unknown: UnknownCategory = UnknownCategory.OTHER
    group: str = "default"
    default: JSONValue = None
    description: str = ""

    @property
    def dtype(self) -> Any:
        """The output column dtype: float64, object (str) or nullable boolean."""
        return _OUTPUT_DTYPE[self.kind]


def _canonical_json(payload: JSONValue) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


@dataclass(frozen=True)
class FeatureState:
    """The fitted values of a feature set: JSON-serialisable, content-hashed, immutable.

    The hash covers the feature set's name, its feature names and kinds, and every fitted value, so the
    same fit gives the same hash in any process, and any change of a fitted value gives a new one.
    """

    feature_set: str
    features: tuple[tuple[str, str], ...]
    params: Mapping[str, Mapping[str, JSONValue]] = field(default_factory=dict)

    def _payload(self) -> dict[str, JSONValue]:
        return {
            "feature_set": self.feature_set,
            "features": [list(item) for item in self.features],
            "params": {name: dict(values) for name, values in self.params.items()},
        }

    @property
    def content_hash(self) -> str:
        """Hex SHA-256 of the canonical JSON: stable across processes, Python versions and platforms."""
        return hashlib.sha256(_canonical_json(self._payload()).encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON (sorted keys; floats in shortest round-trip form, so loading is lossless)."""
        return _canonical_json(self._payload() | {"content_hash": self.content_hash})

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureState:
        """Load a state and verify its stored hash, so a hand-edited state file cannot pass unnoticed."""
        try:
            payload = json.loads(text)
            state = cls(
                feature_set=str(payload["feature_set"]),
                features=tuple((str(name), str(kind)) for name, kind in payload["features"]),
                params={str(k): dict(v) for k, v in payload["params"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"not a FeatureState document: {exc}"
            raise FeatureError(msg) from exc
        # The hash is required, not optional: if a missing one were accepted, deleting it would be the
        # way to get an edited fitted value past this check. Every writer (``to_json``) includes it.
        if "content_hash" not in payload:
            msg = (
                "not a FeatureState document: key 'content_hash' is missing; expected the hex SHA-256 "
                "that FeatureState.to_json writes, so the fitted values can be verified"
            )
            raise FeatureError(msg)
        stored = payload["content_hash"]
        if stored != state.content_hash:
            msg = (
                f"FeatureState content hash mismatch: file says {stored}, "
                f"content hashes to {state.content_hash}"
            )
            raise FeatureError(msg, value=stored)
        return state


def _cast_present(series: pd.Series[Any], cast: Callable[[Any], Any]) -> pd.Series[Any]:
    """``cast`` of each present cell, None for each null (None, pd.NA, NaN, NaT), as an object Series.

    Nulls are found first, by ``isna`` over the whole column (a cell holding a list counts as a
    value): ``bool(nan)`` is True and ``str(nan)`` is the category "nan", which would slip a made-up
    value past the nullability check and the vocabulary. Casting only the present cells, in one
    comprehension, costs a fraction of a per-cell ``map`` that tests each cell for null itself.
    """
    values = series.astype(object)
    cells = values.to_numpy()
    present = ~values.isna().to_numpy(dtype=bool)
    out = np.full(len(cells), None, dtype=object)
    out[present] = [cast(value) for value in cells[present]]
    return pd.Series(out, index=values.index, dtype=object)


def _python_value(value: Any, kind: FeatureKind) -> JSONValue:
    """One output cell as the plain Python value a serving record carries (null → None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind is FeatureKind.NUMERIC:
        return float(value)
    if kind is FeatureKind.BOOLEAN:
        return bool(value)
    return str(value)


class FeatureSet:
    """A named group of features over declared raw inputs: the unit that is fitted, hashed and served."""

    def __init__(self, name: str, inputs: Iterable[RawInput], features: Iterable[Feature] = ()) -> None:
        self.name = name
        self.inputs: dict[str, RawInput] = {}
        for spec in inputs:
            if spec.name in self.inputs:
                msg = f"feature set {name!r}: raw input {spec.name!r} declared twice"
                raise FeatureError(msg, input=spec.name)
            self.inputs[spec.name] = spec
        self.features: dict[str, Feature] = {}
        for feature in features:
            self.add(feature)

    def add(self, feature: Feature) -> Feature:
        """Register a feature, checking its name is unique and every input it reads is declared."""
        if feature.name in self.features:
            msg = f"feature set {self.name!r}: feature {feature.name!r} declared twice"
            raise FeatureError(msg, feature=feature.name)
        undeclared = [name for name in feature.inputs if name not in self.inputs]
        if undeclared:
            msg = f"feature {feature.name!r} reads undeclared raw input(s) {undeclared}"
            raise FeatureError(msg, feature=feature.name, input=undeclared[0])
        self.features[feature.name] = feature
        return feature

    def feature(
        self,
        *,
        kind: FeatureKind,
        inputs: Sequence[str],
        fit: FitFn | None = None,
        **options: Any,
    ) -> Callable[[ComputeFn], Feature]:
        """Decorator form of ``add``: the decorated function is the feature's computation, named after it."""

        def register(compute: ComputeFn) -> Feature:
            return self.add(
                Feature(
                    name=compute.__name__,
                    kind=kind,
                    inputs=tuple(inputs),
                    compute=compute,
                    fit=fit,
                    description=(compute.__doc__ or "").strip().split("\n")[0],
                    **options,
                )
            )

        return register

    # -- fitting -------------------------------------------------------------------------------------

    def _signature(self) -> tuple[tuple[str, str], ...]:
        return tuple((f.name, f.kind.value) for f in self.features.values())

    def fit(self, train_raw: pd.DataFrame) -> FeatureState:
        """Compute every feature's fitted values from raw training data."""
        if len(train_raw) == 0:
            msg = f"feature set {self.name!r}: cannot fit on an empty frame"
            raise FeatureError(msg)
        frame = self._coerce_frame(train_raw)
        params: dict[str, dict[str, JSONValue]] = {}
        for feature in self.features.values():
            if feature.fit is None:
                continue
            try:
                fitted = feature.fit(frame.select(feature.inputs, feature.name))
            except FeatureError:
                raise
            except Exception as exc:
                msg = f"feature {feature.name!r}: fitting failed: {exc}"
                raise FeatureError(msg, feature=feature.name) from exc
            try:
                _canonical_json(fitted)
            except (TypeError, ValueError) as exc:
                msg = (
                    f"feature {feature.name!r}: fitted values must be finite JSON values ({exc}): {fitted!r}"
                )
                raise FeatureError(msg, feature=feature.name, value=fitted) from exc
            params[feature.name] = fitted
        return FeatureState(self.name, self._signature(), params)

    def _check_state(self, state: FeatureState) -> None:
        if state.feature_set != self.name or state.features != self._signature():
            msg = (
                f"FeatureState {state.content_hash[:12]} was fitted for {state.feature_set!r} with features "
                f"{[n for n, _ in state.features]}, not for feature set {self.name!r} with "
                f"{list(self.features)}"
            )
            raise FeatureError(msg, value=state.content_hash)
        unfitted = [
            f.name for f in self.features.values() if f.fit is not None and f.name not in state.params
        ]
        if unfitted:
            msg = f"FeatureState {state.content_hash[:12]} has no fitted values for feature(s) {unfitted}"
            raise FeatureError(msg, feature=unfitted[0])

    # -- transforming --------------------------------------------------------------------------------

    def _coerce_frame(self, raw: pd.DataFrame) -> InputColumns:
        columns = {str(name): raw[name] for name in raw.columns}
        return coerce_columns(columns, raw.index, list(self.inputs.values()))

    def _compute(self, frame: InputColumns, state: FeatureState) -> dict[str, pd.Series[Any]]:
        """Run every feature's computation on coerced inputs: the one code path both transforms share."""
        columns: dict[str, pd.Series[Any]] = {}
        n_rows = len(frame.index)
        for name, feature in self.features.items():
            params = state.params.get(name, {})
            try:
                result = feature.compute(frame.select(feature.inputs, name), params)
            except FeatureError:
                raise
            except Exception as exc:
                msg = f"feature {name!r}: computation failed: {type(exc).__name__}: {exc}"
                raise FeatureError(msg, feature=name) from exc
            if len(result) != n_rows:
                msg = f"feature {name!r}: computation returned {len(result)} values for {n_rows} rows"
                raise FeatureError(msg, feature=name)
            series = result if isinstance(result, pd.Series) else pd.Series(np.asarray(result))
            series = series.set_axis(frame.index).rename(name)
            columns[name] = self._finish(feature, series, params)
        return columns

    @staticmethod
    def _finish(feature: Feature, series: pd.Series[Any], params: Params) -> pd.Series[Any]:
        """Cast to the declared dtype and enforce nullability and the unknown-category policy."""
        out: pd.Series[Any]
        if feature.kind is FeatureKind.NUMERIC:
            if pd.api.types.is_numeric_dtype(series.dtype):
                out = series.astype("float64")
            else:
                out = pd.to_numeric(series.astype(object).where(series.notna(), np.nan)).astype("float64")
        elif feature.kind is FeatureKind.BOOLEAN:
            if pd.api.types.is_bool_dtype(series.dtype):
                out = series.astype("boolean")
            else:
                # Nulls first: ``bool(nan)`` is True, so a float NaN would become a real True and slip past
                # the nullability check below (``np.where(cond, np.nan, ...)`` gives exactly such NaNs).
                out = _cast_present(series, bool).astype("boolean")
        else:
            if pd.api.types.is_string_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
                out = series.astype(object)
            else:
                # Nulls first: ``str(nan)`` is the category "nan" (and ``str(NaT)`` is "NaT"), which would
                # pass the nullability check and the vocabulary as if it were a real value.
                out = _cast_present(series, str)
            out[out.isna().to_numpy(dtype=bool)] = None
            vocabulary = params.get("vocabulary", feature.categories)
            if vocabulary is not None:
                known = out.isin(list(vocabulary)).to_numpy(dtype=bool) | out.isna().to_numpy(dtype=bool)
                if not known.all():
                    if feature.unknown is UnknownCategory.STRICT:
                        position = int(np.flatnonzero(~known)[0])
                        row, value = out.index[position], out.iloc[position]
                        msg = (
                            f"feature {feature.name!r} row {row!r}: unknown category {value!r} "
                            f"(strict policy; known: {sorted(vocabulary)[:20]})"
                        )
                        raise FeatureError(msg, feature=feature.name, value=value, row=row)
                    out = out.where(known, OTHER_CATEGORY)
        if not feature.nullable:
            nulls = out.isna().to_numpy(dtype=bool)
            if nulls.any():
                row = out.index[int(np.flatnonzero(nulls)[0])]
                msg = f"feature {feature.name!r} row {row!r}: computed a null but the feature is not nullable"
                raise FeatureError(msg, feature=feature.name, row=row)
        return out

    def transform_frame(self, raw: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
        """Compute every feature for a frame of raw inputs (training, batch scoring, skew replay)."""
        self._check_state(state)
        return pd.DataFrame(self._compute(self._coerce_frame(raw), state), index=raw.index)

    def transform_record(self, raw: Mapping[str, JSONValue], state: FeatureState) -> dict[str, JSONValue]:
        """Compute every feature for one serving request, through the very code ``transform_frame`` runs.

        The request becomes one-row columns (each value wrapped as a single object, so a click history
        list stays one cell), is coerced by the same function, and computed by the same computations.
        """
        if not isinstance(raw, Mapping):
            msg = f"transform_record expects a mapping of raw inputs, got {type(raw).__name__}"
            raise FeatureError(msg, value=raw)
        self._check_state(state)
        index = pd.RangeIndex(1)
        cells: dict[str, pd.Series[Any]] = {}
        for name, value in raw.items():
            # Fill a one-slot object array by element assignment, which stores the value as-is. Building
            # the Series from ``[value]`` or assigning through ``.iloc`` lets pandas unpack a one-element
            # array into a 0-d array, so the record path would see a different cell than the frame path.
            holder = np.empty(1, dtype=object)
            holder[0] = value
            cells[str(name)] = pd.Series(holder, index=index, dtype=object)
        columns = self._compute(coerce_columns(cells, index, list(self.inputs.values())), state)
        return {
            name: _python_value(columns[name].iloc[0], self.features[name].kind) for name in self.features
        }

    def row_values(self, features: pd.DataFrame, position: int) -> dict[str, JSONValue]:
        """Row ``position`` of a computed-feature frame as plain Python values (null → ``None``)."""
        return {
            name: _python_value(features[name].iloc[position], self.features[name].kind)
            for name in self.features
        }

    # -- serving helpers -----------------------------------------------------------------------------

    def groups(self) -> dict[str, list[Feature]]:
        """Features by serving group (a unit fetched together, with one deadline)."""
        out: dict[str, list[Feature]] = {}
        for feature in self.features.values():
            out.setdefault(feature.group, []).append(feature)
        return out

    def group_defaults(self) -> dict[str, dict[str, JSONValue]]:
        """Declared fallback values per group, for a group that errors or misses its deadline."""
        return {group: {f.name: f.default for f in members} for group, members in self.groups().items()}
