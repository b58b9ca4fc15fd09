"""``skewguard bench shadow``: the JSON line and its counts on a short run (not its figures)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from skewguard.cli import app
from skewguard.errors import ConfigError

REQUIRED = ("requests", "p50_off_ms", "p99_off_ms", "p50_on_ms", "p99_on_ms", "p99_overhead_ms", "dropped")


@pytest.mark.kafka
def test_bench_shadow_prints_one_json_line_whose_counts_add_up() -> None:
    result = CliRunner().invoke(app, ["bench", "shadow", "--json", "--requests", "300", "--rate", "2000"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert set(REQUIRED) <= set(figures)
    assert figures["requests"] == 300
    assert 0 < figures["p50_off_ms"] <= figures["p99_off_ms"]
    assert 0 < figures["p50_on_ms"] <= figures["p99_on_ms"]
    assert figures["p99_overhead_ms"] == pytest.approx(figures["p99_on_ms"] - figures["p99_off_ms"], abs=2e-4)
    # every timed request of the "on" arm is accounted for by the candidate
    outcomes = ("dropped", "candidate_scored", "candidate_expired", "candidate_errors")
    accounted = sum(figures[key] for key in outcomes)
    assert accounted == 300
    assert figures["candidate_errors"] == 0
    # both arms, warm-up included, reached the broker: one record per request
    assert figures["logged"] == 2 * (300 + figures["warmup_per_arm"])
    assert figures["log_failed"] == 0
    assert figures["candidate_slowdown"] >= 5.0


def test_bench_shadow_refuses_a_nonsense_rate() -> None:
    from skewguard.bench.shadow import bench_shadow

    with pytest.raises(ConfigError, match="rate"):
        bench_shadow(requests=10, rate_per_s=0.0)
