"""Stages that stop the run: a seeded-bug model at the gate, bad raw data at validation, a worse
candidate at evaluation, and configuration errors, each with its exit code and no model directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skewguard.cli import EXIT_FINDING, EXIT_USAGE, app
from skewguard.errors import ConfigError
from skewguard.gate import CheckName
from skewguard.pipeline import (
    GateStopped,
    HoldoutStopped,
    RetrainConfig,
    RetrainStopped,
    Stage,
    ValidationStopped,
    retrain,
)


def run_cli(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["retrain", "--config", str(config)])
    return result.exit_code, result.output


def no_model_written(config: Path) -> bool:
    model_root = config.parent / "models" / "ctr"
    return not model_root.exists() or not any(
        p.name.startswith(("v", ".staging")) for p in model_root.iterdir()
    )


def test_seeded_bug_factory_stops_at_the_gate_with_the_check_and_diagnosis(
    make_config: Callable[..., Path],
) -> None:
    config = make_config(model={"factory": "skewguard.demo.model:build_ctr_model_detached_encoder"})
    code, output = run_cli(config)
    assert code == EXIT_FINDING, output
    assert "stopped at stage 'gate'" in output
    assert "FAIL" in output and "gradient_flow" in output
    assert "diagnosis:" in output and "encoder.0.weight" in output and ".detach()" in output
    assert "no model directory was written" in output
    assert no_model_written(config)


def test_batch_mixing_bug_stops_at_the_gate_naming_batch_independence(
    make_config: Callable[..., Path],
) -> None:
    config = make_config(model={"factory": "skewguard.demo.model:build_ctr_model_batch_mixing"})
    with pytest.raises(GateStopped) as caught:
        retrain(RetrainConfig.from_file(config))
    assert caught.value.stage is Stage.GATE
    failed = {c.name for c in caught.value.report.failed_checks}
    assert CheckName.BATCH_INDEPENDENCE in failed
    assert no_model_written(config)


def test_invalid_raw_data_stops_at_validation_naming_the_columns(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    bad = demo_raw.copy()
    bad.loc[[3, 17], "device"] = "smartwatch"
    bad.loc[[5], "ad_position"] = 0
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    config = make_config(data_file=path)
    code, output = run_cli(config)
    assert code == EXIT_FINDING, output
    assert "stopped at stage 'validate'" in output
    assert "device" in output and "ad_position" in output and "'smartwatch'" in output
    assert no_model_written(config)


def test_bad_labels_are_validation_violations_of_the_label_column(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    bad = demo_raw.copy()
    bad["click"] = bad["click"].astype("float64")
    bad.loc[[1, 2], "click"] = np.nan
    bad.loc[[9], "click"] = 2.0
    with pytest.raises(ValidationStopped) as caught:
        retrain(RetrainConfig.from_file(make_config()), raw=bad)
    violations = caught.value.report.violations
    assert {v.column for v in violations} == {"click"}
    assert sorted(v.unexpected_count or 0 for v in violations) == [1, 2]


def test_a_frame_with_aware_timestamp_dtype_passes_validation_through_the_api(
    demo_raw: pd.DataFrame, make_config: Callable[..., Path]
) -> None:
    # event_time is datetime64[ns, UTC] (as parquet files give it); the suite must not reject the dtype.
    assert isinstance(demo_raw["event_time"].dtype, pd.DatetimeTZDtype)
    config = RetrainConfig.from_file(make_config(training={"max_epochs": 1}))
    result = retrain(config, raw=demo_raw.head(3000), holdout=demo_raw.tail(1000))
    assert result.version == "v1"
    # A given holdout is used as it is; the other rows are split into training and validation only.
    assert result.rows.holdout == 1000
    assert result.rows.train + result.rows.validation == 3000
    assert result.comparison.candidate.rows == 1000


def test_an_unloadable_production_model_is_a_data_error_naming_it(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken-production"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    config = make_config(evaluation={"production_dir": str(broken)}, training={"max_epochs": 1})
    code, output = run_cli(config)
    assert code == EXIT_USAGE, output
    assert "broken-production" in output and "manifest.json" in output
    assert no_model_written(config)


def test_candidate_worse_than_production_stops_when_required(
    make_config: Callable[..., Path],
) -> None:
    retrain(RetrainConfig.from_file(make_config()))  # v1, production
    worse = make_config(
        training={"lr": 1e-5, "max_epochs": 1},
        evaluation={"require_better": True, "metric": "log_loss"},
    )
    code, output = run_cli(worse)
    assert code == EXIT_FINDING, output
    assert "stopped at stage 'evaluate'" in output and "worse than production v1" in output
    versions = sorted(p.name for p in (worse.parent / "models" / "ctr").iterdir() if p.name.startswith("v"))
    assert versions == ["v1"]
    with pytest.raises(HoldoutStopped) as caught:
        retrain(RetrainConfig.from_file(worse))
    comparison = caught.value.comparison
    assert comparison.production is not None
    assert comparison.candidate.log_loss > comparison.production.log_loss


def test_a_run_where_no_epoch_beats_the_initial_weights_stops_at_train_and_registers_nothing(
    make_config: Callable[..., Path],
) -> None:
    # A learning rate too small to change a float32 weight: no epoch lowers the validation loss, so
    # early stopping restores epoch 0, the random initial weights.
    config = make_config(training={"max_epochs": 2, "patience": 1, "lr": 1e-30})
    code, output = run_cli(config)
    assert code == EXIT_FINDING, output
    assert "stopped at stage 'train'" in output
    assert "no epoch improved on the initial weights" in output
    assert no_model_written(config)
    with pytest.raises(RetrainStopped) as caught:
        retrain(RetrainConfig.from_file(config))
    assert caught.value.stage is Stage.TRAIN


@pytest.mark.parametrize(
    ("updates", "key"),
    [
        ({"training": {"patience": 0}}, "training.patience"),
        ({"training": {"epochs": 3}}, "training.epochs"),
        ({"model": {"factory": "no_such_module_xyz:build"}}, "model.factory"),
        ({"model": {"options": {"depth": 3}}}, "model.options"),
        ({"gate": {"batch_size": 5000}}, "gate.batch_size"),
        ({"baseline": {"window_size": 5000}}, "baseline.window_size"),
        ({"data": {"features": "features.ctr"}}, "data.features"),
        ({"data": {"id_column": "no_such_column"}}, "data.id_column"),
    ],
)
def test_config_errors_exit_2_naming_the_key(
    make_config: Callable[..., Path], updates: dict[str, dict[str, object]], key: str
) -> None:
    config = make_config(**updates)
    code, output = run_cli(config)
    assert code == EXIT_USAGE, output
    assert key in output
    assert no_model_written(config)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_a_seed_outside_torch_and_numpys_range_is_a_config_error_naming_seed(
    make_config: Callable[..., Path], seed: int
) -> None:
    # numpy refuses negative seeds and torch.manual_seed a seed beyond a signed 64-bit int: both are
    # refused when the config is read, before any stage runs.
    with pytest.raises(
        ConfigError, match=r"'seed'.*(greater than or equal to 0|less than 9223372036854775808)"
    ):
        RetrainConfig.from_file(make_config(seed=seed))
    assert RetrainConfig.from_file(make_config(seed=2**63 - 1)).seed == 2**63 - 1


def test_missing_required_key_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "retrain.toml"
    config.write_text('model_name = "ctr"\nmodels_dir = "m"\n[model]\nfactory = "a:b"\n')
    with pytest.raises(ConfigError, match="'data'"):
        RetrainConfig.from_file(config)
    code, output = run_cli(tmp_path / "absent.toml")
    assert code == EXIT_USAGE and "not found" in output


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    nested = tmp_path / "deploy"
    nested.mkdir()
    config = nested / "retrain.toml"
    config.write_text(
        'model_name = "ctr"\nmodels_dir = "../models"\n'
        '[data]\nfeatures = "features.ctr:CTR_FEATURES"\nfiles = ["train.parquet"]\nlabel = "click"\n'
        '[model]\nfactory = "skewguard.demo.model:build_ctr_model"\n'
    )
    loaded = RetrainConfig.from_file(config)
    assert loaded.models_dir == (tmp_path / "models").resolve()
    assert loaded.data.files == [(nested / "train.parquet").resolve()]
