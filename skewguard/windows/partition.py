"""Windows of one partition: event-time tumbling windows (the default) or count windows.

**Event-time windows.**
Each partition keeps its own watermark (the largest event time it has seen, minus the allowed
lateness). A window ``[start, end)`` is *sealed* in a partition once that watermark reaches ``end``:
its accumulator no longer changes, and a record that still belongs to it is *late* — counted (with
the window it arrived in), not folded. Everything here depends only on the order of records within
the partition, never on wall clock time or on how the stream was split into polls, so replaying a
partition from a checkpoint rebuilds exactly the same state (the daemon's exactly-once promise rests
on that).

**Count windows** (``WindowSpec.count``): window ``k`` of a model holds, from each of the topic's
``partitions`` serving partitions, that partition's records number ``k*share`` to ``(k+1)*share - 1`` of
the model (in offset order; ``share = ceil(count / partitions)``), so a window holds about ``count``
records. Numbering by offset order within the partition is again independent of poll timing, so
replays rebuild the same windows; nothing is ever late. A partition seals window ``k`` once it has
folded ``(k+1)*share`` records of the model.

A window is *finalised* (judged and stored) elsewhere, once every partition has sealed it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from skewguard.windows.accumulator import WindowAccumulator

_MICROS = dt.timedelta(microseconds=1)

#: Window key: (model name, window start in epoch microseconds) for event-time windows, (model name,
#: window number) for count windows.
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
    """Tumbling event-time windows of ``size``, sealed ``lateness`` after their end; or count windows.

    With ``count`` set, windows hold ``count`` records of a model (``share`` from each of ``partitions``
    partitions) and ``size`` is unused; ``lateness`` still bounds how late a label may be.
    """

    size: dt.timedelta
    lateness: dt.timedelta = dt.timedelta(0)
    late_policy: LatePolicy = LatePolicy.DROP
    count: int | None = None
    partitions: int = 1

    def __post_init__(self) -> None:
        if self.size <= dt.timedelta(0):
            msg = f"window size must be positive, got {self.size}"
            raise ValueError(msg)
        if self.lateness < dt.timedelta(0):
            msg = f"allowed lateness must not be negative, got {self.lateness}"
            raise ValueError(msg)
        if self.count is not None and self.count < 1:
            msg = f"window count must be a positive number of records, got {self.count}"
            raise ValueError(msg)
        if self.partitions < 1:
            msg = f"partitions must be at least 1, got {self.partitions}"
            raise ValueError(msg)

    @property
    def counted(self) -> bool:
        """Count windows rather than event-time windows."""
        return self.count is not None

    @property
    def share(self) -> int:
        """Records of a model each partition puts into one count window."""
        if self.count is None:
            msg = "share is defined for count windows only"
            raise ValueError(msg)
        return math.ceil(self.count / self.partitions)

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


@dataclass
class PartitionWindows:
    """The open and sealed windows of one partition, and its watermark."""

    spec: WindowSpec
    #: Largest event time seen in this partition (epoch µs); None before the first record.
    max_event_us: int | None = None
    open: dict[WindowId, WindowAccumulator] = field(default_factory=dict)
    sealed: dict[WindowId, WindowAccumulator] = field(default_factory=dict)
    #: Count windows: records of each model numbered so far (the next record's number).
    counts: dict[str, int] = field(default_factory=dict)
    #: Event-time windows already stored that this partition has not passed (it was idle when they were
    #: judged): a record that still falls into one is late, never folded into a window that is stored.
    stored: set[WindowId] = field(default_factory=set)
    #: Checkpoint form of sealed windows: a sealed accumulator never changes again, and a window can stay
    #: sealed (waiting for other partitions) through many checkpoints, so it is serialised once.
    _sealed_dicts: dict[WindowId, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def watermark_us(self) -> int | None:
        """Event time up to which this partition is complete."""
        return None if self.max_event_us is None else self.max_event_us - self.spec.lateness_us

    def classify(
        self, event_us: npt.NDArray[np.int64], models: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Window starts, lateness and arrival windows of a batch of records, given in partition order.

        Record ``i`` is late when its window ends at or before the watermark as it stood just before
        ``i`` (the running maximum of the event times before it). Deciding this per record, rather than
        per batch, keeps the outcome independent of how polls happened to split the stream.

        A late record is reported with its *arrival* window: the window holding that running maximum,
        which is always still open here. Its own window may already be judged and stored, and whether
        it is depends on timing; the arrival window depends only on the partition's order, so late counts
        come out the same in every run.

        A record (of ``models[i]``) whose window is already stored (judged while this partition was
        idle, see :meth:`mark_stored`) is late too; it arrives in the first later window not stored.
        """
        size = self.spec.size_us
        starts = event_us - event_us % size
        if len(event_us) == 0:
            return starts, np.zeros(0, dtype=bool), starts
        before = np.maximum.accumulate(np.concatenate([[self._max_or_min()], event_us[:-1]]))
        late = starts + size <= before - self.spec.lateness_us
        arrival = before - before % size
        stored = self.stored
        if stored:  # rare: only after an idle partition's window was finalised without it
            for i, (model, start) in enumerate(zip(models, starts.tolist(), strict=True)):
                if (model, start) in stored:
                    late[i] = True
                    arrival[i] = self.late_window(model, start, int(arrival[i]))
        return starts, late, arrival

    def late_window(self, model: str, start: int, arrived: int, skip: Container[WindowId] = ()) -> int:
        """The window where a late record of window ``start`` counts.

        The window it arrived in (``arrived``), or the one after ``start`` if that is later, passing
        over windows already stored (and those in ``skip``).
        """
        size = self.spec.size_us
        window = max(arrived, start + size)
        while (model, window) in self.stored or (model, window) in skip:
            window += size
        return window

    def number(self, models: Sequence[str]) -> npt.NDArray[np.int64]:
        """Count windows: the window number of each record of a batch (in partition order), counted in.

        A record's number among its model's records in this partition, integer-divided by the share.
        """
        share = self.spec.share
        numbers = np.empty(len(models), dtype=np.int64)
        if not models:
            return numbers
        first = models[0]
        if models.count(first) == len(models):  # one model: the common case, vectorised
            done = self.counts.get(first, 0)
            numbers[:] = (done + np.arange(len(models), dtype=np.int64)) // share
            self.counts[first] = done + len(models)
            return numbers
        counts = self.counts
        for i, model in enumerate(models):
            done = counts.get(model, 0)
            numbers[i] = done // share
            counts[model] = done + 1
        return numbers

    def passed(self, key: WindowId) -> bool:
        """Whether this partition can no longer add records to window ``key`` (in time or in count)."""
        if self.spec.counted:
            return self.counts.get(key[0], 0) >= (key[1] + 1) * self.spec.share
        watermark = self.watermark_us
        return watermark is not None and watermark >= key[1] + self.spec.size_us

    def mark_stored(self, key: WindowId) -> None:
        """Window ``key`` is finalised: no record of this partition may go into it any more.

        Count windows move the model's numbering past it; event-time windows remember it until the
        watermark passes it (after that, classify calls such records late anyway).
        """
        if self.spec.counted:
            self.skip_to(key[0], key[1] + 1)
        elif not self.passed(key):
            self.stored.add(key)

    def skip_to(self, model: str, number: int) -> None:
        """Count windows: number the model's next record as the first of window ``number`` (or later)."""
        self.counts[model] = max(self.counts.get(model, 0), number * self.spec.share)

    def _max_or_min(self) -> int:
        return int(np.iinfo(np.int64).min // 2) if self.max_event_us is None else self.max_event_us

    def accumulator(self, key: WindowId, new: Callable[[], WindowAccumulator]) -> WindowAccumulator:
        """The open accumulator of ``key``, created empty on first use."""
        accumulator = self.open.get(key)
        if accumulator is None:
            accumulator = self.open[key] = new()
        return accumulator

    def writable(self, key: WindowId, new: Callable[[], WindowAccumulator]) -> WindowAccumulator:
        """The accumulator of ``key``, to change it: the sealed one, else the open one (created empty).

        A sealed window's cached checkpoint form is dropped, so the change is saved.
        """
        sealed = self.sealed.get(key)
        if sealed is None:
            return self.accumulator(key, new)
        self._sealed_dicts.pop(key, None)
        return sealed

    def advance(self, event_us: int) -> list[WindowId]:
        """Move the watermark to a (batch's largest) event time; returns the windows this sealed.

        Count windows are sealed by the counts instead (the watermark still moves: the label join
        uses it).
        """
        if self.max_event_us is None or event_us > self.max_event_us:
            self.max_event_us = event_us
        elif not self.spec.counted:
            return []  # the watermark did not move: no event-time window can close
        closing = [key for key in self.open if self.passed(key)]
        if self.stored:
            self.stored = {key for key in self.stored if not self.passed(key)}
        for key in closing:
            self.sealed[key] = self.open.pop(key)
        return closing

    def record_counts(self) -> dict[WindowId, tuple[int, int]]:
        """Records and late records of every window this partition holds (sealed or open)."""
        return {key: (a.records, a.late_records) for key, a in (*self.sealed.items(), *self.open.items())}

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
            "counts": dict(sorted(self.counts.items())),
            "stored": [{"model": m, "start": s} for m, s in sorted(self.stored)],
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
            counts={str(model): int(n) for model, n in data.get("counts", {}).items()},
            stored={(str(w["model"]), int(w["start"])) for w in data.get("stored", [])},
        )
