"""Holdout metrics of a binary classifier and the candidate-vs-production comparison.

AUC, log-loss and accuracy are the daemon's (:mod:`skewguard.labels.performance`: AUC is the
Mann–Whitney U statistic over ``n_pos * n_neg``, ties counting one half), so a holdout value and a
window's are one definition.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skewguard.errors import DataError
from skewguard.labels.performance import accuracy, auc, log_loss
from skewguard.pipeline.config import ComparisonMetric


@dataclass(frozen=True)
class BinaryMetrics:
    """A binary classifier's quality on one labelled set; ``auc`` is NaN when one class is absent."""

    rows: int
    positive_rate: float
    auc: float
    log_loss: float
    accuracy: float
    mean_score: float

    def value(self, metric: ComparisonMetric) -> float:
        """The value of ``metric``."""
        return self.auc if metric is ComparisonMetric.AUC else self.log_loss

    def to_dict(self) -> dict[str, float]:
        """Plain numbers, for ``metrics.json`` and the baseline's metrics (NaN kept as NaN)."""
        return {key: float(value) for key, value in asdict(self).items()}


def binary_metrics(labels: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> BinaryMetrics:
    """AUC, log-loss, accuracy at 0.5 and base rates of ``scores`` (probabilities) against 0/1 labels."""
    y = np.asarray(labels, dtype="float64").reshape(-1)
    p = np.asarray(scores, dtype="float64").reshape(-1)
    if y.size == 0 or y.size != p.size:
        msg = f"metrics need as many scores as labels, and at least one: got {p.size} scores, {y.size} labels"
        raise DataError(msg)
    if not np.isin(y, (0.0, 1.0)).all():
        msg = "metrics need labels that are 0 or 1"
        raise DataError(msg)
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        msg = "metrics need scores that are finite probabilities in [0, 1]"
        raise DataError(msg)
    return BinaryMetrics(
        rows=int(y.size),
        positive_rate=float(y.mean()),
        auc=auc(p, y),
        log_loss=log_loss(p, y),
        accuracy=accuracy(p, y),
        mean_score=float(p.mean()),
    )


@dataclass(frozen=True)
class HoldoutComparison:
    """The candidate's holdout metrics, production's on the same rows, and the verdict on ``metric``."""

    metric: ComparisonMetric
    candidate: BinaryMetrics
    production: BinaryMetrics | None = None
    production_version: str | None = None
    tolerance: float = 0.0

    @property
    def delta(self) -> float | None:
        """Candidate minus production on ``metric`` (None without production)."""
        if self.production is None:
            return None
        return self.candidate.value(self.metric) - self.production.value(self.metric)

    @property
    def worse_than_production(self) -> bool:
        """True when the candidate is worse than production by more than ``tolerance``.

        A NaN metric (a holdout with one class has no AUC) never counts as worse: there is no evidence.
        """
        delta = self.delta
        if delta is None or math.isnan(delta):
            return False
        if self.metric is ComparisonMetric.LOG_LOSS:
            return delta > self.tolerance
        return -delta > self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` document."""
        return {
            "metric": self.metric.value,
            "candidate": self.candidate.to_dict(),
            "production": None if self.production is None else self.production.to_dict(),
            "production_version": self.production_version,
            "delta": self.delta,
            "tolerance": self.tolerance,
            "worse_than_production": self.worse_than_production,
        }
