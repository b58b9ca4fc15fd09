"""Per-partition event-time windows: lateness is decided per record, independent of poll batching."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skewguard.daemon import MonitorDaemon, OwnedPartition, load_monitors
from skewguard.stats import ColumnKind, ColumnSpec, ProfileLayout
from skewguard.store import Store
from skewguard.windows import PartitionWindows, WindowAccumulator, WindowSpec
from tests.daemon.helpers import build_ctr_baseline, settings_for

SPEC = WindowSpec(size=dt.timedelta(seconds=10), lateness=dt.timedelta(seconds=2))
S = 1_000_000  # one second in µs


def run(events: list[int], cuts: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Feed ``events`` (µs) in polls split at ``cuts``; return folded and late counts per window start."""
    state = PartitionWindows(SPEC)
    folded: dict[int, int] = {}
    late: dict[int, int] = {}
    bounds = [0, *sorted(set(cuts)), len(events)]
    for lo, hi in itertools.pairwise(bounds):
        batch = np.asarray(events[lo:hi], dtype=np.int64)
        if not len(batch):
            continue
        starts, is_late, _arrival = state.classify(batch, ["m"] * len(batch))
        for start, flag in zip(starts.tolist(), is_late.tolist(), strict=True):
            target = late if flag else folded
            target[start] = target.get(start, 0) + 1
        state.advance(int(batch.max()))
    return folded, late


def test_record_after_the_watermark_passed_its_window_is_late() -> None:
    events = [1 * S, 5 * S, 13 * S, 9 * S, 12 * S, 14 * S, 3 * S]
    folded, late = run(events, [])
    # After 13 s the watermark is 11 s: window [0, 10) is closed, so 9 s and 3 s are late.
    assert folded == {0: 2, 10 * S: 3}
    assert late == {0: 2}


def test_a_late_record_is_attributed_to_the_window_it_arrives_in() -> None:
    state = PartitionWindows(SPEC)
    batch = np.asarray([1 * S, 25 * S, 3 * S, 31 * S, 4 * S], dtype=np.int64)
    _starts, late, arrival = state.classify(batch, ["m"] * len(batch))
    assert late.tolist() == [False, False, True, False, True]
    # 3 s arrives after 25 s (window [20, 30)); 4 s after 31 s (window [30, 40)).
    assert arrival[late].tolist() == [20 * S, 30 * S]


def test_allowed_lateness_keeps_a_window_open() -> None:
    events = [1 * S, 11 * S, 9 * S]  # watermark 9 s after 11 s: [0, 10) still open
    folded, late = run(events, [])
    assert folded == {0: 2, 10 * S: 1}
    assert late == {}


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.integers(0, 60 * S), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_poll_boundaries_do_not_change_the_outcome(events: list[int], cuts: list[int]) -> None:
    whole = run(events, [])
    split = run(events, [c for c in cuts if c <= len(events)])
    assert split == whole


def test_advance_seals_windows_behind_the_watermark_and_round_trips() -> None:

    layout = ProfileLayout.fit(pd.DataFrame({"x": [0.0, 1.0, 2.0]}), [ColumnSpec("x", ColumnKind.NUMERIC)])
    state = PartitionWindows(SPEC)
    first = state.accumulator(("m", 0), lambda: WindowAccumulator.empty(layout))
    first.profile.fold(pd.DataFrame({"x": [0.5]}))
    first.records += 1
    state.accumulator(("m", 10 * S), lambda: WindowAccumulator.empty(layout))
    assert state.advance(11 * S) == []  # watermark 9 s: nothing closes yet
    assert state.advance(12 * S) == [("m", 0)]  # watermark 10 s closes [0, 10)
    state.sealed[("m", 0)].late_records += 2
    restored = PartitionWindows.from_dict(SPEC, state.to_dict())
    assert restored.to_dict() == state.to_dict()
    assert restored.sealed[("m", 0)].late_records == 2
    assert restored.sealed[("m", 0)].profile == first.profile


