"""OverfitGate as a whole: the report, its JSON/PNG forms, reproducibility and side effects."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    TrainStep,
    render_report_table,
    smoothed_cross_entropy_floor,
)
from skewguard.gate.gate import traceable_copy
from skewguard.gate.zoo import (
    MLP,
    FrozenTeacherResidualMLP,
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


class _NumpySquashed(nn.Module):
    """Squashes its inputs with numpy first: fine in training, where the inputs need no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squashed = torch.from_numpy(np.tanh(x.numpy()))
        out: torch.Tensor = self.mlp(squashed)
        return out


def test_a_crash_only_the_gates_tracing_causes_skips_the_check_instead_of_failing_the_model():
    """The traced inputs require grad, so .numpy() raises there alone: not the model's bug, nothing proven."""
    inputs, targets = classification_batch()
    report = OverfitGate().check(
        seeded_build(1, _NumpySquashed), inputs, targets, nn.CrossEntropyLoss(), task="classification"
    )
    assert report.passed, report.diagnosis
    independence = report.check(CheckName.BATCH_INDEPENDENCE)
    assert independence.skipped and not independence.passed
    assert independence.detail.startswith(
        "not judged: traced for this check, model(inputs) raised RuntimeError"
    )
    assert (
        "at test_gate.py:" in independence.detail and "while the model runs untraced" in independence.detail
    )
    assert report.check(CheckName.DETERMINISM).passed  # (the checks after it ran)


def test_a_float64_model_and_its_float64_teacher_in_a_plain_list_are_traced_in_float64():
    """.float() on the copy missed the teacher kept out of parameters(): float32 inputs crashed it."""
    inputs, targets = classification_batch()
    model = seeded_build(1, FrozenTeacherResidualMLP).double()
    assert isinstance(model, FrozenTeacherResidualMLP)
    model._teacher[0].double()  # (.double() does not reach it either: the user converts it by hand)
    report = OverfitGate().check(
        model, inputs.double(), targets, nn.CrossEntropyLoss(), task="classification"
    )
    assert report.passed, report.diagnosis
    independence = report.check(CheckName.BATCH_INDEPENDENCE)
    assert independence.passed and not independence.skipped, independence.detail


def test_the_traceable_copy_upcasts_half_precision_only_and_is_in_eval_mode():
    half = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).half()
    model, inputs = traceable_copy(half, torch.zeros(2, 3, dtype=torch.float16))
    assert {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()} == {
        torch.float32
    }
    assert inputs.dtype == torch.float32 and not model.training
    assert next(half.parameters()).dtype == torch.float16  # (the caller's model untouched)
    double = nn.Linear(3, 2).double()
    model, inputs = traceable_copy(double, torch.zeros(2, 3, dtype=torch.float64))
    assert next(model.parameters()).dtype == torch.float64 and inputs.dtype == torch.float64


def _step_that_breaks_on_a_second_zero_lr_step() -> TrainStep:
    """The usual step, except that it raises the second time one optimizer runs it at lr=0.

    Stands in for any bug on a path that only the gate's second probe step reaches.
    """
    probed: set[int] = set()

    def step(
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
    ) -> torch.Tensor:
        if optimizer.param_groups[0]["lr"] == 0.0:
            if id(optimizer) in probed:
                msg = "step state reused"
                raise RuntimeError(msg)
            probed.add(id(optimizer))
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        torch.autograd.backward(loss)
        optimizer.step()
        return loss

    return step


def test_a_crash_in_the_second_zero_lr_step_keeps_the_gradient_flow_finding_of_the_first():
    inputs, targets = classification_batch()
    report = OverfitGate().check(
        seeded_build(1, MLP),
        inputs,
        targets,
        nn.CrossEntropyLoss(),
        task="classification",
        train_step=_step_that_breaks_on_a_second_zero_lr_step(),
    )
    flow = report.check(CheckName.GRADIENT_FLOW)
    assert flow.passed and "received a non-zero, finite gradient" in flow.detail
    freshness = report.check(CheckName.GRADIENT_FRESHNESS)
    assert not freshness.passed and not freshness.skipped
    assert freshness.detail.startswith("train_step raised RuntimeError: step state reused")
    assert report.check(CheckName.BATCH_INDEPENDENCE).detail.endswith("in gradient_freshness")


class _ServingNorm(nn.BatchNorm1d):
    """Batch statistics in training; the eval-mode (serving) path was never run, and it crashes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None
        return (x - self.running_mean[:4]) / self.running_var.sqrt()  # BUG: half of the statistics


class _PerStepRegressor(nn.Module):
    """(N, T, 3) -> (N, T): a per-position MLP with the serving-broken norm over all positions."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 64)
        self.norm = _ServingNorm(64)
        self.out = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.proj(x).reshape(-1, 64)).reshape(*x.shape[:2], 64)
        out: torch.Tensor = self.out(torch.relu(hidden)).squeeze(-1)
        return out


def test_a_crash_in_the_causal_check_keeps_the_batch_independence_finding_already_made():
    """An eval-mode crash is still the model's (it raises untraced too), and what ran before it stays."""
    inputs = torch.randn(8, 5, 3, generator=torch.Generator().manual_seed(0))
    targets = inputs.sum(dim=-1)
    report = OverfitGate().check(
        seeded_build(1, _PerStepRegressor),
        inputs,
        targets,
        nn.MSELoss(),
        task="regression",
        causal=True,
        allow_batch_coupling=True,  # (BatchNorm in train mode couples the examples, on purpose)
        pretrained=True,
    )
    assert report.check(CheckName.OVERFIT).passed, report.diagnosis
    independence = report.check(CheckName.BATCH_INDEPENDENCE)
    assert independence.skipped and independence.detail.startswith("allowed by the caller")
    causal = report.check(CheckName.CAUSAL_DEPENDENCY)
    assert not causal.passed and not causal.skipped
    assert causal.detail.startswith("model(inputs) raised RuntimeError: The size of tensor a (64)")
    assert "(in eval mode, for the causality check) at test_gate.py:" in causal.detail
    assert report.check(CheckName.DETERMINISM).detail.endswith("in causal_dependency")


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
