"""The retraining pipeline the overfit gate guards (imports torch).

``retrain(RetrainConfig.from_file(path), progress=...) -> RetrainResult`` runs load → validate →
features → gate → train → evaluate → artifacts → register; a stage that finds a reason to stop raises
a ``RetrainStopped`` subclass carrying its evidence. ``load_trained_model(directory)`` reads a model
version back for scoring (weights via ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

from skewguard.pipeline.artifacts import TrainedModel, load_trained_model, predict_scores
from skewguard.pipeline.config import ComparisonMetric, RetrainConfig, load_retrain_config
from skewguard.pipeline.encoder import FeatureEncoder
from skewguard.pipeline.metrics import BinaryMetrics, HoldoutComparison, binary_metrics
from skewguard.pipeline.registry import ModelRegistry, RegistryDocument, RegistryEntry, VersionStatus
from skewguard.pipeline.retrain import RetrainResult, SplitSizes, retrain
from skewguard.pipeline.stages import (
    GateStopped,
    HoldoutStopped,
    RetrainProgress,
    RetrainStopped,
    SilentProgress,
    Stage,
    ValidationStopped,
)
from skewguard.pipeline.training import (
    EpochRecord,
    StopReason,
    TrainingDiverged,
    TrainingOptions,
    TrainingOutcome,
    train_with_early_stopping,
)

__all__ = [
    "BinaryMetrics",
    "ComparisonMetric",
    "EpochRecord",
    "FeatureEncoder",
    "GateStopped",
    "HoldoutComparison",
    "HoldoutStopped",
    "ModelRegistry",
    "RegistryDocument",
    "RegistryEntry",
    "RetrainConfig",
    "RetrainProgress",
    "RetrainResult",
    "RetrainStopped",
    "SilentProgress",
    "SplitSizes",
    "Stage",
    "StopReason",
    "TrainedModel",
    "TrainingDiverged",
    "TrainingOptions",
    "TrainingOutcome",
    "ValidationStopped",
    "VersionStatus",
    "binary_metrics",
    "load_retrain_config",
    "load_trained_model",
    "predict_scores",
    "retrain",
    "train_with_early_stopping",
]
