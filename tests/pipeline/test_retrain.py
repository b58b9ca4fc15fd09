"""A full run on demo data: the versioned directory, its artifacts, safe loading, the registry."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline, PredictionKind
from skewguard.cli import EXIT_OK, app
from skewguard.demo.model import CTRModel, build_ctr_model, load_ctr_scorer
from skewguard.pipeline import (
    FeatureEncoder,
    RetrainConfig,
    RetrainResult,
    Stage,
    VersionStatus,
    retrain,
)
from tests.pipeline.helpers import config_tables, write_toml

ARTIFACTS = (
    "weights.pt",
    "encoder.json",
    "feature_state.json",
    "gate_report.json",
    "gate_curve.png",
    "metrics.json",
    "manifest.json",
    "baseline/baseline.json",
    "baseline/feature_state.json",
    "baseline/profile.json",
    "baseline/calibration.json",
    "baseline/suite.raw.json",
    "baseline/suite.features.json",
)


@dataclass(frozen=True)
class TwoRuns:
    config: Path
    models: Path
    cli_output: str
    cli_exit: int
    second: RetrainResult
    stages: list[str]


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, stage: Stage, total: int | None) -> None:
        self.events.append(f"start:{stage.value}")

    def advance(self, stage: Stage, amount: int = 1) -> None:
        pass

    def finish(self, stage: Stage, summary: str) -> None:
        self.events.append(f"finish:{stage.value}")


@pytest.fixture(scope="module")
def runs(demo_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    """The CLI trains v1; the Python API then trains v2 from the same config and data."""
    root = tmp_path_factory.mktemp("retrain")
    config = write_toml(root / "retrain.toml", config_tables(demo_parquet, root / "models"))
    result = CliRunner().invoke(app, ["retrain", "--config", str(config)])
    recorder = Recorder()
    second = retrain(RetrainConfig.from_file(config), progress=recorder)
    return TwoRuns(config, root / "models", result.output, result.exit_code, second, recorder.events)


def test_cli_retrain_exits_0_and_writes_every_artifact(runs: TwoRuns) -> None:
    assert runs.cli_exit == EXIT_OK, runs.cli_output
    version_dir = runs.models / "ctr" / "v1"
    missing = [name for name in ARTIFACTS if not (version_dir / name).is_file()]
    assert missing == []
    assert (version_dir / "gate_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "registered as production" in runs.cli_output
    for stage in Stage:
        assert f"{stage.value}:" in runs.cli_output
    # Only complete version directories exist: the staging directory was renamed away.
    assert sorted(p.name for p in (runs.models / "ctr").iterdir() if not p.name.startswith(".reg")) == [
        "registry.json",
        "v1",
        "v2",
    ]


def test_manifest_records_version_data_hashes_and_artifact_hashes(runs: TwoRuns, demo_parquet: Path) -> None:
    version_dir = runs.models / "ctr" / "v1"
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["version"] == "v1"
    assert manifest["created"].endswith("+00:00")
    [data_file] = manifest["data"]["files"]
    assert data_file["sha256"] == hashlib.sha256(demo_parquet.read_bytes()).hexdigest()
    assert data_file["rows"] == 4000
    rows = manifest["data"]["rows"]
    assert rows["train"] + rows["validation"] + rows["holdout"] == 4000
    for name, digest in manifest["artifacts"].items():
        assert hashlib.sha256((version_dir / name).read_bytes()).hexdigest() == digest, name
    assert set(ARTIFACTS) - {"manifest.json"} <= set(manifest["artifacts"])
    assert manifest["config"]["training"]["patience"] == 3
    assert manifest["gate"]["passed"] is True


def test_weights_load_with_weights_only_into_a_fresh_model_with_identical_predictions(
    runs: TwoRuns, demo_raw: pd.DataFrame
) -> None:
    version_dir = runs.second.directory
    state_dict = torch.load(version_dir / "weights.pt", weights_only=True)
    encoder = FeatureEncoder.from_json((version_dir / "encoder.json").read_text())
    fresh = build_ctr_model(encoder.width, hidden=16)
    fresh.load_state_dict(state_dict, strict=True)
    fresh.eval()
    features = CTR_FEATURES.transform_frame(demo_raw, runs.second.model.state)
    with torch.no_grad():
        fresh_scores = torch.sigmoid(fresh(torch.from_numpy(encoder.transform(features)))).double().numpy()
    in_memory = runs.second.model.predict_scores(features)
    assert np.array_equal(fresh_scores, in_memory)
    # The serving loader goes the same safe way and scores raw rows through the stored FeatureState.
    assert np.array_equal(load_ctr_scorer(version_dir).score_raw(demo_raw), in_memory)


def test_same_config_and_data_train_identical_weights(runs: TwoRuns) -> None:
    first = torch.load(runs.models / "ctr" / "v1" / "weights.pt", weights_only=True)
    second = torch.load(runs.models / "ctr" / "v2" / "weights.pt", weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_second_version_is_a_candidate_compared_with_production_on_the_same_holdout(runs: TwoRuns) -> None:
    second = runs.second
    assert second.version == "v2"
    assert second.status is VersionStatus.CANDIDATE
    registry = json.loads((runs.models / "ctr" / "registry.json").read_text())
    assert [(v["version"], v["status"]) for v in registry["versions"]] == [
        ("v1", "production"),
        ("v2", "candidate"),
    ]
    comparison = second.comparison
    assert comparison.production_version == "v1"
    # v1 was loaded from disk (weights_only) and scored through its own state: identical weights give
    # identical holdout metrics, to the last bit.
    assert comparison.production == comparison.candidate
    assert comparison.worse_than_production is False
    stored = json.loads((second.directory / "metrics.json").read_text())
    assert stored["production_version"] == "v1"
    assert stored["candidate"]["log_loss"] == pytest.approx(comparison.candidate.log_loss, rel=0, abs=0)
    assert 0.6 < comparison.candidate.auc <= 1.0  # the demo label is learnable


def test_progress_reports_every_stage_in_order(runs: TwoRuns) -> None:
    expected = [event for stage in Stage for event in (f"start:{stage.value}", f"finish:{stage.value}")]
    assert runs.stages == expected


def test_baseline_carries_the_models_state_predictions_labels_and_metrics(runs: TwoRuns) -> None:
    version_dir = runs.models / "ctr" / "v1"
    baseline = Baseline.load(version_dir / "baseline")
    state_json = json.loads((version_dir / "feature_state.json").read_text())
    assert baseline.state_hash == state_json["content_hash"]
    assert baseline.prediction_kind is PredictionKind.SCORE
    assert baseline.has_label
    metrics = json.loads((version_dir / "metrics.json").read_text())["candidate"]
    assert baseline.metrics["auc"] == pytest.approx(metrics["auc"])
    assert baseline.metrics["log_loss"] == pytest.approx(metrics["log_loss"])
    assert baseline.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    # Each holdout metric's sampling error, bootstrapped on the holdout: the accuracy's agrees with the
    # binomial standard error of that many rows.
    assert set(baseline.metric_errors) == {"auc", "log_loss", "accuracy"}
    accuracy, rows = metrics["accuracy"], metrics["rows"]
    binomial = math.sqrt(accuracy * (1 - accuracy) / rows)
    assert baseline.metric_errors["accuracy"] == pytest.approx(binomial, rel=0.3)
    assert all(error > 0 for error in baseline.metric_errors.values())
    assert baseline.model == "ctr"


def test_training_stopped_on_validation_loss_and_restored_the_best_epoch(runs: TwoRuns) -> None:
    training = runs.second.training
    losses = [record.val_loss for record in training.history]
    assert training.best_epoch >= 1
    assert training.best_val_loss == min(losses)
    assert training.history[training.best_epoch - 1].val_loss == training.best_val_loss


def test_a_fresh_model_of_the_demo_class_is_what_the_factory_builds() -> None:
    model = build_ctr_model(12, hidden=8)
    assert isinstance(model, CTRModel)
    assert model(torch.zeros(5, 12)).shape == (5,)
