"""The gate's one cached batch: only rows a correct model can fit, so the gate judges the model, not
the data (rows with identical encoded inputs and different labels are common in click logs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from skewguard.errors import DataError
from skewguard.pipeline import RetrainConfig, retrain
from skewguard.pipeline.retrain import gate_candidate_rows


def with_conflicting_duplicates(raw: pd.DataFrame, distinct: int, groups: int, copies: int) -> pd.DataFrame:
    """``distinct`` rows of ``raw``, then ``groups`` others repeated ``copies`` times, labels 0,1,0,1..."""
    unique = raw.head(distinct)
    sources = raw.iloc[distinct : distinct + groups]
    repeated = sources.loc[sources.index.repeat(copies)].reset_index(drop=True)
    repeated["request_id"] = [f"dup-{i}" for i in range(len(repeated))]
    repeated["click"] = [i % 2 for i in range(len(repeated))]
    return pd.concat([unique, repeated], ignore_index=True)


def test_gate_candidates_leave_out_conflicting_duplicates_and_keep_consistent_ones_once() -> None:
    inputs = torch.tensor(
        [[0.0, 1.0], [2.0, 3.0], [0.0, 1.0], [4.0, 5.0], [2.0, 3.0], [6.0, 7.0], [4.0, 5.0]]
    )
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    # [0, 1] appears with labels 1 and 0: both rows out. [2, 3] and [4, 5] repeat one label: kept once.
    assert gate_candidate_rows(inputs, targets).tolist() == [1, 3, 5]
    # NaN equals nothing: identical rows holding one are still the same input (both out).
    nan = float("nan")
    with_nan = torch.tensor([[nan, 1.0], [nan, 1.0], [nan, 2.0]])
    assert gate_candidate_rows(with_nan, torch.tensor([0.0, 1.0, 1.0])).tolist() == [2]


def test_a_correct_model_passes_the_gate_on_data_with_conflicting_duplicate_rows(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    # 2000 distinct rows plus 40 rows repeated 50 times with alternating labels: a batch of random
    # training rows almost surely holds two identical inputs with different labels.
    raw = with_conflicting_duplicates(demo_raw, distinct=2000, groups=40, copies=50)
    config = RetrainConfig.from_file(make_config(gate={"batch_size": 32}, training={"max_epochs": 1}))
    result = retrain(config, raw=raw)
    assert result.gate.passed, result.gate.diagnosis
    assert result.version == "v1"


def test_too_few_rows_with_distinct_inputs_is_a_data_error_naming_gate_batch_size(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    # 20 distinct rows (about 14 of them in training) and 80 groups of conflicting duplicates.
    raw = with_conflicting_duplicates(demo_raw, distinct=20, groups=80, copies=50)
    config = RetrainConfig.from_file(make_config(gate={"batch_size": 32}, training={"max_epochs": 1}))
    with pytest.raises(DataError, match=r"gate\.batch_size' = 32: only \d+ of the \d+ training rows"):
        retrain(config, raw=raw)
    assert not (config.models_dir / "ctr").exists() or not any((config.models_dir / "ctr").iterdir())


def test_the_gate_batch_defaults_to_32_rows_the_top_of_the_gates_range(tmp_path: Path) -> None:
    config = tmp_path / "minimal.toml"
    config.write_text(
        'model_name = "ctr"\nmodels_dir = "m"\n'
        '[data]\nfeatures = "features.ctr:CTR_FEATURES"\nlabel = "click"\n'
        '[model]\nfactory = "skewguard.demo.model:build_ctr_model"\n'
    )
    assert RetrainConfig.from_file(config).gate.batch_size == 32
