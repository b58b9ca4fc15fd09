"""OverfitGate as a whole: the report, its JSON/PNG forms, reproducibility and side effects."""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from skewguard.errors import GateError
from skewguard.gate import (
    CheckName,
    CheckResult,
    CheckStatus,
    GateReport,
    Outputs,
    OverfitGate,
    Task,
    render_report_table,
    smoothed_cross_entropy_floor,
)
from skewguard.gate.zoo import (
    MLP,
    SmallCNN,
    classification_batch,
    image_batch,
    run_case,
    seeded_build,
    zoo_entry,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def passing_report() -> GateReport:
    return run_case(zoo_entry("mlp_classifier").build())


@pytest.fixture(scope="module")
def nan_report() -> GateReport:
    return run_case(zoo_entry("nan_log_negative").build())


def test_report_json_round_trip_is_exact(passing_report: GateReport):
    text = passing_report.to_json()
    again = GateReport.from_json(text)
    assert again == passing_report
    assert again.to_json() == text
    assert [c.name for c in again.failed_checks] == [c.name for c in passing_report.failed_checks]


def test_report_json_round_trip_keeps_nan_in_the_loss_curve(nan_report: GateReport):
    assert math.isnan(nan_report.loss_curve[0])
    again = GateReport.from_json(nan_report.to_json())
    assert math.isnan(again.loss_curve[0])
    assert again.checks == nan_report.checks


def test_report_plot_writes_a_png(tmp_path: Path, passing_report: GateReport, nan_report: GateReport):
    for name, report in (("pass.png", passing_report), ("nan.png", nan_report)):
        written = report.plot(tmp_path / "plots" / name)
        data = written.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
    with pytest.raises(GateError, match=r"\.png"):
        passing_report.plot(tmp_path / "curve.jpg")


def test_skipped_check_is_neither_pass_nor_failure(passing_report: GateReport):
    skipped = passing_report.check(CheckName.CAUSAL_DEPENDENCY)
    assert skipped.status is CheckStatus.SKIPPED and not skipped.passed
    assert skipped not in passing_report.failed_checks
    assert passing_report.skipped_checks == [skipped]
    assert CheckResult.skip(CheckName.INIT_LOSS, "why").passed is False


def test_render_report_table_shows_every_check_with_its_status(passing_report: GateReport):
    table = render_report_table(passing_report)
    assert table.row_count == len(CheckName)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "PASSED" in text and "SKIP" in text and "causal_dependency" in text
    assert text.count("PASS ") + text.count("SKIP") + text.count("FAIL") >= len(CheckName)


def test_gate_verdict_is_deterministic():
    first = run_case(zoo_entry("cnn_batchnorm_dropout").build())
    second = run_case(zoo_entry("cnn_batchnorm_dropout").build())
    assert first.checks == second.checks
    assert first.loss_curve == second.loss_curve
    assert first.steps == second.steps


def test_gate_leaves_the_callers_model_rng_and_warning_filters_unchanged():
    case = zoo_entry("broadcast_mse").build()  # warns on every step
    model = case.model
    model.train()
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state(legacy=False)
    python_state = random.getstate()
    filters = list(warnings.filters)
    report = run_case(case)
    assert not report.passed
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), torch_state)
    numpy_after = np.random.get_state(legacy=False)
    assert np.array_equal(numpy_after["state"]["key"], numpy_state["state"]["key"])
    assert numpy_after["state"]["pos"] == numpy_state["state"]["pos"]
    assert random.getstate() == python_state
    assert warnings.filters == filters


def test_label_smoothing_floor_is_detected_from_the_loss_module():
    inputs, targets = classification_batch()
    model = seeded_build(1, MLP)
    report = OverfitGate().check(
        model, inputs, targets, nn.CrossEntropyLoss(label_smoothing=0.1), task=Task.CLASSIFICATION
    )
    assert report.passed, report.diagnosis
    assert report.loss_floor == pytest.approx(smoothed_cross_entropy_floor(4, 0.1))
    assert "raised to H(q)" in report.check(CheckName.OVERFIT).detail


