"""The demo click-through-rate model, and the same model with a seeded bug for the gate to catch.

The model reads the encoded computed features of ``features.ctr`` (numeric features standardised,
categories one-hot; see :class:`skewguard.pipeline.encoder.FeatureEncoder`, stored as
``encoder.json`` so serving rebuilds the exact tensor) and returns one click logit per row::

    encoder: Linear(input_dim, hidden) → ReLU        (a learned feature encoder)
    head:    Linear(hidden, hidden) → ReLU → Linear(hidden, 1)

Factories take ``(input_dim, **options)``, the contract ``[model] factory`` in a retraining config
names. The seeded-bug factories keep every shape right and still "train" in a naive loop, which is
what makes such bugs expensive:

* :func:`build_ctr_model_detached_encoder`: the encoder's output is ``.detach()``-ed (a leftover from
  a feature-extraction experiment), so the encoder never learns; the gate's gradient-flow check
  names ``encoder.0.weight``/``encoder.0.bias``.
* :func:`build_ctr_model_batch_mixing`: ``h.t().reshape(n, -1)`` where ``h`` was meant; every row's
  hidden vector is made of other rows' activations; the gate's batch-independence check fails.

Serving code scores with :func:`load_ctr_scorer` (a model version directory) and
``TrainedModel.predict_scores(features) -> np.ndarray`` of click probabilities.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import torch
from torch import nn

from skewguard.errors import ConfigError
from skewguard.pipeline.artifacts import TrainedModel, load_trained_model

DEFAULT_HIDDEN = 32


class CTRModelBug(StrEnum):
    """The seeded bugs a demo model can carry."""

    NONE = "none"
    DETACHED_ENCODER = "detached_encoder"
    BATCH_MIXING = "batch_mixing"


class CTRModel(nn.Module):
    """A two-stage MLP over encoded CTR features: ``forward(x) -> logits`` of shape ``(N,)``."""

    def __init__(
        self, input_dim: int, hidden: int = DEFAULT_HIDDEN, bug: CTRModelBug = CTRModelBug.NONE
    ) -> None:
        super().__init__()
        if input_dim < 1 or hidden < 1:
            msg = f"CTRModel needs input_dim >= 1 and hidden >= 1, got input_dim={input_dim}, hidden={hidden}"
            raise ConfigError(msg)
        self.bug = CTRModelBug(bug)
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """One logit per row."""
        hidden = self.encoder(inputs)
        if self.bug is CTRModelBug.DETACHED_ENCODER:
            hidden = hidden.detach()
        elif self.bug is CTRModelBug.BATCH_MIXING:
            hidden = hidden.t().reshape(inputs.shape[0], -1)
        logits: torch.Tensor = self.head(hidden).squeeze(-1)
        return logits


def build_ctr_model(input_dim: int, hidden: int = DEFAULT_HIDDEN) -> CTRModel:
    """The correct demo model (the factory ``deploy/examples/retrain.toml`` names)."""
    return CTRModel(input_dim, hidden)


def build_ctr_model_detached_encoder(input_dim: int, hidden: int = DEFAULT_HIDDEN) -> CTRModel:
    """Seeded bug: the encoder is detached from the loss, so its weights never get a gradient."""
    return CTRModel(input_dim, hidden, bug=CTRModelBug.DETACHED_ENCODER)


def build_ctr_model_batch_mixing(input_dim: int, hidden: int = DEFAULT_HIDDEN) -> CTRModel:
    """Seeded bug: a transpose-then-reshape mixes examples of the batch into each other's features."""
    return CTRModel(input_dim, hidden, bug=CTRModelBug.BATCH_MIXING)


def load_ctr_scorer(directory: Path) -> TrainedModel:
    """Load a demo model version for scoring; weights are read with ``weights_only=True``.

    ``load_ctr_scorer(dir).predict_scores(features)`` gives click probabilities for a frame of computed
    features, ``.score_raw(raw)`` for raw requests through the version's own FeatureState.
    """
    return load_trained_model(directory)
