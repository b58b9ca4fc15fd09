"""What the demo showed: for each injected problem, when it was detected and by which check.

Read from what the monitor stored (window findings and alerts), never from what the demo knows it did:
a problem counts as detected only in a window of its phase where the expected check flagged every
expected subject, and any flag or alert in a clean window is listed as a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from skewguard.demo.scenario import Expectation, Phase, WindowPlan
from skewguard.results import Check, Finding, Stage, WindowResult
from skewguard.store import StoredAlert


@dataclass(frozen=True)
class Detection:
    """One row of the final table."""

    problem: str
    injected_at: str
    detected: bool
    detected_at: str
    check: str
    evidence: str = ""
    alert_at: str = ""
    phase: Phase | None = None
    detected_window: int | None = None
    also_flagged: tuple[str, ...] = ()


@dataclass(frozen=True)
class CleanFlag:
    """A flag (or alert) in a window that had nothing injected: a false alarm."""

    window: int
    stage: Stage
    check: str
    subject: str
    reason: str


@dataclass(frozen=True)
class DemoOutcome:
    """The table's rows, the false alarms and the windows the monitor never judged."""

    detections: tuple[Detection, ...]
    clean_flags: tuple[CleanFlag, ...]
    clean_windows: tuple[int, ...]
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Every problem detected by its check, nothing clean flagged, every window judged."""
        return all(d.detected for d in self.detections) and not self.clean_flags and not self.missing


def window_label(plan: WindowPlan) -> str:
    """``w3 (Jun 04)``: the window's index in the run and its simulated day."""
    return f"w{plan.index} ({plan.start:%b %d})"


def span_label(plans: Sequence[WindowPlan]) -> str:
    """``w3–w5 (Jun 04–Jun 06)`` for a run of windows (a single window is labelled alone)."""
    if len(plans) == 1:
        return window_label(plans[0])
    first, last = plans[0], plans[-1]
    return f"w{first.index}–w{last.index} ({first.start:%b %d}–{last.start:%b %d})"


def _flag_name(finding: Finding) -> str:
    return f"{finding.check.value}:{finding.subject}"


def assess(
    plans: Sequence[WindowPlan],
    serving: Sequence[WindowResult],
    labels: Sequence[WindowResult],
    alerts: Sequence[StoredAlert],
    expected_by_phase: Mapping[Phase, Expectation],
) -> DemoOutcome:
    """Match the stored window results and alerts against the plan (see the module docstring).

    ``expected_by_phase`` names the problem of each injected phase and the check that must catch it
    (:func:`skewguard.demo.scenario.expectations`).
    """
    by_start = {plan.start: plan for plan in plans}
    served = {r.key.start: r for r in serving if r.key.start in by_start}
    labelled = {r.key.start: r for r in labels if r.key.start in by_start}
    missing = [f"{window_label(p)}: no {stage} result" for p in plans for stage, results in
               (("serving", served), ("labels", labelled)) if p.start not in results]  # fmt: skip

    def alert_index(alert: StoredAlert) -> int | None:
        plan = by_start.get(alert.window_start.astimezone(dt.UTC))
        return None if plan is None else plan.index

    detections: list[Detection] = []  # (per phase: the first window whose flags catch its problem)
    for phase, expected in expected_by_phase.items():
        windows = [p for p in plans if p.phase is phase]
        if not windows:
            continue
        found: tuple[WindowPlan, list[Finding]] | None = None
        also: dict[str, None] = {}
        for plan in windows:
            results = [r for r in (served.get(plan.start), labelled.get(plan.start)) if r is not None]
            flagged = [f for r in results for f in r.flagged]
            hits = [
                f
                for f in flagged
                if f.check is expected.check and f.subject in expected.subjects and _catches(f)
            ]
            if found is None and {f.subject for f in hits} == set(expected.subjects):
                found = (plan, hits)
            for finding in flagged:
                if not (finding.check is expected.check and finding.subject in expected.subjects):
                    also.setdefault(_flag_name(finding), None)
        indices = {p.index for p in windows}
        alert_windows = sorted(
            i
            for a in alerts
            if a.check is expected.check and a.subject in expected.subjects
            for i in [alert_index(a)]
            if i is not None and min(indices) <= i <= max(indices)
        )
        check = f"{expected.check.value} on {', '.join(expected.subjects)}"
        detections.append(
            Detection(
                problem=expected.problem,
                injected_at=span_label(windows),
                detected=found is not None,
                detected_at=window_label(found[0]) if found else "not detected",
                check=check,
                evidence=" | ".join(f.reason for f in found[1]) if found else "",
                alert_at=window_label(plans[alert_windows[0]]) if alert_windows else "",
                phase=phase,
                detected_window=found[0].index if found else None,
                also_flagged=tuple(also),
            )
        )
    clean = [p for p in plans if p.phase is Phase.CLEAN]
    false_alarms: list[CleanFlag] = []
    for plan in clean:
        for result in (served.get(plan.start), labelled.get(plan.start)):
            if result is None:
                continue
            false_alarms += [
                CleanFlag(plan.index, result.stage, f.check.value, f.subject, f.reason)
                for f in result.flagged
            ]
    clean_indices = {p.index for p in clean}
    for alert in alerts:
        index = alert_index(alert)
        if index in clean_indices and index is not None:
            false_alarms.append(
                CleanFlag(index, Stage.SERVING, f"alert:{alert.check.value}", alert.subject, alert.message)
            )
    return DemoOutcome(
        detections=tuple(detections),
        clean_flags=tuple(false_alarms),
        clean_windows=tuple(sorted(clean_indices)),
        missing=tuple(missing),
    )


def _catches(finding: Finding) -> bool:
    """Whether a flagged finding of the expected check catches its phase's problem.

    A shadow candidate is caught as *worse* only by the label-joined comparison: the serving-stage
    shadow finding flags missing predictions (queue drops, deadlines on a loaded machine), which an
    under-trained candidate does not cause.
    """
    return finding.check is not Check.SHADOW or finding.detail.get("stage") == "labels"
