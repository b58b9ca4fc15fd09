"""Scale-out: three daemons in one group (one SIGKILLed) store the same windows as one daemon (labels too)."""

from __future__ import annotations

import pytest

from skewguard.bench.scale import bench_scale

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def test_three_daemons_with_a_kill_store_what_one_daemon_stores_labels_included() -> None:
    result = bench_scale(records=9_000, windows=3, partitions=8, labels=True, timeout_s=180.0)
    # Both stages of every window: counts, pairs, every verdict and every label metric to the last bit.
    assert result["identical_results"] is True
    assert result["windows"] == 3
    assert result["records"] == 9_000 + 64  # the stream plus one closing record per partition key
    # Every request's label joined exactly once, in both runs (identical), across the kill and rebalance.
    assert result["label_pairs"] == [3_000, 3_000, 3_000]
    assert result["rebalance_seconds"] is not None and result["rebalance_seconds"] > 0
    assert result["rps_1"] > 0 and result["rps_3"] > 0


def test_count_windows_come_out_the_same_from_three_daemons_with_a_kill() -> None:
    # 9 064 records over 8 partitions, windows of 3 200 (400 per partition): every partition fills the
    # first two; the rest of each partition waits in an open window. Some partitions may pass window 0
    # before the kill, none reaches the end of window 1 before the second half is produced.
    result = bench_scale(records=9_000, windows=3, partitions=8, count=3_200, timeout_s=180.0)
    assert result["window"] == "count, 3200 records"
    assert result["identical_results"] is True
    assert result["windows"] == 2
