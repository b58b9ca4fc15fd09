"""The demo model's factories: shapes, and the gate's verdict on each seeded bug vs the correct model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skewguard.demo.model import (
    CTRModelBug,
    build_ctr_model,
    build_ctr_model_batch_mixing,
    build_ctr_model_detached_encoder,
)
from skewguard.errors import ConfigError
from skewguard.gate import CheckName, OverfitGate


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 20, generator=generator)
    return inputs, (torch.rand(64, generator=generator) > 0.6).float()


@pytest.mark.parametrize(
    ("factory", "failed"),
    [
        (build_ctr_model, None),
        (build_ctr_model_detached_encoder, CheckName.GRADIENT_FLOW),
        (build_ctr_model_batch_mixing, CheckName.BATCH_INDEPENDENCE),
    ],
)
def test_gate_verdict_on_each_factory(factory: object, failed: CheckName | None) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = factory(20, hidden=16)  # type: ignore[operator]
    inputs, targets = batch()
    report = OverfitGate(lr=0.01, max_steps=400).check(
        model, inputs, targets, nn.BCEWithLogitsLoss(), task="classification"
    )
    assert report.passed is (failed is None), report.diagnosis
    if failed is not None:
        assert failed in {c.name for c in report.failed_checks}


def test_every_variant_returns_one_logit_per_row_and_shares_the_state_dict_layout() -> None:
    inputs, _ = batch()
    factories = (build_ctr_model, build_ctr_model_detached_encoder, build_ctr_model_batch_mixing)
    models = [factory(20) for factory in factories]
    assert [m(inputs).shape for m in models] == [torch.Size([64])] * 3
    assert len({tuple(m.state_dict()) for m in models}) == 1
    assert models[1].bug is CTRModelBug.DETACHED_ENCODER


def test_invalid_dimensions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        build_ctr_model(10, hidden=0)
