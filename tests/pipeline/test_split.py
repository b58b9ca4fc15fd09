"""The id-hashed split: a row's split depends on its id's value, never on the id column's dtype."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewguard.errors import DataError
from skewguard.pipeline import RetrainConfig, retrain
from skewguard.pipeline.retrain import canonical_ids


def numbered(raw: pd.DataFrame, dtype: str) -> pd.DataFrame:
    frame = raw.copy()
    frame["request_id"] = np.arange(100, 100 + len(frame)).astype(dtype)
    return frame


def test_int_and_float_ids_of_the_same_values_give_the_same_split_and_model(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    config = RetrainConfig.from_file(
        make_config(training={"max_epochs": 1}, evaluation={"compare_with_production": False})
    )
    as_int = retrain(config, raw=numbered(demo_raw, "int64"))
    as_float = retrain(config, raw=numbered(demo_raw, "float64"))
    assert as_int.rows == as_float.rows
    # The same rows in every split train the same weights: the holdout metrics agree to the bit.
    assert as_int.comparison.candidate == as_float.comparison.candidate


def test_canonical_ids_write_integral_floats_as_integers_and_leave_other_ids_as_they_were() -> None:
    assert canonical_ids(pd.Series([101.0, 102.5, -3.0, 2.0**70])).tolist() == [
        "101",
        "102.5",
        "-3",
        str(2**70),
    ]
    assert canonical_ids(pd.Series([101, 102], dtype="int64")).tolist() == ["101", "102"]
    assert canonical_ids(pd.Series([101, 7.0, "req-1"], dtype=object)).tolist() == ["101", "7", "req-1"]
    # Ids that were never floats hash exactly as before the canonical form existed.
    strings = pd.Series(["req-5-0", "req-5-1"])
    assert canonical_ids(strings).tolist() == strings.astype(str).tolist()


def test_a_null_id_is_a_data_error_naming_the_column_and_the_row(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    raw = numbered(demo_raw, "int64")
    raw["request_id"] = raw["request_id"].where(raw.index != 7)  # one null: the column becomes float64
    with pytest.raises(
        DataError, match=r"'data\.id_column' = 'request_id': 1 row\(s\) have no id \(first: row 7"
    ):
        retrain(RetrainConfig.from_file(make_config()), raw=raw)
