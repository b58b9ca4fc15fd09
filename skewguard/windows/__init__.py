"""Event-time windows: per-partition state, watermarks, lateness, and mergeable window accumulators."""

from __future__ import annotations

from skewguard.records import from_us, to_us  # one home of the epoch-microsecond conversion
from skewguard.windows.accumulator import ShadowTally, SkewTally, WindowAccumulator, merge_examples
from skewguard.windows.partition import LatePolicy, PartitionWindows, WindowId, WindowSpec

__all__ = [
    "LatePolicy",
    "PartitionWindows",
    "ShadowTally",
    "SkewTally",
    "WindowAccumulator",
    "WindowId",
    "WindowSpec",
    "from_us",
    "merge_examples",
    "to_us",
]
