"""Full training with early stopping on the validation loss, best weights restored.

The stopping rule looks at one number only: the validation loss. Training accuracy is recorded per
epoch for the record, never used to stop: a model can reach 100 % on its training rows early and
still be improving on unseen ones (for separable data the logistic loss keeps falling as the margin
grows), and stopping there would ship an under-trained model. The run stops after ``patience``
epochs without an improvement of more than ``min_delta``, or at ``max_epochs``; either way the
weights of the epoch with the lowest validation loss are restored before returning. ``min_delta``
decides only when to stop, not which weights win: an epoch that beats the initial weights by less
than ``min_delta`` is still better than them (restoring the untrained weights instead would ship a
random model), so epoch 0 — the initial weights — is restored only when no epoch lowered the loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from skewguard.errors import ConfigError, DataError, SkewguardError


class StopReason(StrEnum):
    """Why the training loop ended."""

    PATIENCE = "patience"
    """No validation improvement for ``patience`` epochs."""
    MAX_EPOCHS = "max_epochs"
    """The epoch budget ran out (still improving, or within patience)."""


class TrainingDiverged(SkewguardError):
    """The training or validation loss became NaN/Inf: the weights are no longer usable."""


@dataclass(frozen=True)
class TrainingOptions:
    """Knobs of :func:`train_with_early_stopping`; validated on construction, naming the field."""

    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_epochs: int = 50
    patience: int = 5
    min_delta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                msg = f"training option {name} must be >= 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        for name in ("lr", "weight_decay", "min_delta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                msg = f"training option {name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}"
                raise ConfigError(msg + f", got {value}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss over its batches, training accuracy and validation loss."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    improved: bool


@dataclass(frozen=True)
class TrainingOutcome:
    """The history, the restored epoch and why the loop stopped."""

    history: list[EpochRecord]
    best_epoch: int
    best_val_loss: float
    stop_reason: StopReason

    @property
    def epochs_run(self) -> int:
        """How many epochs were trained."""
        return len(self.history)


def _evaluate(
    module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module
) -> tuple[float, float]:
    """Loss and accuracy (logit > 0 vs target > 0.5) in eval mode, without gradients."""
    module.eval()
    with torch.no_grad():
        logits = module(inputs)
        loss = float(loss_fn(logits, targets))
        accuracy = float(((logits > 0) == (targets > 0.5)).double().mean())
    return loss, accuracy


def batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each mini-batch of an epoch; a one-row remainder joins the batch before it.

    BatchNorm in training mode cannot normalise a single row (torch raises "Expected more than 1
    value per channel"), and ``n_rows % batch_size == 1`` is an accident of the data size, not a
    choice the config made: one batch of ``batch_size + 1`` rows is harmless, a crash is not.
    """
    bounds = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    if batch_size > 1 and len(bounds) >= 2 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n_rows)]
    return bounds


def _forward_error(exc: ValueError, rows: int, batch_size: int) -> SkewguardError:
    """The ValueError torch raised in a training forward pass, as an error naming what to change."""
    if rows == 1 and batch_size == 1:
        msg = (
            "key 'training.batch_size' = 1: the model cannot train on batches of one row "
            f"({exc}); layers such as BatchNorm need at least 2 rows per batch, set it >= 2"
        )
        return ConfigError(msg)
    if rows == 1:
        msg = f"training needs at least 2 training rows for this model (BatchNorm-like layers): {exc}"
        return DataError(msg)
    msg = f"the model's forward pass failed on a training batch of {rows} rows (ValueError: {exc})"
    return ConfigError(msg)


def train_with_early_stopping(
    module: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    options: TrainingOptions,
    *,
    loss_fn: nn.Module | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingOutcome:
    """Train ``module`` in place (Adam, shuffled mini-batches) and restore its best-validation weights.

    ``train`` / ``validation`` are (inputs, float 0/1 targets); the module returns one logit per row.
    Shuffling uses a ``torch.Generator`` seeded from ``options.seed`` (the global RNG is not touched),
    so the same data and initial weights give the same weights. A one-row last batch is folded into
    the one before it (:func:`batch_bounds`); a ValueError from the forward pass (BatchNorm on one row
    with ``batch_size = 1``) becomes a ConfigError naming ``training.batch_size``.
    """
    inputs, targets = train
    val_inputs, val_targets = validation
    if inputs.shape[0] == 0 or val_inputs.shape[0] == 0:
        msg = "training needs at least one training and one validation row"
        raise DataError(msg)
    criterion = loss_fn if loss_fn is not None else nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(module.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    generator = torch.Generator().manual_seed(options.seed)
    history: list[EpochRecord] = []
    best_loss, _ = _evaluate(module, val_inputs, val_targets, criterion)
    best_state = copy.deepcopy(module.state_dict())
    best_epoch = 0  # epoch 0 = the initial weights; a run that never lowers the loss returns them
    reference = best_loss  # the loss an epoch must beat by more than min_delta to reset patience
    stale = 0
    stop_reason = StopReason.MAX_EPOCHS
    n_rows = inputs.shape[0]
    for epoch in range(1, options.max_epochs + 1):
        module.train()
        order = torch.randperm(n_rows, generator=generator)
        total, seen = 0.0, 0
        for start, stop in batch_bounds(n_rows, options.batch_size):
            rows = order[start:stop]
            optimizer.zero_grad(set_to_none=True)
            try:
                logits = module(inputs[rows])
            except ValueError as exc:
                raise _forward_error(exc, len(rows), options.batch_size) from exc
            loss = criterion(logits, targets[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        train_loss = total / seen
        _, train_accuracy = _evaluate(module, inputs, targets, criterion)
        val_loss, _ = _evaluate(module, val_inputs, val_targets, criterion)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            msg = (
                f"training diverged at epoch {epoch}: training loss {train_loss}, validation loss "
                f"{val_loss} (lower training.lr, or check the inputs for extreme values)"
            )
            raise TrainingDiverged(msg)
        improved = val_loss < reference - options.min_delta
        record = EpochRecord(epoch, train_loss, train_accuracy, val_loss, improved)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(module.state_dict())
        if improved:
            reference, stale = val_loss, 0
        else:
            stale += 1
            if stale >= options.patience:
                stop_reason = StopReason.PATIENCE
                break
    module.load_state_dict(best_state)
    module.eval()
    return TrainingOutcome(
        history=history, best_epoch=best_epoch, best_val_loss=best_loss, stop_reason=stop_reason
    )
