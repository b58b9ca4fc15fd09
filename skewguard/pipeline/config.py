"""The retraining pipeline's configuration: one TOML (or YAML) file, validated before anything runs.

Example (``deploy/examples/retrain.toml`` is a complete one)::

    model_name = "ctr"
    models_dir = "../models"                 # relative to this file

    [data]
    features = "features.ctr:CTR_FEATURES"
    files = ["ctr_train.parquet"]
    label = "click"
    id_column = "request_id"                 # rows are split by a hash of this id: a fixed holdout

    [model]
    factory = "skewguard.demo.model:build_ctr_model"
    options = { hidden = 32 }

    [gate]
    batch_size = 32                          # 8-32 examples: memorising them must be possible
    lr = 0.01

    [training]
    max_epochs = 40
    patience = 4

Paths in a file are resolved against the file's directory, so a config works from any working
directory. Every problem (missing file, bad syntax, unknown key, wrong type or range) becomes a
:class:`~skewguard.errors.ConfigError` whose message names the key and what was expected.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skewguard.config import describe_validation_error, read_config_document
from skewguard.errors import ConfigError
from skewguard.gate.config import GateSection

_REFERENCE_HELP = "a 'package.module:attribute' reference"


def _is_reference(value: str) -> bool:
    module, sep, attribute = value.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    return bool(sep) and all(part.isidentifier() for part in parts)


class ComparisonMetric(StrEnum):
    """The holdout metric a candidate is compared with production on."""

    LOG_LOSS = "log_loss"
    """Lower is better; sensitive to calibration, which a CTR model's scores are used for."""
    AUC = "auc"
    """Higher is better; ranking quality only."""


class DataSection(BaseModel):
    """``[data]``: where the raw training rows come from and how they are split."""

    model_config = ConfigDict(extra="forbid")

    features: str
    files: list[Path] = Field(default_factory=list)
    holdout_files: list[Path] = Field(default_factory=list)
    label: str = Field(min_length=1)
    id_column: str | None = None
    validation_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    holdout_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    chunk_rows: int = Field(default=200_000, ge=1)

    @field_validator("features")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _is_reference(value):
            msg = f"expected {_REFERENCE_HELP} naming a FeatureSet"
            raise ValueError(msg)
        return value


class ModelSection(BaseModel):
    """``[model]``: the factory ``factory(input_dim, **options) -> nn.Module`` returning logits (N,)."""

    model_config = ConfigDict(extra="forbid")

    factory: str
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)
    task: Literal["binary"] = "binary"

    @field_validator("factory")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _is_reference(value):
            msg = f"expected {_REFERENCE_HELP} naming a model factory"
            raise ValueError(msg)
        return value


class PipelineGateSection(GateSection):
    """``[gate]``: the overfit gate's options plus the size of the one cached training batch.

    The batch is drawn from training rows whose encoded inputs occur once with one label (see
    ``skewguard.pipeline.retrain.gate_candidate_rows``): the gate demands 100 % agreement, which rows
    with identical inputs and different labels make unreachable for any model. 32 rows by default,
    the top of the gate's 8-32 range: a larger batch only makes memorising slower and more likely
    to meet near-duplicates that a small model cannot separate.
    """

    batch_size: int = Field(default=32, ge=2, le=65_536)


class TrainingSection(BaseModel):
    """``[training]``: the full run, with early stopping on the validation loss only."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_epochs: int = Field(default=50, ge=1, le=100_000)
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class EvaluationSection(BaseModel):
    """``[evaluation]``: the holdout comparison with the production model."""

    model_config = ConfigDict(extra="forbid")

    compare_with_production: bool = True
    production_dir: Path | None = None
    """A production model directory; by default the registry's production version is used."""
    metric: ComparisonMetric = ComparisonMetric.LOG_LOSS
    require_better: bool = False
    """Stop the run (no model directory) when the candidate is worse than production on the holdout."""
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """How much worse than production (in the metric's units) still counts as not worse."""


class BaselineSection(BaseModel):
    """``[baseline]``: options of the monitoring baseline written next to the weights."""

    model_config = ConfigDict(extra="forbid")

    window_size: int = Field(default=500, ge=1)
    holdout_every: int = Field(default=5, ge=2)
    calibration_draws: int = Field(default=100, ge=1)
    bins: int = Field(default=32, ge=1)
    top_k: int = Field(default=50, ge=1)
    reservoir_size: int = Field(default=1000, ge=1)


class RegistrySection(BaseModel):
    """``[registry]``: how a new version enters ``registry.json``."""

    model_config = ConfigDict(extra="forbid")

    promote_first: bool = True
    """The first version ever registered becomes production (there is nothing to shadow)."""


class RetrainConfig(BaseModel):
    """A retraining run, validated; build it in Python or load it with :meth:`from_file`."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    models_dir: Path
    seed: int = Field(default=0, ge=0, lt=2**63)
    """Seeds torch, numpy and the split; torch.manual_seed takes a signed 64-bit int, numpy no negatives."""
    threads: int = Field(default=1, ge=1, le=256)
    """torch intra-op threads inside the pipeline (restored afterwards); 1 suits a shared machine."""
    data: DataSection
    model: ModelSection
    gate: PipelineGateSection = Field(default_factory=PipelineGateSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    baseline: BaselineSection = Field(default_factory=BaselineSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)

    @model_validator(mode="after")
    def _consistent(self) -> RetrainConfig:
        if not self.data.holdout_files and self.data.validation_fraction + self.data.holdout_fraction >= 0.9:
            msg = (
                "data.validation_fraction + data.holdout_fraction must leave at least 10 % of the rows "
                "for training"
            )
            raise ValueError(msg)
        return self

    def resolved(self, base_dir: Path) -> RetrainConfig:
        """A copy whose relative paths are taken relative to ``base_dir`` (a config file's directory)."""

        def absolute(path: Path) -> Path:
            return path if path.is_absolute() else (base_dir / path).resolve()

        production = self.evaluation.production_dir
        return self.model_copy(
            update={
                "models_dir": absolute(self.models_dir),
                "data": self.data.model_copy(
                    update={
                        "files": [absolute(p) for p in self.data.files],
                        "holdout_files": [absolute(p) for p in self.data.holdout_files],
                    }
                ),
                "evaluation": self.evaluation.model_copy(
                    update={"production_dir": None if production is None else absolute(production)}
                ),
            }
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RetrainConfig:
        """Read and validate a TOML/YAML config, resolving its relative paths against its directory."""
        return load_retrain_config(path)


def load_retrain_config(path: str | Path) -> RetrainConfig:
    """Read and validate a retraining config file; relative paths are relative to the file."""
    file = Path(path)
    data = read_config_document(file)
    try:
        config = RetrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(file.name, exc)) from exc
    return config.resolved(file.resolve().parent)
