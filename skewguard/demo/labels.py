"""Delayed click labels for the demo: each arrives some time after its impression, in event-time order.

A label is known only when the click window closes, so it is produced after its prediction and with a
delay; labels of one window therefore arrive while the next window's traffic is being served. The
monitor counts a label as late when it is older than the newest label of its partition by more than the
allowed lateness, so labels are released in event-time order across windows: :meth:`LabelFeed.due`
hands out only the labels whose time has come, oldest first, and keeps the rest waiting.

Labels are keyed by request id and placed on the partition the request id hashes to, like the serving
log, so the monitor joins each labels partition with its serving partition.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Sequence

import numpy as np
import pandas as pd

from skewguard.errors import ConfigError
from skewguard.io.kafka import RawProducer, group_by_partition
from skewguard.records import LabelRecord, encode_labels

#: Labels per message: the envelope stays far below the message size limit.
LABELS_PER_MESSAGE = 500


class LabelFeed:
    """Labels waiting for their event time; :meth:`due` releases them oldest first."""

    def __init__(self, *, min_delay: dt.timedelta, max_delay: dt.timedelta, seed: int) -> None:
        if not dt.timedelta(0) <= min_delay <= max_delay:
            msg = f"label delays: expected 0 <= min_delay <= max_delay, got {min_delay} and {max_delay}"
            raise ConfigError(msg)
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._rng = np.random.default_rng(seed)
        self._waiting: list[tuple[dt.datetime, str, int]] = []
        self.added = 0
        self.released = 0

    def add(
        self, request_ids: Sequence[str], event_times: Sequence[pd.Timestamp], clicks: Sequence[int]
    ) -> None:
        """Schedule one label per served request, a uniform random delay after its impression."""
        if not len(request_ids) == len(event_times) == len(clicks):
            msg = (
                f"labels: {len(request_ids)} request ids, {len(event_times)} event times and "
                f"{len(clicks)} clicks; expected one of each per request"
            )
            raise ConfigError(msg)
        low, high = self.min_delay.total_seconds(), self.max_delay.total_seconds()
        delays = self._rng.uniform(low, high, len(request_ids))
        for request_id, event_time, click, delay in zip(
            request_ids, event_times, clicks, delays, strict=True
        ):
            at = pd.Timestamp(event_time).to_pydatetime() + dt.timedelta(seconds=float(delay))
            heapq.heappush(self._waiting, (at, request_id, int(click)))
        self.added += len(request_ids)

    def due(self, until: dt.datetime | None = None) -> list[LabelRecord]:
        """Take the labels whose event time is before ``until`` (all when None) off the feed, oldest first."""
        out: list[LabelRecord] = []
        while self._waiting and (until is None or self._waiting[0][0] < until):
            at, request_id, click = heapq.heappop(self._waiting)
            out.append(LabelRecord(request_id, at, click))
        self.released += len(out)
        return out

    @property
    def waiting(self) -> int:
        """Labels not released yet."""
        return len(self._waiting)


def publish_labels(producer: RawProducer, topic: str, labels: Sequence[LabelRecord], partitions: int) -> int:
    """Send labels to the partition their request id hashes to, in the given order; returns messages sent.

    Batching keeps each partition's labels in order, which is all the monitor's lateness rule needs.
    """
    by_partition = group_by_partition(labels, lambda label: label.request_id, partitions)
    messages = 0
    for partition, members in sorted(by_partition.items()):
        for start in range(0, len(members), LABELS_PER_MESSAGE):
            producer.send(
                topic, encode_labels(members[start : start + LABELS_PER_MESSAGE]), partition=partition
            )
            messages += 1
    producer.flush(30.0)  # BrokerError when the broker does not acknowledge them in time
    return messages
