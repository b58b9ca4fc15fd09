"""Every zoo model gets the right verdict, for the right reason, with a diagnosis that says so."""

from __future__ import annotations

from functools import cache

import pytest

from skewguard.gate import CheckName, GateReport, Signature
from skewguard.gate.zoo import ZooEntry, run_case, verdict_is_correct, zoo

ENTRIES = zoo()
CORRECT = [e for e in ENTRIES if e.expected_pass]
BUGS = [e for e in ENTRIES if not e.expected_pass]


@cache
def report_for(name: str) -> GateReport:
    """Each zoo model is gated once per test session; several tests read the same report."""
    entry = next(e for e in ENTRIES if e.name == name)
    return run_case(entry.build())


def test_zoo_has_at_least_ten_distinct_bugs_and_five_correct_models():
    assert len(BUGS) >= 10
    assert len(CORRECT) >= 5
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)
    assert all(e.expected_failed_check is not None for e in BUGS)
    assert all(e.expected_failed_check is None for e in CORRECT)


def test_zoo_bugs_exercise_every_check():
    assert {e.expected_failed_check for e in BUGS} == set(CheckName)


@pytest.mark.parametrize("entry", BUGS, ids=lambda e: e.name)
def test_bug_fails_with_its_named_check_and_the_diagnosis_names_it(entry: ZooEntry):
    report = report_for(entry.name)
    assert entry.expected_failed_check is not None
    failed = {c.name for c in report.failed_checks}
    assert not report.passed
    assert entry.expected_failed_check in failed, report.diagnosis
    assert f"Check {entry.expected_failed_check.value} failed" in report.diagnosis
    assert "Likely bug" in report.diagnosis
    assert verdict_is_correct(entry, report)


@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e.name)
def test_correct_model_passes_every_check_that_ran(entry: ZooEntry):
    report = report_for(entry.name)
    assert report.passed, report.diagnosis
    assert report.failed_checks == []
    overfit = report.check(CheckName.OVERFIT)
    assert overfit.passed and not overfit.skipped
    assert 0 < report.steps <= 500
    assert report.diagnosis.startswith("The gate PASSED")
    assert verdict_is_correct(entry, report)


def test_causal_models_run_the_causal_check_and_others_skip_it():
    for name in (
        "gru_sequence_model",
        "causal_transformer_lm",
        "in_place_positions_transformer_lm",
        "cross_entropy_subclass_class_last",
    ):
        # Run and passed, not skipped: a tracing crash (an in-place write into a traced leaf) is a skip.
        for check in (CheckName.BATCH_INDEPENDENCE, CheckName.CAUSAL_DEPENDENCY):
            result = report_for(name).check(check)
            assert result.passed and not result.skipped, (name, result.detail)
    skipped = report_for("mlp_classifier").check(CheckName.CAUSAL_DEPENDENCY)
    assert skipped.skipped and not skipped.passed
    assert "Skipped (not passed): causal_dependency" in report_for("mlp_classifier").diagnosis


def test_sign_flip_is_caught_as_loss_below_floor_before_any_update():
    report = report_for("loss_sign_flip")
    assert Signature.BELOW_FLOOR in report.attempts[0].signatures
    assert report.attempts[0].steps == 0
    assert len(report.attempts) == 1  # no learning rate can fix a sign: the ladder is skipped
    assert "flipped sign" in report.diagnosis


def test_probabilities_fed_to_cross_entropy_plateau_is_named():
    report = report_for("probabilities_to_cross_entropy")
    assert Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY in report.attempts[0].signatures
    assert "log(1+(K-1)/e) = 0.7437" in report.diagnosis
    assert "softmax" in report.diagnosis
    assert "already probabilities" in report.check(CheckName.FAILURE_SIGNATURES).detail
    # The LR ladder was tried before the verdict.
    assert [round(a.lr / report.attempts[0].lr, 3) for a in report.attempts] == [1.0, 3.0, 0.333]


def test_broadcast_mse_plateau_is_named_with_shape_evidence_and_torch_warning():
    report = report_for("broadcast_mse")
    assert Signature.PLATEAU_BROADCAST_MSE in report.attempts[0].signatures
    assert "broadcast to (16, 16)" in report.check(CheckName.FAILURE_SIGNATURES).detail
    assert any("broadcasting" in w for w in report.warnings)


def test_nan_is_caught_at_the_first_forward_pass():
    report = report_for("nan_log_negative")
    assert report.attempts[0].signatures == [Signature.NON_FINITE]
    assert "NaN/Inf" in report.check(CheckName.GRADIENT_FLOW).detail


def test_missing_zero_grad_is_identified_as_doubling_gradients():
    detail = report_for("missing_zero_grad").check(CheckName.GRADIENT_FRESHNESS).detail
    assert "2.000x" in detail
    assert "zero_grad" in report_for("missing_zero_grad").diagnosis


def test_unregistered_and_unoptimised_parameters_are_named():
    assert "layers[0]" in report_for("plain_list_submodules").check(CheckName.INVENTORY).detail
    assert "encoder.0.weight" in report_for("optimizer_misses_params").check(CheckName.INVENTORY).detail
    assert "requires_grad=False" in report_for("frozen_parameters").check(CheckName.INVENTORY).detail
    assert "encoder.0.weight" in report_for("detached_encoder").check(CheckName.GRADIENT_FLOW).detail


def test_view_bugs_that_still_memorise_are_caught_by_dependency_checks_alone():
    # The silent part: both models memorise the batch, only the dependency checks see the bug.
    for name, check in (
        ("batch_mixing_view", CheckName.BATCH_INDEPENDENCE),
        ("float_token_batch_mixing", CheckName.BATCH_INDEPENDENCE),
        ("float_id_column_batch_mixing", CheckName.BATCH_INDEPENDENCE),
        ("token_scrambling_view", CheckName.CAUSAL_DEPENDENCY),
    ):
        report = report_for(name)
        assert report.check(CheckName.OVERFIT).passed
        assert [c.name for c in report.failed_checks] == [check]
