"""``bench_stream`` end to end on a tiny stream: every record reaches the store, every figure is real."""

from __future__ import annotations

from typing import Any

import pytest

from features import FeatureKind
from skewguard.bench.stream import bench_stream, stream_feature_set
from skewguard.errors import ConfigError

RECORDS = 1_000
WINDOWS = 2
PARTITIONS = 2

FIGURES = (
    "raw_single_rps",
    "daemon_single_rps",
    "raw_batch_rps",
    "daemon_batch_rps",
    "orjson_single_rps",
    "orjson_batch_rps",
)


@pytest.mark.kafka
def test_every_record_is_stored_and_every_rate_is_measured() -> None:
    result = bench_stream(records=RECORDS, batch_size=100, partitions=PARTITIONS, windows=WINDOWS, seed=3)
    assert result["records"] == RECORDS
    assert result["closing_records"] == PARTITIONS  # one per partition seals the last window
    assert result["single_messages"] == RECORDS + PARTITIONS
    assert result["batch_messages"] == RECORDS // 100 + PARTITIONS
    # What makes the daemon's time end-to-end: each run stored every window, holding every record.
    assert result["stored_windows"] == {"single": WINDOWS, "batch": WINDOWS}
    assert result["stored_records"] == {"single": RECORDS, "batch": RECORDS}
    for key in FIGURES:
        assert result[key] > 0, key
    for kind in ("single", "batch"):
        raw, daemon = result[f"raw_{kind}_rps"], result[f"daemon_{kind}_rps"]
        ratio = daemon / raw
        # the ratio is rounded to 3 decimals, from rates that are themselves rounded to whole records/s
        rounding = 5e-4 + 0.5 / raw + 0.5 * daemon / raw**2
        assert result[f"{kind}_ratio"] == pytest.approx(ratio, abs=rounding)
        assert result[f"{kind}_ratio"] > 0
        # A rate is records over the seconds reported next to it.
        assert result[f"raw_{kind}_rps"] == pytest.approx(
            RECORDS / result["seconds"][f"raw_{kind}"], rel=0.01
        )
        # The daemon's phases are parts of its timed run: each was spent, and together they fit in it.
        phases = result["daemon_phase_seconds"][kind]
        assert set(phases) == {"poll", "fold", "checkpoint", "finalise"}
        assert all(spent > 0 for spent in phases.values()), phases
        assert sum(phases.values()) <= result["seconds"][f"daemon_{kind}"] * 1.001
    assert result["raw_inputs"] is False
    assert 0 < result["peak_rss_mb"] < 2_000


def test_the_synthetic_feature_set_has_the_requested_width_and_every_kind() -> None:
    feature_set = stream_feature_set(20)
    kinds = [f.kind for f in feature_set.features.values()]
    assert len(kinds) == 20
    assert kinds.count(FeatureKind.BOOLEAN) == 1
    assert kinds.count(FeatureKind.CATEGORICAL) == 5
    assert kinds.count(FeatureKind.NUMERIC) == 14


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"records": 1_050}, "multiple of batch_size"),
        ({"records": 200, "partitions": 4}, "at least one 100-record message per partition"),
        ({"repeats": 0}, "repeats must be >= 1"),
        ({"features": 4}, "features must be >= 5"),
    ],
)
def test_impossible_settings_are_refused_early(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bench_stream(**arguments)
