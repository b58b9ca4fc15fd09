"""Event-time tumbling windows of one partition: assignment, watermark, sealing, lateness.

Each partition keeps its own watermark (the largest event time it has seen, minus the allowed
lateness). A window ``[start, end)`` is *sealed* in a partition once that watermark reaches ``end``:
its accumulator no longer changes, and a record that still belongs to it is *late* — counted (with
the window it arrived in), not folded. Everything here depends only on the order of records within
the partition, never on wall clock time or on how the stream was split into polls, so replaying a
partition from a checkpoint rebuilds exactly the same state (the daemon's exactly-once promise rests
on that).

A window is *finalised* (judged and stored) elsewhere, once every partition has sealed it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from skewguard.windows.accumulator import WindowAccumulator

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROS = dt.timedelta(microseconds=1)

#: Window key: (model name, window start in epoch microseconds).
WindowId = tuple[str, int]


class LatePolicy(StrEnum):
    """What to do with a record whose window is already sealed in its partition.

    Whatever the policy, a late record is counted (``late_records`` of the window it *arrived* in, see
    :meth:`PartitionWindows.classify`) and its own sealed window is never changed, so a window's judged
    statistics never depend on how late the stragglers were.
    """

    DROP = "drop"
    """Count it, do not fold it anywhere. The default: the sealed window's statistics stay those of the
    records that arrived in time, and nothing else is distorted by stragglers."""
    DEAD_LETTER = "dead_letter"
    """As DROP, and also publish the record to the dead-letter topic with reason ``late``, so a batch job
    can still account for it (delivery is at-least-once: a replay after a crash publishes it again)."""
    ARRIVAL = "arrival"
    """Count it and fold it into the window it arrived in (processing order instead of event time):
    for monitors that care more about every request being seen than about event-time purity."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling event-time windows of ``size``, sealed ``lateness`` after their end."""

    size: dt.timedelta
    lateness: dt.timedelta = dt.timedelta(0)
    late_policy: LatePolicy = LatePolicy.DROP

    def __post_init__(self) -> None:
        if self.size <= dt.timedelta(0):
            msg = f"window size must be positive, got {self.size}"
            raise ValueError(msg)
        if self.lateness < dt.timedelta(0):
            msg = f"allowed lateness must not be negative, got {self.lateness}"
            raise ValueError(msg)

    @property
    def size_us(self) -> int:
        """Window length in microseconds."""
        return self.size // _MICROS

    @property
    def lateness_us(self) -> int:
        """Allowed lateness in microseconds."""
        return self.lateness // _MICROS

    def start_of(self, event_us: int) -> int:
        """Start (epoch µs) of the window holding ``event_us``; windows are aligned to the epoch."""
        return event_us - event_us % self.size_us


def to_us(instant: dt.datetime) -> int:
    """Aware datetime → epoch microseconds."""
    return (instant - _EPOCH) // _MICROS


def from_us(value: int) -> dt.datetime:
    """Epoch microseconds → aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=value)


@dataclass
class PartitionWindows:
    """The open and sealed windows of one partition, and its watermark."""

    spec: WindowSpec
    #: Largest event time seen in this partition (epoch µs); None before the first record.
    max_event_us: int | None = None
    open: dict[WindowId, WindowAccumulator] = field(default_factory=dict)
    sealed: dict[WindowId, WindowAccumulator] = field(default_factory=dict)
    #: Checkpoint form of sealed windows: a sealed accumulator never changes again, and a window can stay
    #: sealed (waiting for other partitions) through many checkpoints, so it is serialised once.
    _sealed_dicts: dict[WindowId, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def watermark_us(self) -> int | None:
        """Event time up to which this partition is complete."""
        return None if self.max_event_us is None else self.max_event_us - self.spec.lateness_us

    def classify(
        self, event_us: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Window starts, lateness and arrival windows of a batch of records, given in partition order.

        Record ``i`` is late when its window ends at or before the watermark as it stood just before
        ``i`` (the running maximum of the event times before it). Deciding this per record, rather than
        per batch, keeps the outcome independent of how polls happened to split the stream.

        A late record is reported with its *arrival* window: the window holding that running maximum,
        which is always still open here. Its own window may already be judged and stored, and whether
        it is depends on timing; the arrival window depends only on the partition's order, so late counts
        come out the same in every run.
        """
        starts = event_us - event_us % self.spec.size_us
        if len(event_us) == 0:
            return starts, np.zeros(0, dtype=bool), starts
        before = np.maximum.accumulate(np.concatenate([[self._max_or_min()], event_us[:-1]]))
        late = starts + self.spec.size_us <= before - self.spec.lateness_us
        arrival = before - before % self.spec.size_us
        return starts, late, arrival

    def _max_or_min(self) -> int:
        return int(np.iinfo(np.int64).min // 2) if self.max_event_us is None else self.max_event_us

    def accumulator(self, key: WindowId, new: Callable[[], WindowAccumulator]) -> WindowAccumulator:
        """The open accumulator of ``key``, created empty on first use."""
        accumulator = self.open.get(key)
        if accumulator is None:
            accumulator = self.open[key] = new()
        return accumulator

    def advance(self, event_us: int) -> list[WindowId]:
        """Move the watermark to a (batch's largest) event time; returns the windows this sealed."""
        if self.max_event_us is not None and event_us <= self.max_event_us:
            return []
        self.max_event_us = event_us
        watermark = event_us - self.spec.lateness_us
        closing = [key for key in self.open if key[1] + self.spec.size_us <= watermark]
        for key in closing:
            self.sealed[key] = self.open.pop(key)
        return closing

    def drop(self, keys: Iterable[WindowId]) -> None:
        """Forget sealed windows that have been finalised."""
        for key in keys:
            self.sealed.pop(key, None)
            self._sealed_dicts.pop(key, None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready checkpoint form."""
        cache = self._sealed_dicts
        for key in self.sealed.keys() - cache.keys():
            cache[key] = self.sealed[key].to_dict()
        return {
            "max_event_us": self.max_event_us,
            "open": [
                {"model": m, "start": s, "acc": acc.to_dict()} for (m, s), acc in sorted(self.open.items())
            ],
            "sealed": [{"model": m, "start": s, "acc": cache[m, s]} for m, s in sorted(self.sealed)],
        }

    @classmethod
    def from_dict(cls, spec: WindowSpec, data: dict[str, Any]) -> PartitionWindows:
        """Restore from :meth:`to_dict` output."""

        def windows(items: list[dict[str, Any]]) -> dict[WindowId, WindowAccumulator]:
            return {(str(w["model"]), int(w["start"])): WindowAccumulator.from_dict(w["acc"]) for w in items}

        max_event = data.get("max_event_us")
        return cls(
            spec=spec,
            max_event_us=None if max_event is None else int(max_event),
            open=windows(data.get("open", [])),
            sealed=windows(data.get("sealed", [])),
        )
