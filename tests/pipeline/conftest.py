"""Shared fixtures: small demo data on disk and a config writer (runs stay a few seconds each)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from skewguard.demo.traffic import generate_requests
from tests.pipeline.helpers import config_tables, write_toml

ROWS = 4000


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def demo_raw() -> pd.DataFrame:
    return generate_requests(
        ROWS, seed=5, start=dt.datetime(2026, 3, 2, tzinfo=dt.UTC), span=dt.timedelta(days=7)
    )


@pytest.fixture(scope="session")
def demo_parquet(demo_raw: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    demo_raw.to_parquet(path, index=False)
    return path


@pytest.fixture
def make_config(demo_parquet: Path, tmp_path: Path) -> Callable[..., Path]:
    """``make_config(section={key: value}, ...)`` → a config file in tmp_path, tables updated."""

    def make(data_file: Path | None = None, **updates: Any) -> Path:
        tables = config_tables(data_file or demo_parquet, tmp_path / "models")
        for name, value in updates.items():
            if isinstance(value, dict) and isinstance(tables.get(name), dict):
                tables[name] = {**tables[name], **value}
            else:
                tables[name] = value
        return write_toml(tmp_path / "retrain.toml", tables)

    return make