def test_wrong_floor_makes_a_correct_model_fail_below_its_floor():
    inputs, targets = classification_batch()
    report = OverfitGate(loss_floor=0.5).check(
        seeded_build(1, MLP), inputs, targets, nn.CrossEntropyLoss(), task="classification"
    )
    assert not report.passed
    assert "fell below its floor" in report.check(CheckName.FAILURE_SIGNATURES).detail


def test_pretrained_model_skips_the_init_loss_check():
    inputs, targets = classification_batch()
    model = seeded_build(1, MLP)
    head = model.get_submodule("head")
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.weight.mul_(8.0)  # confident at init, as a pretrained head would be
    report = OverfitGate().check(
        model, inputs, targets, nn.CrossEntropyLoss(), task="classification", pretrained=True
    )
    assert report.check(CheckName.INIT_LOSS).skipped
    assert report.passed, report.diagnosis


def test_batchnorm_with_a_batch_of_one_does_not_crash_or_false_fail():
    images, labels = image_batch()
    report = OverfitGate(max_steps=100).check(
        seeded_build(2, SmallCNN), images[:1], labels[:1], nn.CrossEntropyLoss(), task="classification"
    )
    assert report.check(CheckName.BATCH_INDEPENDENCE).skipped
    assert report.check(CheckName.OVERFIT).passed, report.diagnosis


def test_unused_parameter_fails_gradient_flow_unless_allow_listed():
    class WithSpare(MLP):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Linear(2, 2)  # e.g. an expert this batch never routes to

    inputs, targets = classification_batch()
    model = seeded_build(1, WithSpare)
    strict = OverfitGate().check(model, inputs, targets, nn.CrossEntropyLoss(), task="classification")
    assert [c.name for c in strict.failed_checks] == [CheckName.GRADIENT_FLOW]
    assert "spare.weight" in strict.check(CheckName.GRADIENT_FLOW).detail
    allowed = OverfitGate(allow_no_grad=["spare.*"]).check(
        model, inputs, targets, nn.CrossEntropyLoss(), task="classification"
    )
    assert allowed.passed, allowed.diagnosis


def test_fully_detached_output_fails_gradient_flow_and_skips_dependency_checks():
    class Detached(MLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).detach()

    inputs, targets = classification_batch()
    report = OverfitGate().check(
        seeded_build(1, Detached), inputs, targets, nn.CrossEntropyLoss(), task="classification"
    )
    assert CheckName.GRADIENT_FLOW in {c.name for c in report.failed_checks}
    assert report.check(CheckName.BATCH_INDEPENDENCE).skipped
    assert "no gradient path" in report.check(CheckName.BATCH_INDEPENDENCE).detail


def test_model_without_trainable_parameters_fails_inventory_and_skips_what_cannot_run():
    inputs, targets = classification_batch()
    model = seeded_build(1, MLP).requires_grad_(False)
    report = OverfitGate().check(model, inputs, targets, nn.CrossEntropyLoss(), task="classification")
    assert {c.name for c in report.failed_checks} == {CheckName.INVENTORY, CheckName.OVERFIT}
    skipped = {c.name for c in report.skipped_checks}
    assert {CheckName.FAILURE_SIGNATURES, CheckName.GRADIENT_FLOW, CheckName.DETERMINISM} <= skipped


def test_misuse_raises_gate_error_naming_the_argument():
    inputs, targets = classification_batch()
    model = seeded_build(1, MLP)
    loss = nn.CrossEntropyLoss()
    with pytest.raises(GateError, match="task='ranking'"):
        OverfitGate().check(model, inputs, targets, loss, task="ranking")
    with pytest.raises(GateError, match="16 examples, targets 15"):
        OverfitGate().check(model, inputs, targets[:15], loss, task="classification")
    with pytest.raises(GateError, match=r"inputs: expected a torch\.Tensor"):
        OverfitGate().check(model, inputs.tolist(), targets, loss, task="classification")  # type: ignore[arg-type]
    with pytest.raises(GateError, match=r"lr=0\.0"):
        OverfitGate(lr=0.0)
    with pytest.raises(GateError, match="max_steps=5"):
        OverfitGate(max_steps=5)
    with pytest.raises(GateError, match="allow_no_grad"):
        OverfitGate(allow_no_grad="head.*")
    with pytest.raises(GateError, match="scalar"):
        OverfitGate().check(
            model, inputs, targets, nn.CrossEntropyLoss(reduction="none"), task="classification"
        )


