"""Shadow mode: candidate models score live traffic off the request path, next to production.

The serving side is :class:`ShadowRunner` (production answers synchronously; candidates score the same
features in background workers; one record per request goes to the serving log with
``shadow_predictions`` by version).
"""

from __future__ import annotations

from skewguard.shadow.runner import (
    BatchScorer,
    CandidateStats,
    RequestLog,
    Scorer,
    ShadowRunner,
    ShadowStats,
    TorchScorer,
    batch_scorer,
    torch_scorer,
)

__all__ = [
    "BatchScorer",
    "CandidateStats",
    "RequestLog",
    "Scorer",
    "ShadowRunner",
    "ShadowStats",
    "TorchScorer",
    "batch_scorer",
    "torch_scorer",
]
