"""Computed features → the float matrix a model reads, fitted on training data and stored as JSON.

The feature library stops at typed columns (numbers, categories, booleans); a network needs one float
tensor. The step between the two is itself a place for training/serving skew (a different category
order, a scaler refitted on serving data), so it is fitted once, on the training rows, and written
next to the weights as ``encoder.json``. Serving rebuilds the exact same tensor from that file:

* numeric features: ``(x - mean) / std`` with the training mean and standard deviation; a null
  (only for nullable features) becomes 0, the training mean;
* boolean features: 1.0 / 0.0 (null → 0.0);
* categorical features: one-hot over a fixed category list, the FeatureState vocabulary when the
  feature has one, else its declared categories, else the sorted training values. A value outside
  the list (only possible when the feature does not map unknowns itself) is an all-zero row.

No torch here: the encoder is plain numpy so a serving process can encode without the model.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features import FeatureKind, FeatureSet, FeatureState
from skewguard.errors import DataError

ENCODER_FORMAT = "skewguard.encoder/1"


class NumericColumn(BaseModel):
    """A standardised numeric feature: one output column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["numeric"] = "numeric"
    name: str
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)

    @property
    def width(self) -> int:
        """Output columns this feature occupies."""
        return 1


class BooleanColumn(BaseModel):
    """A boolean feature as 0/1: one output column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["boolean"] = "boolean"
    name: str

    @property
    def width(self) -> int:
        """Output columns this feature occupies."""
        return 1


class CategoricalColumn(BaseModel):
    """A one-hot categorical feature: one output column per category, in this fixed order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["categorical"] = "categorical"
    name: str
    categories: list[str] = Field(min_length=1)

    @property
    def width(self) -> int:
        """Output columns this feature occupies."""
        return len(self.categories)


EncodedColumn = Annotated[NumericColumn | BooleanColumn | CategoricalColumn, Field(discriminator="kind")]


class FeatureEncoder(BaseModel):
    """The fitted feature → tensor mapping; ``to_json``/``from_json`` round-trip it exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["skewguard.encoder/1"] = "skewguard.encoder/1"
    feature_set: str
    feature_state_hash: str
    columns: list[EncodedColumn] = Field(min_length=1)

    @property
    def width(self) -> int:
        """Width of the encoded matrix: the model's input dimension."""
        return sum(column.width for column in self.columns)

    @property
    def output_names(self) -> list[str]:
        """A name per encoded column (``feature`` or ``feature=category``), for inspection."""
        names: list[str] = []
        for column in self.columns:
            if isinstance(column, CategoricalColumn):
                names.extend(f"{column.name}={category}" for category in column.categories)
            else:
                names.append(column.name)
        return names

    @classmethod
    def fit(cls, features: pd.DataFrame, feature_set: FeatureSet, state: FeatureState) -> FeatureEncoder:
        """Fit on the computed training features (``feature_set.transform_frame(train_raw, state)``)."""
        if features.empty:
            msg = "cannot fit the feature encoder on an empty frame"
            raise DataError(msg)
        _require_columns(features, feature_set)
        columns: list[NumericColumn | BooleanColumn | CategoricalColumn] = []
        for name, feature in feature_set.features.items():
            series = features[name]
            if feature.kind is FeatureKind.NUMERIC:
                values = series.to_numpy(dtype="float64", na_value=np.nan)
                observed = values[~np.isnan(values)]
                mean = float(observed.mean()) if observed.size else 0.0
                std = float(observed.std()) if observed.size else 0.0
                if not (math.isfinite(mean) and math.isfinite(std)):
                    msg = f"feature {name!r}: non-finite values in the training features (mean {mean})"
                    raise DataError(msg)
                columns.append(NumericColumn(name=name, mean=mean, std=std if std > 0 else 1.0))
            elif feature.kind is FeatureKind.BOOLEAN:
                columns.append(BooleanColumn(name=name))
            else:
                vocabulary: Any = state.params.get(name, {}).get("vocabulary", feature.categories)
                if vocabulary is None:
                    vocabulary = sorted(str(v) for v in series.dropna().unique())
                if not vocabulary:
                    msg = f"feature {name!r}: no categories to encode (no vocabulary, none declared or seen)"
                    raise DataError(msg)
                columns.append(CategoricalColumn(name=name, categories=[str(v) for v in vocabulary]))
        return cls(feature_set=feature_set.name, feature_state_hash=state.content_hash, columns=columns)

    def transform(self, features: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Encode computed features into an ``(n_rows, width)`` float32 matrix."""
        missing = [c.name for c in self.columns if c.name not in features.columns]
        if missing:
            msg = f"the feature frame lacks column(s) {missing} that the encoder was fitted on"
            raise DataError(msg)
        n_rows = len(features)
        out = np.zeros((n_rows, self.width), dtype=np.float32)
        position = 0
        for column in self.columns:
            series = features[column.name]
            if isinstance(column, NumericColumn):
                values = series.to_numpy(dtype="float64", na_value=np.nan)
                scaled = (values - column.mean) / column.std
                out[:, position] = np.where(np.isnan(scaled), 0.0, scaled)
            elif isinstance(column, BooleanColumn):
                out[:, position] = series.astype("boolean").fillna(False).to_numpy(dtype="float64")
            else:
                codes = pd.Categorical(series.astype(object), categories=column.categories).codes
                known = codes >= 0
                out[np.flatnonzero(known), position + codes[known]] = 1.0
            position += column.width
        return out

    def to_json(self) -> str:
        """The ``encoder.json`` document."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureEncoder:
        """Parse ``encoder.json``; a malformed or edited document is a DataError naming the problem."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            msg = f"not a feature encoder document ({ENCODER_FORMAT}): {exc.errors()[0]['msg']}"
            raise DataError(msg) from exc


def _require_columns(features: pd.DataFrame, feature_set: FeatureSet) -> None:
    missing = [name for name in feature_set.features if name not in features.columns]
    if missing:
        msg = f"the feature frame lacks feature(s) {missing} of feature set {feature_set.name!r}"
        raise DataError(msg)
