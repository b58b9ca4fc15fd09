"""The demo's verdict table: what counts as detected, what counts as a false alarm, what is missing."""

from __future__ import annotations

import datetime as dt

from skewguard.demo.outcome import assess, span_label, window_label
from skewguard.demo.scenario import (
    EXPECTATIONS,
    QUICK,
    Expectation,
    Phase,
    WindowPlan,
    expectations,
    plan_windows,
)
from skewguard.results import Check, Finding, Severity, Stage, WindowKey, WindowResult
from skewguard.store import StoredAlert

PLANS = plan_windows(QUICK, seed=0)


def plan_of(phase: Phase, position: int = 0) -> WindowPlan:
    return [p for p in PLANS if p.phase is phase][position]


def result(plan: WindowPlan, *findings: Finding, stage: Stage = Stage.SERVING) -> WindowResult:
    return WindowResult(WindowKey("ctr", plan.start, plan.end), 1_000, findings=findings, stage=stage)


def flag(check: Check, subject: str, reason: str = "flagged", **detail: object) -> Finding:
    return Finding(check, subject, True, reason=reason, detail=dict(detail))


def quiet(check: Check, subject: str) -> Finding:
    return Finding(check, subject, False)


def alert(plan: WindowPlan, check: Check, subject: str) -> StoredAlert:
    created = plan.end + dt.timedelta(hours=2)
    return StoredAlert(1, "ctr", check, subject, Severity.CRITICAL, "msg", {}, created, plan.start, plan.end)


def everything_judged(**overrides: list[Finding]) -> tuple[list[WindowResult], list[WindowResult]]:
    """Unflagged serving and label results for every planned window; ``w3=[...]`` puts findings in w3."""
    serving, labels = [], []
    for plan in PLANS:
        serving.append(result(plan, quiet(Check.DRIFT, "category"), *overrides.get(f"w{plan.index}", [])))
        labels.append(result(plan, quiet(Check.PERFORMANCE, "auc"), stage=Stage.LABELS))
    return serving, labels


def test_a_problem_is_detected_in_the_first_window_of_its_phase_where_its_check_flags() -> None:
    drift = [p.index for p in PLANS if p.phase is Phase.CATEGORY_DRIFT]
    serving, labels = everything_judged(
        **{
            f"w{drift[1]}": [flag(Check.DRIFT, "category", "moved")],
            f"w{drift[2]}": [flag(Check.DRIFT, "category")],
        }
    )
    outcome = assess(PLANS, serving, labels, [], EXPECTATIONS)
    row = next(d for d in outcome.detections if d.phase is Phase.CATEGORY_DRIFT)
    assert row.detected and row.detected_window == drift[1] and row.evidence == "moved"
    assert row.injected_at == span_label([p for p in PLANS if p.phase is Phase.CATEGORY_DRIFT])


def test_every_expected_subject_must_flag_in_the_same_window() -> None:
    timeout = plan_of(Phase.TIMEOUT)
    serving, labels = everything_judged(**{f"w{timeout.index}": [flag(Check.DEFAULTS, "clicks_7d")]})
    outcome = assess(PLANS, serving, labels, [], EXPECTATIONS)
    row = next(d for d in outcome.detections if d.phase is Phase.TIMEOUT)
    assert not row.detected and row.detected_at == "not detected"
    assert not outcome.ok


def test_the_right_subject_under_another_check_or_outside_the_phase_is_not_a_detection() -> None:
    tz = plan_of(Phase.TIMEZONE)
    drift = plan_of(Phase.CATEGORY_DRIFT)
    serving, labels = everything_judged(
        **{
            f"w{tz.index}": [flag(Check.DRIFT, "hour_of_day_local")],
            f"w{drift.index}": [flag(Check.SKEW, "hour_of_day_local")],
        }
    )
    outcome = assess(PLANS, serving, labels, [], EXPECTATIONS)
    row = next(d for d in outcome.detections if d.phase is Phase.TIMEZONE)
    assert not row.detected
    assert row.also_flagged == ("drift:hour_of_day_local",)


