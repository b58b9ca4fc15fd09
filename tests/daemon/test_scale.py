"""Scale-out: three daemons in one group (one SIGKILLed) store the same windows as one daemon."""

from __future__ import annotations

import pytest

from skewguard.bench.scale import bench_scale

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def test_three_daemons_with_a_kill_store_what_one_daemon_stores() -> None:
    result = bench_scale(records=9_000, windows=3, partitions=8, timeout_s=180.0)
    assert result["identical_results"] is True
    assert result["windows"] == 3
    assert result["records"] == 9_000 + 64  # the stream plus one closing record per partition key
    assert result["rebalance_seconds"] is not None and result["rebalance_seconds"] > 0
    assert result["rps_1"] > 0 and result["rps_3"] > 0
