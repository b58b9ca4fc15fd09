"""The fitted encoder: standardised numerics, fixed one-hot order, exact JSON round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import OTHER_CATEGORY, FeatureState
from features.ctr import CTR_FEATURES, DEVICES
from skewguard.errors import DataError
from skewguard.pipeline import FeatureEncoder


@pytest.fixture(scope="module")
def fitted(demo_raw: pd.DataFrame) -> tuple[FeatureEncoder, FeatureState, pd.DataFrame]:
    train = demo_raw.head(2500)
    state = CTR_FEATURES.fit(train)
    features = CTR_FEATURES.transform_frame(train, state)
    return FeatureEncoder.fit(features, CTR_FEATURES, state), state, features


def test_numeric_columns_are_standardised_with_training_mean_and_std(
    fitted: tuple[FeatureEncoder, FeatureState, pd.DataFrame],
) -> None:
    encoder, _, features = fitted
    matrix = encoder.transform(features)
    names = encoder.output_names
    for column in ("clicks_7d", "log_price", "ad_position"):
        values = matrix[:, names.index(column)].astype("float64")
        expected = (features[column] - features[column].mean()) / features[column].std(ddof=0)
        assert np.allclose(values, expected.to_numpy(), atol=1e-5)


def test_categories_are_one_hot_in_the_state_vocabulary_order(
    fitted: tuple[FeatureEncoder, FeatureState, pd.DataFrame],
) -> None:
    encoder, state, features = fitted
    matrix = encoder.transform(features)
    names = encoder.output_names
    vocabulary = state.params["category"]["vocabulary"]
    category_columns = [names.index(f"category={v}") for v in vocabulary]
    assert category_columns == list(range(category_columns[0], category_columns[0] + len(vocabulary)))
    block = matrix[:, category_columns]
    assert np.array_equal(block.sum(axis=1), np.ones(len(features)))
    chosen = np.asarray(vocabulary, dtype=object)[block.argmax(axis=1)]
    assert np.array_equal(chosen, features["category"].to_numpy(dtype=object))
    device_columns = [names.index(f"device={d}") for d in DEVICES]
    assert np.array_equal(matrix[:, device_columns].sum(axis=1), np.ones(len(features)))
    assert encoder.width == matrix.shape[1] == len(names)


def test_a_value_outside_the_category_list_encodes_as_all_zeros(
    fitted: tuple[FeatureEncoder, FeatureState, pd.DataFrame],
) -> None:
    encoder, _, features = fitted
    odd = features.head(3).copy()
    odd["category"] = ["never-seen", OTHER_CATEGORY, "never-seen"]
    matrix = encoder.transform(odd)
    names = encoder.output_names
    block = matrix[:, [i for i, n in enumerate(names) if n.startswith("category=")]]
    assert block.sum(axis=1).tolist() == [0.0, 1.0, 0.0]


def test_json_round_trip_gives_the_same_matrix(
    fitted: tuple[FeatureEncoder, FeatureState, pd.DataFrame],
) -> None:
    encoder, state, features = fitted
    loaded = FeatureEncoder.from_json(encoder.to_json())
    assert loaded == encoder
    assert loaded.feature_state_hash == state.content_hash
    assert np.array_equal(loaded.transform(features), encoder.transform(features))


def test_missing_feature_column_and_malformed_document_are_data_errors(
    fitted: tuple[FeatureEncoder, FeatureState, pd.DataFrame],
) -> None:
    encoder, _, features = fitted
    with pytest.raises(DataError, match="clicks_24h"):
        encoder.transform(features.drop(columns=["clicks_24h"]))
    with pytest.raises(DataError, match="feature encoder"):
        FeatureEncoder.from_json('{"format": "skewguard.encoder/1", "columns": []}')