def test_flags_and_alerts_in_clean_windows_are_false_alarms_from_either_stage() -> None:
    first, second = [p for p in PLANS if p.phase is Phase.CLEAN]
    serving, labels = everything_judged(**{f"w{first.index}": [flag(Check.SPAN_DRIFT, "price")]})
    labels[second.index] = result(second, flag(Check.PERFORMANCE, "auc", "degraded"), stage=Stage.LABELS)
    alerts = [
        alert(second, Check.LABEL_DRIFT, "label"),
        alert(plan_of(Phase.TIMEZONE), Check.SKEW, "hour_of_day_local"),
    ]
    outcome = assess(PLANS, serving, labels, alerts, EXPECTATIONS)
    found = {(f.window, f.stage, f.check, f.subject) for f in outcome.clean_flags}
    assert found == {
        (first.index, Stage.SERVING, "span_drift", "price"),
        (second.index, Stage.LABELS, "performance", "auc"),
        (second.index, Stage.SERVING, "alert:label_drift", "label"),
    }
    assert not outcome.ok


def test_all_detected_and_quiet_clean_windows_is_ok_and_alerts_are_dated_by_their_window() -> None:
    phases = (Phase.TIMEZONE, Phase.CATEGORY_DRIFT, Phase.TIMEOUT, Phase.SHADOW)
    tz, drift, timeout, shadow = (plan_of(p) for p in phases)
    serving, labels = everything_judged(
        **{
            f"w{tz.index}": [flag(Check.SKEW, "hour_of_day_local")],
            f"w{drift.index}": [flag(Check.DRIFT, "category")],
            f"w{timeout.index}": [flag(Check.DEFAULTS, "clicks_7d"), flag(Check.DEFAULTS, "clicks_24h")],
        }
    )
    labels[shadow.index] = result(
        shadow, flag(Check.SHADOW, "v2", "worse", stage="labels"), stage=Stage.LABELS
    )
    later = plan_of(Phase.TIMEOUT, 1)
    alerts = [alert(later, Check.DEFAULTS, "clicks_24h")]
    outcome = assess(PLANS, serving, labels, alerts, expectations("v2"))
    assert outcome.ok and outcome.missing == ()
    assert [d.detected_window for d in outcome.detections] == [p.index for p in (tz, drift, timeout, shadow)]
    row = next(d for d in outcome.detections if d.phase is Phase.TIMEOUT)
    assert row.alert_at == window_label(later)


def test_a_window_the_monitor_never_judged_is_reported_missing() -> None:
    serving, labels = everything_judged()
    outcome = assess(PLANS, serving[:-1], labels, [], {})
    assert outcome.missing == (f"{window_label(PLANS[-1])}: no serving result",)
    assert not outcome.ok


def test_expectations_name_the_shadow_candidate_as_the_subject() -> None:
    shadow = expectations("v7")[Phase.SHADOW]
    assert shadow == Expectation(shadow.problem, Check.SHADOW, ("v7",)) and "v7" in shadow.problem


def test_a_shadow_candidate_missing_predictions_is_not_caught_as_worse() -> None:
    # The serving-stage shadow flag counts missing predictions (drops, deadlines on a loaded machine):
    # an under-trained candidate is caught only by the label-joined comparison.
    shadow = plan_of(Phase.SHADOW)
    serving, labels = everything_judged(**{f"w{shadow.index}": [flag(Check.SHADOW, "v2", stage="serving")]})
    row = next(
        d
        for d in assess(PLANS, serving, labels, [], expectations("v2")).detections
        if d.phase is Phase.SHADOW
    )
    assert not row.detected
    labels[shadow.index] = result(shadow, flag(Check.SHADOW, "v2", stage="labels"), stage=Stage.LABELS)
    row = next(
        d
        for d in assess(PLANS, serving, labels, [], expectations("v2")).detections
        if d.phase is Phase.SHADOW
    )
    assert row.detected


def test_an_alert_after_its_phase_is_not_dated_as_the_phases_alert() -> None:
    drift = [p for p in PLANS if p.phase is Phase.CATEGORY_DRIFT]
    after = next(p for p in PLANS if p.index > drift[-1].index)
    serving, labels = everything_judged(**{f"w{drift[0].index}": [flag(Check.DRIFT, "category")]})
    outcome = assess(PLANS, serving, labels, [alert(after, Check.DRIFT, "category")], EXPECTATIONS)
    row = next(d for d in outcome.detections if d.phase is Phase.CATEGORY_DRIFT)
    assert row.detected and row.alert_at == ""
