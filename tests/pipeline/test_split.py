"""The id-hashed split: a null id, which would turn integer ids into floats and move every row, is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skewguard.errors import DataError
from skewguard.pipeline import RetrainConfig, retrain


def numbered(raw: pd.DataFrame, dtype: str) -> pd.DataFrame:
    frame = raw.copy()
    frame["request_id"] = np.arange(100, 100 + len(frame)).astype(dtype)
    return frame


def test_a_null_id_is_a_data_error_naming_the_column_and_the_row(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    raw = numbered(demo_raw, "int64")
    raw["request_id"] = raw["request_id"].where(raw.index != 7)  # one null: the column becomes float64
    with pytest.raises(
        DataError, match=r"'data\.id_column' = 'request_id': 1 row\(s\) have no id \(first: row 7"
    ):
        retrain(RetrainConfig.from_file(make_config()), raw=raw)