class _RaisesOnItsFifthCall(nn.Module):
    """Runs four forward passes, then raises (a bug on a path the first steps do not reach)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 5:
            msg = "index 7 is out of bounds for dimension 0 with size 4"
            raise IndexError(msg)
        out: torch.Tensor = self.mlp(x)
        return out


def test_a_model_that_raises_mid_run_fails_the_running_check_and_skips_the_rest():
    """A crash is a failed gate naming the exception and its line, not a GateError (exit 2)."""
    inputs, targets = classification_batch()
    model = seeded_build(1, _RaisesOnItsFifthCall)
    report = OverfitGate().check(model, inputs, targets, nn.CrossEntropyLoss(), task="classification")
    assert not report.passed
    assert report.check(CheckName.INVENTORY).passed and report.check(CheckName.INIT_LOSS).passed
    overfit = report.check(CheckName.OVERFIT)
    assert not overfit.passed and not overfit.skipped
    assert overfit.detail.startswith("model(inputs) raised IndexError: index 7 is out of bounds")
    assert "(while overfitting the batch) at test_gate.py:" in overfit.detail
    assert overfit.detail.endswith("in forward")
    later = [
        c
        for c in report.checks
        if c.name not in {CheckName.INVENTORY, CheckName.INIT_LOSS, CheckName.OVERFIT}
    ]
    assert all(c.skipped and "raised IndexError in overfit" in c.detail for c in later)
    assert "Check overfit failed: model(inputs) raised IndexError" in report.diagnosis
    assert "Likely bug: the pipeline crashes on this batch" in report.diagnosis


def failed_checks(report: GateReport) -> set[CheckName]:
    return {check.name for check in report.checks if check.status is CheckStatus.FAILED}


def test_a_custom_loss_is_probed_for_what_it_takes_and_a_declaration_wins():
    """A lambda around F.mse_loss takes values: read as logits, memorised zeros (±1e-4) count as wrong."""
    case = replace(zoo_entry("mse_one_hot_classifier").build(), loss_fn=lambda out, y: F.mse_loss(out, y))
    assert run_case(case).passed
    assert run_case(replace(case, outputs=Outputs.VALUES)).passed
    wrong = run_case(replace(case, outputs=Outputs.LOGITS))  # what it was read as before the probe
    assert not wrong.passed and CheckName.OVERFIT in failed_checks(wrong)


def test_a_custom_loss_on_probabilities_is_read_at_one_half():
    """A sigmoid head under a lambda around F.binary_cross_entropy: probabilities, not logits."""
    inputs, labels = classification_batch()
    targets = (labels % 2).float().unsqueeze(1)
    model = seeded_build(10, lambda: nn.Sequential(MLP(out_features=1), nn.Sigmoid()))

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(out, y)

    report = OverfitGate().check(model, inputs, targets, loss, task="classification")
    assert report.passed, report.diagnosis
    assert "ln 2 (p = 0.5)" in report.check(CheckName.INIT_LOSS).detail  # (not E[y²] of a zero output)
    declared = OverfitGate().check(model, inputs, targets, loss, task="classification", outputs="logits")
    assert not declared.passed  # (a probability above 0 is a "1" when read as a logit)


@pytest.mark.parametrize(
    ("batch", "task", "outputs", "expected"),
    [
        ("classes", "classification", "values", "outputs='values' with integer class targets"),
        ("binary", "classification", "log_probabilities", "outputs='log_probabilities' with floating"),
        ("binary", "regression", "probabilities", "outputs='probabilities' with task='regression'"),
        ("classes", "classification", "scores", "outputs='scores': expected one of"),
    ],
)
def test_an_output_declaration_that_cannot_fit_the_targets_is_refused(
    batch: str, task: str, outputs: str, expected: str
):
    inputs, labels = classification_batch()
    targets = labels if batch == "classes" else (labels % 2).float().unsqueeze(1)
    width = 4 if batch == "classes" else 1
    model = seeded_build(1, lambda: MLP(out_features=width))
    loss = nn.CrossEntropyLoss() if batch == "classes" else nn.MSELoss()
    with pytest.raises(GateError, match=expected):
        OverfitGate().check(model, inputs, targets, loss, task=task, outputs=outputs)
