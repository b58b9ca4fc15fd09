"""``skewguard demo --quick`` end to end: real broker, pipeline and daemon; verdicts read back from the store.

The demo runs once per module (about half a minute); each test then checks one claim against what the
monitor stored, not against the demo's own summary of it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from skewguard.cli import app
from skewguard.commands.common import EXIT_OK, EXIT_USAGE
from skewguard.demo.run import DRIFT_HTML, EFFECTS_PNG, GROUP, MODELS_DIR, STORE_FILE, SUMMARY_JSON
from skewguard.demo.scenario import QUICK, Phase, WindowPlan, plan_windows
from skewguard.demo.traffic import generate_requests
from skewguard.pipeline import ModelRegistry, VersionStatus
from skewguard.results import Check, Finding, Stage, WindowResult
from skewguard.store import Store, StoredAlert

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@dataclass(frozen=True)
class DemoRun:
    out: Path
    exit_code: int
    output: str
    summary: dict[str, Any]
    plans: list[WindowPlan]
    serving: dict[dt.datetime, WindowResult]
    labels: dict[dt.datetime, WindowResult]
    alerts: list[StoredAlert]

    def windows(self, phase: Phase) -> list[WindowPlan]:
        return [p for p in self.plans if p.phase is phase]

    def flagged(self, plan: WindowPlan) -> list[Finding]:
        return [f for results in (self.serving, self.labels) for f in results[plan.start].flagged]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo") / "skewguard-demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)], terminal_width=160)
    store = Store(f"sqlite:///{out / STORE_FILE}", create=False)
    try:
        serving = {w.result.key.start: w.result for w in store.windows(group=GROUP, limit=1000)}
        labels = {
            w.result.key.start: w.result for w in store.windows(group=GROUP, stage=Stage.LABELS, limit=1000)
        }
        alerts = store.alerts(open_only=False, limit=1000)
    finally:
        store.close()
    return DemoRun(
        out=out,
        exit_code=result.exit_code,
        output=result.output,
        summary=json.loads((out / SUMMARY_JSON).read_text()),
        plans=plan_windows(QUICK, seed=0),
        serving=serving,
        labels=labels,
        alerts=alerts,
    )


def test_quick_demo_exits_0_and_every_window_is_judged_on_serving_and_on_labels(demo_run: DemoRun) -> None:
    assert demo_run.exit_code == EXIT_OK, demo_run.output
    starts = [p.start for p in demo_run.plans]
    # The next-day requests that close the last window are never judged themselves: exactly the plan.
    assert sorted(demo_run.serving) == starts
    assert sorted(demo_run.labels) == starts
    assert all(demo_run.serving[s].records == QUICK.window_records for s in starts)
    assert all(demo_run.labels[s].context["pairs"] == QUICK.window_records for s in starts)
    assert demo_run.summary["ok"] is True and demo_run.summary["records_dropped"] == 0
    assert "every injected problem detected, nothing clean flagged" in demo_run.output


def test_nothing_is_flagged_or_alerted_in_the_clean_windows(demo_run: DemoRun) -> None:
    clean = demo_run.windows(Phase.CLEAN)
    assert clean
    for plan in clean:
        assert demo_run.flagged(plan) == [], plan
        # Judged, not skipped: drift, prediction drift and the label-joined metrics all ran.
        findings = (*demo_run.serving[plan.start].findings, *demo_run.labels[plan.start].findings)
        checks = {f.check for f in findings}
        assert {Check.DRIFT, Check.PREDICTION_DRIFT, Check.SKEW, Check.PERFORMANCE} <= checks
    clean_starts = {p.start for p in clean}
    assert [a for a in demo_run.alerts if a.window_start in clean_starts] == []


def test_timezone_hotfix_is_caught_as_skew_on_the_local_hour_with_the_exact_mismatch_count(
    demo_run: DemoRun,
) -> None:
    (plan,) = demo_run.windows(Phase.TIMEZONE)
    skew = {f.subject: f for f in demo_run.serving[plan.start].findings if f.check is Check.SKEW}
    assert skew["hour_of_day_local"].flagged
    assert [name for name, f in skew.items() if f.flagged] == ["hour_of_day_local"]
    # Recompute which requests the hotfixed replica served (the handler's draw), and which of those
    # differ: every user outside UTC (no zone of the demo is at UTC+0 in June except UTC itself).
    frame = generate_requests(
        QUICK.window_records, seed=plan.seed, start=plan.start, span=plan.end - plan.start, shape=plan.shape
    )
    hotfixed = np.random.default_rng(plan.seed + 7).random(len(frame)) < plan.hotfix_share
    expected = int((hotfixed & (frame["user_tz"] != "UTC").to_numpy()).sum())
    assert skew["hour_of_day_local"].detail["mismatched"] == expected
    assert (Check.SKEW, "hour_of_day_local") in {(a.check, a.subject) for a in demo_run.alerts}


def test_gradual_category_drift_is_caught_as_drift_on_category_within_its_phase(demo_run: DemoRun) -> None:
    drifted = demo_run.windows(Phase.CATEGORY_DRIFT)
    detected = [
        p.index
        for p in drifted
        if any(f.check is Check.DRIFT and f.subject == "category" for f in demo_run.flagged(p))
    ]
    assert detected, "no drift window flagged category"
    assert detected[-1] == drifted[-1].index  # the strongest shift is always caught
    row = next(r for r in demo_run.summary["rows"] if r["phase"] == Phase.CATEGORY_DRIFT.value)
    assert row["detected_window"] == detected[0] and row["check"] == "drift on category"


def test_history_timeouts_are_caught_as_defaults_on_both_click_features(demo_run: DemoRun) -> None:
    for plan in demo_run.windows(Phase.TIMEOUT):
        result = demo_run.serving[plan.start]
        defaults = {f.subject: f for f in result.findings if f.check is Check.DEFAULTS}
        assert defaults["clicks_7d"].flagged and defaults["clicks_24h"].flagged
        # About the planned share of lookups missed the deadline (a healthy one may miss it on a busy box).
        assert defaults["clicks_7d"].effect == pytest.approx(plan.timeout_share, abs=0.08)
    alerted = {(a.check, a.subject) for a in demo_run.alerts}
    assert {(Check.DEFAULTS, "clicks_7d"), (Check.DEFAULTS, "clicks_24h")} <= alerted


def test_seeded_model_bug_is_stopped_by_the_gate_and_leaves_no_model_directory(demo_run: DemoRun) -> None:
    gate_row = demo_run.summary["rows"][0]
    assert gate_row["detected"] and gate_row["check"] == "gate: gradient_flow"
    assert "encoder.0.weight" in gate_row["evidence"]
    registry = ModelRegistry(demo_run.out / MODELS_DIR, "ctr").load()
    # v1 (production) and the shadow candidate v2; the buggy run registered nothing.
    assert [(e.version, e.status) for e in registry.versions] == [
        ("v1", VersionStatus.PRODUCTION),
        ("v2", VersionStatus.CANDIDATE),
    ]


def test_under_trained_shadow_candidate_is_judged_worse_on_the_same_requests(demo_run: DemoRun) -> None:
    for plan in demo_run.windows(Phase.SHADOW):
        served = [f for f in demo_run.serving[plan.start].findings if f.check is Check.SHADOW]
        assert [f.subject for f in served] == ["v2"] and not served[0].flagged  # nothing dropped
        assert served[0].detail["compared"] == QUICK.window_records
        judged = [f for f in demo_run.labels[plan.start].findings if f.check is Check.SHADOW]
        assert judged[0].flagged and judged[0].detail["ci_high"] < 0
    row = next(r for r in demo_run.summary["rows"] if r["phase"] == Phase.SHADOW.value)
    assert row["evidence"].startswith("verdict REJECT")


def test_report_files_are_written_and_readable(demo_run: DemoRun) -> None:
    html = (demo_run.out / DRIFT_HTML).read_text()
    assert "<html" in html and "category" in html
    for name in (EFFECTS_PNG, "effects-defaults.png"):
        image = imread(demo_run.out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert str(demo_run.out / name) in demo_run.output.replace("\n", "")


def test_demo_refuses_an_output_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    keep = tmp_path / "models" / "mine.pt"
    keep.write_bytes(b"not the demo's")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "did not write" in result.output
    assert keep.read_bytes() == b"not the demo's"
