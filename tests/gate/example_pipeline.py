"""A tiny pipeline the example gate config points at (``example_gate.toml``)."""

from __future__ import annotations

import torch
from torch import nn


def build_model() -> nn.Module:
    """Two-layer MLP for 8 features and 4 classes (the config runs this seeded)."""
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def one_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 examples with balanced labels; a fixed generator, so every call gives the same batch."""
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(16, 8, generator=generator)
    targets = (torch.arange(16) % 4)[torch.randperm(16, generator=generator)]
    return inputs, targets


#: torch's intra-op thread count as the factory and each forward pass of its model saw it.
THREADS_SEEN: list[int] = []


class _ThreadRecordingMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        THREADS_SEEN.append(torch.get_num_threads())
        out: torch.Tensor = self.layers(x)
        return out


def build_model_recording_threads() -> nn.Module:
    """A small MLP noting in THREADS_SEEN how many threads torch had when built and when run."""
    THREADS_SEEN.append(torch.get_num_threads())
    return _ThreadRecordingMLP()


def build_model_with_a_shape_bug() -> nn.Module:
    """The MLP with its first layer sized for 9 features: the forward pass raises on the batch."""
    return nn.Sequential(nn.Linear(9, 64), nn.ReLU(), nn.Linear(64, 4))


def not_a_model() -> str:
    """A factory that returns the wrong thing (for the config-error tests)."""
    return "not a module"


def broken_factory() -> nn.Module:
    """A factory that raises (for the config-error tests)."""
    msg = "weights file missing"
    raise FileNotFoundError(msg)


def three_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch callable returning too many parts (for the config-error tests)."""
    return torch.zeros(2, 8), torch.zeros(2), torch.zeros(2)


NOT_CALLABLE = 3