@pytest.fixture(scope="module")
def offline_daemon(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., MonitorDaemon]:
    """Daemons that are never opened (no broker): their window bookkeeping is tested directly."""
    directory = tmp_path_factory.mktemp("offline")
    build_ctr_baseline(directory / "b")

    def make(**window: Any) -> MonitorDaemon:
        url = f"sqlite:///{directory / f'{uuid.uuid4().hex}.db'}"
        spec = {"lateness_s": 5.0, "idle_timeout_s": 3600.0, **(window or {"size_s": 60.0})}
        settings = settings_for("127.0.0.1:1", directory / "b", url, window=spec)
        return MonitorDaemon(settings, load_monitors(settings), Store(settings.store.url))

    return make


def retire(daemon: MonitorDaemon, part: OwnedPartition, *keys: tuple[str, int]) -> None:
    """What a checkpoint does to ``part`` on learning that ``keys`` were finalised by another replica."""
    with daemon.store.transaction() as tx:
        daemon._retire_finalised_elsewhere(tx, part, set(keys))


def test_records_of_an_idle_finalised_window_are_reported_late_not_lost(
    offline_daemon: Callable[..., MonitorDaemon],
) -> None:
    daemon = offline_daemon()
    monitor = daemon.monitors["ctr"]
    size = daemon.spec.size_us
    part = OwnedPartition(PartitionWindows(daemon.spec), 10, 0)
    stale = part.windows.accumulator(("ctr", 0), monitor.new_accumulator)
    stale.records = 7  # folded after the window had been finalised via another partition's idle timeout
    part.windows.max_event_us = size // 2  # still inside window 0
    retire(daemon, part, ("ctr", 0))
    assert ("ctr", 0) not in part.windows.open
    assert part.windows.open[("ctr", size)].late_records == 7
    assert daemon.counters.late == 7

    # Sealed here by now, 5 of its 9 records already in the stored state the other replica merged:
    # the 4 folded since are late in the window they arrived in; the 5 are not reported again.
    sealed = part.windows.accumulator(("ctr", 2 * size), monitor.new_accumulator)
    sealed.records = 9
    part.windows.max_event_us = 3 * size + 1
    assert ("ctr", 2 * size) in part.windows.advance(4 * size)
    part.saved = {("ctr", 2 * size): (5, 0)}
    retire(daemon, part, ("ctr", 2 * size))
    assert part.windows.open[("ctr", 4 * size)].late_records == 4
    assert daemon.counters.late == 11


def test_late_records_of_a_retired_window_skip_windows_finalised_elsewhere_too(
    offline_daemon: Callable[..., MonitorDaemon],
) -> None:
    daemon = offline_daemon()
    part, monitor = OwnedPartition(PartitionWindows(daemon.spec), 10, 0), daemon.monitors["ctr"]
    size = daemon.spec.size_us
    part.windows.accumulator(("ctr", 0), monitor.new_accumulator).records = 7
    part.windows.sealed[("ctr", 0)] = part.windows.open.pop(("ctr", 0))  # sealed here: retired after
    arrival = part.windows.accumulator(("ctr", 3 * size), monitor.new_accumulator)
    arrival.records = 2
    part.saved = {("ctr", 3 * size): (2, 0)}  # the other replica counted both
    part.windows.max_event_us = 3 * size + 1  # the 7 arrived in window 3, finalised elsewhere as well
    retire(daemon, part, ("ctr", 0), ("ctr", 3 * size))
    assert list(part.windows.open) == [("ctr", 4 * size)]
    assert part.windows.open[("ctr", 4 * size)].late_records == 7
    assert daemon.counters.late == 7
    # A late count that goes into a sealed window is saved with it (its cached form is dropped).
    assert ("ctr", 4 * size) in part.windows.advance(6 * size)
    part.windows.to_dict()  # caches the sealed window's checkpoint form
    part.windows.writable(("ctr", 4 * size), monitor.new_accumulator).late_records += 1
    restored = PartitionWindows.from_dict(daemon.spec, part.windows.to_dict())
    assert restored.sealed[("ctr", 4 * size)].late_records == 8


