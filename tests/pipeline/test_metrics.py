"""Holdout metrics against independent computations, and the candidate-vs-production verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skewguard.errors import DataError
from skewguard.pipeline import BinaryMetrics, ComparisonMetric, HoldoutComparison, binary_metrics


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    wins = greater + 0.5 * ties
    return float(wins) / float(positives.size * negatives.size)


def test_auc_and_log_loss_match_pairwise_counting_and_torch() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    # Rounded scores create ties, which count one half.
    scores = np.round(np.clip(0.3 * labels + rng.random(500) * 0.7, 0.0, 1.0), 2)
    metrics = binary_metrics(labels, scores)
    assert metrics.auc == pytest.approx(pairwise_auc(labels, scores), rel=1e-12)
    # Scores of exactly 0 and 1 are clipped by 1e-15, as the daemon clips a window's (one definition).
    assert {0.0, 1.0} <= set(scores.tolist())
    expected = F.binary_cross_entropy(
        torch.from_numpy(np.clip(scores, 1e-15, 1 - 1e-15)), torch.from_numpy(labels.astype("float64"))
    )
    assert metrics.log_loss == pytest.approx(float(expected), rel=1e-12)
    assert metrics.accuracy == pytest.approx(np.mean((scores >= 0.5) == (labels == 1)))
    assert metrics.rows == 500 and metrics.positive_rate == pytest.approx(labels.mean())


def test_one_class_holdout_has_no_auc_and_bad_inputs_are_data_errors() -> None:
    assert math.isnan(binary_metrics(np.ones(5), np.full(5, 0.7)).auc)
    with pytest.raises(DataError, match="0 or 1"):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="probabilities"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 1.5]))
    with pytest.raises(DataError, match="as many scores"):
        binary_metrics(np.array([0, 1]), np.array([0.1]))


def metrics(auc: float, log_loss: float) -> BinaryMetrics:
    return BinaryMetrics(rows=10, positive_rate=0.5, auc=auc, log_loss=log_loss, accuracy=0.5, mean_score=0.5)


@pytest.mark.parametrize(
    ("metric", "candidate", "production", "tolerance", "worse"),
    [
        (ComparisonMetric.LOG_LOSS, metrics(0.7, 0.52), metrics(0.7, 0.50), 0.0, True),
        (ComparisonMetric.LOG_LOSS, metrics(0.7, 0.52), metrics(0.7, 0.50), 0.05, False),
        (ComparisonMetric.LOG_LOSS, metrics(0.7, 0.48), metrics(0.7, 0.50), 0.0, False),
        (ComparisonMetric.AUC, metrics(0.70, 0.5), metrics(0.72, 0.5), 0.0, True),
        (ComparisonMetric.AUC, metrics(0.74, 0.9), metrics(0.72, 0.5), 0.0, False),
        (ComparisonMetric.AUC, metrics(math.nan, 0.5), metrics(0.72, 0.5), 0.0, False),
    ],
)
def test_worse_than_production_uses_the_metrics_direction_and_tolerance(
    metric: ComparisonMetric,
    candidate: BinaryMetrics,
    production: BinaryMetrics,
    tolerance: float,
    worse: bool,
) -> None:
    comparison = HoldoutComparison(metric, candidate, production, "v1", tolerance)
    assert comparison.worse_than_production is worse
    assert HoldoutComparison(metric, candidate).worse_than_production is False
