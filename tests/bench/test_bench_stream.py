"""``bench_stream`` end to end on a tiny stream: every record reaches the store, every figure is real."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from features import FeatureKind
from skewguard.bench.stream import bench_stream, histograms, stream_feature_set
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
    "histogram_single_rps",
    "histogram_batch_rps",
)


@pytest.mark.kafka
def test_every_record_is_stored_and_every_rate_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from skewguard.bench import stream

    binned: list[int] = []  # messages the histogram side binned (the real function, counted)
    real = stream.histograms

    def histograms(objects: Any, names: Any, numeric: Any) -> Any:
        binned.append(len(objects))
        return real(objects, names, numeric)

    monkeypatch.setattr(stream, "histograms", histograms)
    result = bench_stream(records=RECORDS, batch_size=100, partitions=PARTITIONS, windows=WINDOWS, seed=3)
    # Every message of both topics was binned (the histogram side is timed once: repeats=1).
    assert sum(binned) == result["single_messages"] + result["batch_messages"]
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
        histogram = result[f"histogram_{kind}_rps"]
        rounding = 5e-4 + 0.5 / raw + 0.5 * histogram / raw**2
        assert result[f"histogram_{kind}_ratio"] == pytest.approx(histogram / raw, abs=rounding)
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


def test_the_histogram_side_counts_every_value_of_both_message_forms_alike() -> None:
    """The ceiling side must do the work it claims: every value of every feature, in either form."""
    import bisect
    import datetime as dt

    import numpy as np
    import orjson

    from skewguard.bench.stream import _EDGES, _draw, _layout
    from skewguard.records import ServingRecord, encode_record, encode_records

    n, width = 250, 20
    columns = _draw(width, n, np.random.default_rng(5))
    names = list(stream_feature_set(width).features)
    numeric = _layout(width)[0]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    records = [
        ServingRecord(f"r{i}", start, "m", "v1", "h", {k: columns[k][i] for k in names}, 0.5)
        for i in range(n)
    ]
    singles = histograms([orjson.loads(encode_record(r)) for r in records], names, numeric)
    edges = _EDGES.tolist()
    for packed in (True, False):  # numeric envelope columns as base64 floats, or as lists
        envelopes = [
            orjson.loads(encode_records(records[i : i + 100], packed=packed)) for i in range(0, n, 100)
        ]
        assert isinstance(envelopes[0]["columns"]["features"][numeric[0]], dict) is packed
        batched = histograms(envelopes, names, numeric)
        assert set(singles) == set(batched) == set(names)
        for name in names:
            values = columns[name]
            if name in numeric:  # null (NaN) in the last count, as searchsorted sorts NaN last
                expected = np.zeros(len(edges) + 1, dtype=np.int64)
                for value in values:
                    expected[len(edges) if value is None else bisect.bisect_left(edges, value)] += 1
                assert singles[name].tolist() == batched[name].tolist() == expected.tolist(), name
            else:
                assert dict(singles[name]) == dict(batched[name]) == dict(Counter(values)), name
