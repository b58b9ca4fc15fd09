"""Early stopping: patience on the validation loss, best weights restored, never stopped by accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from skewguard.errors import ConfigError
from skewguard.pipeline import StopReason, TrainingOptions, train_with_early_stopping
from skewguard.pipeline.training import batch_bounds


def noisy_linear(n: int, generator: torch.Generator, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.randn(n, 10, generator=generator)
    logits = (inputs @ w) / w.norm() + torch.randn(n, generator=generator)
    return inputs, (logits > 0).float()


def separable(n: int, generator: torch.Generator, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.randn(n * 3, 10, generator=generator)
    margin = (inputs @ w).abs() > 0.15 * w.norm()
    inputs = inputs[margin][:n]
    return inputs, (inputs @ w > 0).float()


def val_loss(module: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    module.eval()
    with torch.no_grad():
        return float(nn.BCEWithLogitsLoss()(module(data[0]), data[1]))


def wide_mlp() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1), nn.Flatten(0)
        )


def test_rising_validation_loss_stops_after_patience_and_restores_the_best_weights() -> None:
    generator = torch.Generator().manual_seed(1)
    w = torch.randn(10, generator=generator)
    train, validation = noisy_linear(96, generator, w), noisy_linear(200, generator, w)
    module = wide_mlp()
    options = TrainingOptions(batch_size=16, lr=0.003, max_epochs=80, patience=5)
    outcome = train_with_early_stopping(module, train, validation, options)

    assert outcome.stop_reason is StopReason.PATIENCE
    assert 1 <= outcome.best_epoch < outcome.epochs_run == outcome.best_epoch + options.patience
    losses = [record.val_loss for record in outcome.history]
    assert outcome.best_val_loss == min(losses)
    # The overfitting really happened: the last epochs were worse than the best one...
    assert all(loss > outcome.best_val_loss for loss in losses[outcome.best_epoch :])
    # ...and the module handed back is the best epoch's, not the last one's.
    assert val_loss(module, validation) == pytest.approx(outcome.best_val_loss, rel=1e-6)
    assert val_loss(module, validation) < losses[-1]


def test_training_does_not_stop_because_training_accuracy_reached_100_percent() -> None:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(10, generator=generator)
    train, validation = separable(200, generator, w), separable(200, generator, w)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(10, 1), nn.Flatten(0))
    options = TrainingOptions(batch_size=32, lr=0.05, max_epochs=30, patience=3)
    outcome = train_with_early_stopping(module, train, validation, options)

    perfect = [r.epoch for r in outcome.history if r.train_accuracy == 1.0]
    assert perfect, "the data is separable: training accuracy must reach 100 %"
    assert perfect[0] < options.max_epochs - options.patience
    # The validation loss kept improving after 100 % training accuracy, so training went on.
    assert outcome.stop_reason is StopReason.MAX_EPOCHS
    assert outcome.epochs_run == options.max_epochs
    assert outcome.best_epoch > perfect[0]


def test_same_seed_and_initial_weights_give_identical_weights() -> None:
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(10, generator=generator)
    train, validation = noisy_linear(64, generator, w), noisy_linear(64, generator, w)
    first, second = wide_mlp(), wide_mlp()
    options = TrainingOptions(batch_size=16, lr=0.003, max_epochs=3, patience=3, seed=7)
    train_with_early_stopping(first, train, validation, options)
    train_with_early_stopping(second, train, validation, options)
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_run_that_never_lowers_the_validation_loss_returns_the_initial_weights() -> None:
    generator = torch.Generator().manual_seed(4)
    w = torch.randn(10, generator=generator)
    train = noisy_linear(64, generator, w)
    validation = (train[0], 1.0 - train[1])  # the training rows with every label flipped: learning hurts
    module = wide_mlp()
    initial = copy.deepcopy(module.state_dict())
    outcome = train_with_early_stopping(
        module, train, validation, TrainingOptions(lr=0.003, max_epochs=10, patience=2)
    )
    assert outcome.best_epoch == 0 and outcome.epochs_run == 2
    assert all(torch.equal(initial[k], v) for k, v in module.state_dict().items())


def test_min_delta_decides_when_to_stop_not_which_weights_win() -> None:
    # No epoch beats the initial loss by min_delta, so patience runs out after 2 epochs; but they did
    # lower it, and the better of them is restored, not the untrained initial weights.
    generator = torch.Generator().manual_seed(4)
    w = torch.randn(10, generator=generator)
    train, validation = noisy_linear(64, generator, w), noisy_linear(64, generator, w)
    module = wide_mlp()
    initial = copy.deepcopy(module.state_dict())
    outcome = train_with_early_stopping(
        module, train, validation, TrainingOptions(lr=0.003, max_epochs=10, patience=2, min_delta=10.0)
    )
    assert outcome.epochs_run == 2 and not any(record.improved for record in outcome.history)
    losses = [record.val_loss for record in outcome.history]
    assert outcome.best_epoch == 1 + losses.index(min(losses)) and outcome.best_val_loss == min(losses)
    assert not all(torch.equal(initial[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize(
    ("field", "value"), [("patience", 0), ("lr", 0.0), ("batch_size", 0), ("min_delta", float("nan"))]
)
def test_invalid_training_options_are_config_errors_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainingOptions(**{field: value})  # type: ignore[arg-type]


def batchnorm_mlp() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))


def test_a_one_row_last_batch_joins_the_previous_one_so_batchnorm_models_train() -> None:
    generator = torch.Generator().manual_seed(5)
    w = torch.randn(10, generator=generator)
    # 33 rows in batches of 16: 16 + 17, never a last batch of one row (BatchNorm cannot train on it).
    train, validation = noisy_linear(33, generator, w), noisy_linear(32, generator, w)
    options = TrainingOptions(batch_size=16, lr=0.01, max_epochs=2, patience=2)
    outcome = train_with_early_stopping(batchnorm_mlp(), train, validation, options)
    assert outcome.epochs_run == 2
    assert batch_bounds(33, 16) == [(0, 16), (16, 33)]
    assert batch_bounds(32, 16) == [(0, 16), (16, 32)]


def test_batch_size_one_with_batchnorm_is_a_config_error_naming_training_batch_size() -> None:
    generator = torch.Generator().manual_seed(6)
    w = torch.randn(10, generator=generator)
    train, validation = noisy_linear(8, generator, w), noisy_linear(8, generator, w)
    with pytest.raises(ConfigError, match=r"training\.batch_size' = 1.*at least 2 rows"):
        train_with_early_stopping(
            batchnorm_mlp(), train, validation, TrainingOptions(batch_size=1, max_epochs=1)
        )