def test_late_records_of_a_retired_count_window_never_reopen_a_sealed_one(
    offline_daemon: Callable[..., MonitorDaemon],
) -> None:
    daemon = offline_daemon(count=8)
    daemon.spec = dataclasses.replace(daemon.spec, partitions=2)  # share 4, as open() would set it
    monitor = daemon.monitors["ctr"]
    part = OwnedPartition(PartitionWindows(daemon.spec), 10, 0)
    for number, records in ((3, 4), (4, 4)):
        window = part.windows.accumulator(("ctr", number), monitor.new_accumulator)
        window.records = records
        part.windows.sealed[("ctr", number)] = part.windows.open.pop(("ctr", number))
    part.windows.counts["ctr"] = 22  # numbering is in window 5
    part.saved = {("ctr", 3): (2, 0)}  # window 3 finalised elsewhere with 2 of its 4 records
    retire(daemon, part, ("ctr", 3))
    assert part.windows.sealed[("ctr", 4)].records == 4  # untouched, not shadowed by an open copy
    assert ("ctr", 4) not in part.windows.open
    assert part.windows.open[("ctr", 5)].late_records == 2
    assert daemon.counters.late == 2


COUNTED = WindowSpec(size=dt.timedelta(seconds=10), count=10, partitions=3)  # share: ceil(10 / 3) = 4


def count_windows(models: list[str], cuts: list[int]) -> tuple[list[int], dict[str, int]]:
    """Number ``models`` (one record each) in polls split at ``cuts``; the numbers and the final counts."""
    state = PartitionWindows(COUNTED)
    numbers: list[int] = []
    bounds = [0, *sorted(set(cuts)), len(models)]
    for lo, hi in itertools.pairwise(bounds):
        numbers += state.number(models[lo:hi]).tolist()
    return numbers, state.counts


def test_count_windows_number_each_models_records_by_share() -> None:
    assert COUNTED.share == 4
    numbers, counts = count_windows(["a"] * 9, [])
    assert numbers == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert counts == {"a": 9}
    numbers, counts = count_windows(["a", "b", "a", "a", "b", "a", "a"], [])
    assert numbers == [0, 0, 0, 0, 0, 0, 1]  # a's 5th record opens a's window 1; b has 2 so far
    assert counts == {"a": 5, "b": 2}


@settings(max_examples=200, deadline=None)
@given(
    models=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_count_window_numbers_do_not_depend_on_poll_boundaries(models: list[str], cuts: list[int]) -> None:
    assert count_windows(models, [c for c in cuts if c <= len(models)]) == count_windows(models, [])


def test_count_windows_seal_by_count_and_restore_their_counts() -> None:
    layout = ProfileLayout.fit(pd.DataFrame({"x": [0.0, 1.0, 2.0]}), [ColumnSpec("x", ColumnKind.NUMERIC)])
    state = PartitionWindows(COUNTED)
    state.number(["m"] * 3)
    window = state.accumulator(("m", 0), lambda: WindowAccumulator.empty(layout))
    window.widen(5 * S, 7 * S)
    window.widen(2 * S, 6 * S)
    assert (window.first_event_us, window.last_event_us) == (2 * S, 7 * S)
    assert state.advance(50 * S) == []  # time does not close a count window: 3 of its 4 records so far
    assert not state.passed(("m", 0))
    state.number(["m"])
    assert state.passed(("m", 0))
    assert not state.passed(("m", 1))
    assert state.advance(51 * S) == [("m", 0)]
    state.skip_to("m", 3)  # the next record of m opens window 3
    assert state.number(["m"]).tolist() == [3]
    restored = PartitionWindows.from_dict(COUNTED, state.to_dict())
    assert restored.counts == {"m": 13}
    assert restored.to_dict() == state.to_dict()
    merged = restored.sealed[("m", 0)].merge(WindowAccumulator.empty(layout))
    assert (merged.first_event_us, merged.last_event_us) == (2 * S, 7 * S)
