"""The label join's rows (waiting predictions, early labels, joined pairs) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest

from skewguard.errors import StoreError
from skewguard.labels import EarlyLabel, LabelTally, WaitingPrediction
from skewguard.store import Checkpoint, Store
from tests.store.conftest import POSTGRES_URL

GROUP = "monitor"
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
WINDOW = ("ctr", 1_000_000)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _save(
    store: Store,
    partition: int,
    *,
    settled: set[str] | None = None,
    predictions: dict[str, WaitingPrediction] | None = None,
    labels: dict[str, EarlyLabel] | None = None,
    tallies: dict[tuple[str, int], LabelTally] | None = None,
    group: str = GROUP,
) -> None:
    with store.transaction() as tx:
        tx.joins(group).save(
            partition,
            settled=settled or set(),
            predictions=predictions or {},
            labels=labels or {},
            tallies=tallies or {},
        )


def test_waiting_predictions_and_early_labels_come_back_as_saved(store: Store) -> None:
    predictions = {
        f"r{i}": WaitingPrediction("ctr", WINDOW[1], i / 2000, {"v2": 0.5} if i % 2 else {}, 9_000 + i)
        for i in range(2_000)  # more ids than one IN (…) lookup takes
    }
    predictions["c"] = WaitingPrediction("owls", 7, "barn", {"v2": "snowy", "v3": math.nan}, 5)
    predictions["p"] = WaitingPrediction("owls", 7, (0.25, 0.5, 0.25), {"v2": "0"}, 6)  # probabilities
    labels = {
        "e1": EarlyLabel(True, 123, True),
        "e2": EarlyLabel("owl", 124, True),
        "e3": EarlyLabel(1, 125, False),
    }
    _save(store, 0, predictions=predictions, labels=labels)
    _save(store, 1, labels={"r1": EarlyLabel(0, 1, True)})  # the same request id in another partition

    found = store.waiting(GROUP, 0, [*predictions, *labels, "absent"])
    assert set(found) == set(predictions) | set(labels)
    assert found["r1"] == predictions["r1"] and found["r1998"] == predictions["r1998"]
    assert found["e1"] == EarlyLabel(True, 123, True) and found["e1"].label is True
    assert found["e2"] == labels["e2"] and found["e3"] == labels["e3"] and found["e3"].label == 1
    barn = found["c"]
    assert isinstance(barn, WaitingPrediction) and barn.prediction == "barn"
    assert barn.candidates["v2"] == "snowy" and _is_nan(barn.candidates["v3"])  # NaN survives as NaN
    assert found["p"] == predictions["p"] and isinstance(found["p"].prediction, tuple)
    assert store.waiting(GROUP, 1, ["r1", "r2"]) == {"r1": EarlyLabel(0, 1, True)}
    assert store.waiting("other-group", 0, ["r1"]) == {}
    with store.transaction() as tx:
        assert tx.joins(GROUP).early_labels(0) == {"e1": 123, "e2": 124, "e3": 125}
        assert tx.joins(GROUP).early_labels(1) == {"r1": 1}


def test_settled_rows_are_deleted_and_a_repeated_request_id_replaces_the_stored_row(store: Store) -> None:
    first = WaitingPrediction("ctr", WINDOW[1], 0.1, {}, 10)
    _save(store, 0, predictions={"a": first, "b": first}, labels={"x": EarlyLabel(1, 5, True)})
    again = WaitingPrediction("ctr", WINDOW[1], 0.9, {}, 20)
    _save(store, 0, settled={"a", "x"}, predictions={"b": again, "a": again})
    assert store.waiting(GROUP, 0, ["a", "b", "x"]) == {"a": again, "b": again}
    # A label replacing a prediction of the same id (its prediction had joined: settled) and vice versa.
    _save(store, 0, settled={"b"}, labels={"b": EarlyLabel("yes", 30, True)})
    assert store.waiting(GROUP, 0, ["b"]) == {"b": EarlyLabel("yes", 30, True)}


def test_evicting_early_labels_counts_only_this_partitions_older_labels(store: Store) -> None:
    labels = {f"l{i}": EarlyLabel(1, 100 + i, True) for i in range(10)}
    _save(store, 0, labels=labels, predictions={"p": WaitingPrediction("ctr", 1, 0.5, {}, 50)})
    _save(store, 1, labels={"l0": EarlyLabel(1, 100, True)})
    _save(store, 0, labels={"l0": EarlyLabel(1, 100, True)}, group="other-group")
    with store.transaction() as tx:
        assert tx.joins(GROUP).evict_labels(0, before_us=105) == 5
    remaining = store.waiting(GROUP, 0, [*labels, "p"])
    assert sorted(remaining) == ["l5", "l6", "l7", "l8", "l9", "p"]  # the prediction is not a label
    assert store.waiting(GROUP, 1, ["l0"]) and store.waiting("other-group", 0, ["l0"])


def test_pairs_of_every_partition_are_read_and_forgotten_with_their_window(store: Store) -> None:
    first, second, other = LabelTally(), LabelTally(), LabelTally()
    first.add("a", 0.8, 1.0, {"v2": 0.7})
    first.add("b", 0.2, 0.0)
    second.add("c", 0.6, 1.0, {"v3": 0.1})
    second.add("d", (0.2, 0.8), "1")  # a class model's probabilities (pairs of any model share the rows)
    other.add("z", 0.5, 0.0)
    waiting = {"w": WaitingPrediction(*WINDOW, 0.4, {}, 99), "w2": WaitingPrediction("ctr", 5, 0.4, {}, 99)}
    _save(store, 0, tallies={WINDOW: first, ("ctr", 5): other}, predictions=waiting)
    _save(store, 1, tallies={WINDOW: second}, labels={"e": EarlyLabel(1, 3, True)})
    _save(store, 1, tallies={WINDOW: first}, group="other-group")
    _save(store, 0, tallies={WINDOW: first})  # saved again (a stale owner's deltas): stored once

    with store.transaction() as tx:
        stored = tx.joins(GROUP).pairs(WINDOW)
    expected = first.merge(second)
    merged = stored.merge(LabelTally())  # sorted by request id, as a merge leaves it
    assert (merged.ids, merged.predictions, merged.labels) == (
        expected.ids,
        expected.predictions,
        expected.labels,
    )
    assert merged.candidates["v2"][0] == 0.7 and _is_nan(merged.candidates["v2"][1])
    assert _is_nan(merged.candidates["v3"][0]) and merged.candidates["v3"][2] == 0.1
    assert stored.predicted == 0  # counts are the partitions' own (their checkpoints), not the rows'

    with store.transaction() as tx:
        tx.joins(GROUP).forget_window(WINDOW)
    with store.transaction() as tx:
        assert tx.joins(GROUP).pairs(WINDOW).ids == []
        assert tx.joins(GROUP).pairs(("ctr", 5)).ids == ["z"]
        assert tx.joins("other-group").pairs(WINDOW).ids == ["a", "b"]
    # The window's waiting predictions went with it; another window's, and early labels, stay.
    assert set(store.waiting(GROUP, 0, ["w", "w2"])) == {"w2"}
    assert set(store.waiting(GROUP, 1, ["e"])) == {"e"}


def test_large_saves_replace_keep_and_roll_back_as_small_ones_do(store: Store) -> None:
    """Batches past the bulk threshold (PostgreSQL copies them through a stage table) behave alike."""
    n = 1_000
    first = {f"r{i}": WaitingPrediction(*WINDOW, i / n, {}, i) for i in range(n)}
    tally = LabelTally()
    for i in range(n):
        tally.add(f"q{i}", i / n, float(i % 2))
    _save(store, 0, predictions=first, tallies={WINDOW: tally})
    # Two saves in one transaction (two partitions of one checkpoint): each writes its own rows only.
    again = {rid: WaitingPrediction(*WINDOW, 0.5, {"v2": 0.1}, 7) for rid in list(first)[: n // 2]}
    labels = {f"e{i}": EarlyLabel(i % 2, i, True) for i in range(n)}
    labels["r0"] = EarlyLabel("both", 1, True)  # one id as a prediction and a label: the label is kept
    with store.transaction() as tx:
        joins = tx.joins(GROUP)
        joins.save(0, settled=set(), predictions=again, labels=labels, tallies={WINDOW: tally})
        joins.save(1, settled=set(), predictions=first, labels={}, tallies={})
        # r1 joined since: deleted, and not written back by a later large save of the transaction.
        more = {f"s{i}": WaitingPrediction(*WINDOW, 0.3, {}, i) for i in range(n)}
        joins.save(0, settled={"r1"}, predictions=more, labels={}, tallies={})
    found = store.waiting(GROUP, 0, [*first, *labels, *more])
    assert len(found) == 3 * n - 1 and "r1" not in found
    assert found["r0"] == EarlyLabel("both", 1, True)  # replaced (upsert)
    assert found["r2"] == again["r2"] and found[f"r{n - 1}"] == first[f"r{n - 1}"]
    assert found["e7"] == labels["e7"]
    assert store.waiting(GROUP, 1, list(first)) == first
    with store.transaction() as tx:
        assert tx.joins(GROUP).pairs(WINDOW).ids == sorted(tally.ids)  # saved twice: stored once
    # A transaction that fails after a large save leaves nothing of it behind, and the next one works.
    late = {f"z{i}": WaitingPrediction(*WINDOW, 0.2, {}, i) for i in range(n)}
    with pytest.raises(RuntimeError, match="after the save"), store.transaction() as tx:
        tx.joins(GROUP).save(2, settled=set(), predictions=late, labels={}, tallies={})
        raise RuntimeError("after the save")
    assert store.waiting(GROUP, 2, list(late)) == {}
    _save(store, 2, predictions=late)
    assert store.waiting(GROUP, 2, list(late)) == late


@pytest.mark.postgres
def test_a_failed_copy_is_a_store_error_and_the_store_goes_on() -> None:
    """A driver error inside PostgreSQL's COPY path reaches the caller as StoreError (the daemon retries)."""
    store = Store(POSTGRES_URL, schema=f"sg_test_{uuid.uuid4().hex[:10]}")
    try:
        bad = {f"r{i}": WaitingPrediction(*WINDOW, 0.1, {}, i) for i in range(500)}
        bad["r7"] = WaitingPrediction(*WINDOW, 0.1, {}, "not a number")  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="not a number"):
            _save(store, 0, predictions=bad)
        assert store.waiting(GROUP, 0, list(bad)) == {}  # the whole transaction rolled back
        good = {rid: WaitingPrediction(*WINDOW, 0.1, {}, i) for i, rid in enumerate(bad)}
        _save(store, 0, predictions=good)
        assert store.waiting(GROUP, 0, list(good)) == good
    finally:
        store.drop_all()
        store.close()


def test_a_checkpoint_save_says_whether_it_was_written(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.save_checkpoint(GROUP, Checkpoint("log", 0, 10, {}), now=NOW)
        assert tx.save_checkpoint(GROUP, Checkpoint("log", 0, 12, {}), now=NOW)
        # A consumer that lost the partition must not write behind its new owner (nor its join rows).
        assert not tx.save_checkpoint(GROUP, Checkpoint("log", 0, 11, {"stale": True}), now=NOW)
        assert tx.save_checkpoint(GROUP, Checkpoint("log", 0, 12, {}), now=NOW)
    with store.transaction() as tx:
        assert tx.load_checkpoints(GROUP)[("log", 0)].state == {}
