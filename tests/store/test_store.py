"""The results store on a real SQLite file and on PostgreSQL: atomic checkpoints, windows finalised once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import threading
import uuid
import zlib
from pathlib import Path

import orjson
import pytest

from skewguard.errors import StoreConfigError, StoreError
from skewguard.results import Check, Finding, Severity, Stage, WindowKey, WindowResult
from skewguard.store import Checkpoint, NewAlert, Store, to_micros
from skewguard.store.sql import pack_state, unpack_state
from tests.store.conftest import POSTGRES_URL

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
GROUP = "monitor"


def window(model: str = "ctr", minute: int = 0) -> WindowResult:
    start = NOW + dt.timedelta(minutes=minute)
    return WindowResult(
        key=WindowKey(model, start, start + dt.timedelta(minutes=5)),
        records=1000,
        late_records=3,
        findings=(
            Finding(
                Check.DRIFT, "price", True, 0.31, 0.1, 1e-9, "wasserstein", "price drifted", Severity.WARNING
            ),
            Finding(
                Check.SKEW, "hour", False, 0.0, 0.0, None, "replay", "no mismatch", detail={"examples": []}
            ),
        ),
        context={"partitions": [0, 1]},
    )


def test_checkpoint_round_trips_state_and_offset(store: Store) -> None:
    state = {"windows": {"0": {"count": 5, "mean": 0.1 + 0.2}}, "watermark": 123456789}
    with store.transaction() as tx:
        tx.save_checkpoint(GROUP, Checkpoint("log", 0, 42, state), now=NOW)
        tx.save_checkpoint(GROUP, Checkpoint("log", 1, 7, {"windows": {}}), now=NOW)
    with store.transaction() as tx:
        tx.save_checkpoint(GROUP, Checkpoint("log", 0, 50, state | {"watermark": 5}), now=NOW)
        loaded = tx.load_checkpoints(GROUP)
    assert loaded[("log", 0)].next_offset == 50
    assert loaded[("log", 0)].state == state | {"watermark": 5}
    assert loaded[("log", 1)] == Checkpoint("log", 1, 7, {"windows": {}})
    with store.transaction() as tx:  # the caller holds partition 0's state at offset 50, not 1's at 8
        held = tx.load_checkpoints(GROUP, held={("log", 0): 50, ("log", 1): 8})
    assert held[("log", 0)] == Checkpoint("log", 0, 50, None)
    assert held[("log", 1)] == Checkpoint("log", 1, 7, {"windows": {}})
    with store.transaction() as tx:
        assert tx.load_checkpoints("other-group") == {}


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError, match="crash mid-transaction"), store.transaction() as tx:
        tx.save_checkpoint(GROUP, Checkpoint("log", 0, 99, {}), now=NOW)
        assert tx.finalise_window(GROUP, window(), now=NOW) is not None
        raise RuntimeError("crash mid-transaction")
    with store.transaction() as tx:
        assert tx.load_checkpoints(GROUP) == {}
    assert store.windows() == []


def test_window_is_finalised_exactly_once_with_its_findings(store: Store) -> None:
    result = window()
    with store.transaction() as tx:
        first = tx.finalise_window(GROUP, result, now=NOW)
    with store.transaction() as tx:
        second = tx.finalise_window(GROUP, result, now=NOW)
    assert first is not None
    assert second is None
    stored = store.windows()
    assert len(stored) == 1
    assert stored[0].result == result


def test_non_finite_statistics_in_json_columns_are_stored_as_null(store: Store) -> None:
    """PostgreSQL refuses the NaN token of Python's JSON writer: the checkpoint failed at every retry."""
    result = window()
    nan_finding = Finding(
        Check.PERFORMANCE,
        "auc",
        False,
        method="bootstrap",
        reason="auc: undefined on these pairs; not judged",
        detail={"ci_low": float("nan"), "ci_high": float("inf"), "pairs": 200, "shares": [0.5, float("nan")]},
    )
    result = WindowResult(result.key, result.records, result.late_records, (nan_finding,), result.context)
    with store.transaction() as tx:
        window_id = tx.finalise_window(GROUP, result, now=NOW)
        assert window_id is not None
        alert = NewAlert("k1", "ctr", Check.PERFORMANCE, "auc", Severity.WARNING, "m", {"gap": float("nan")})
        assert tx.add_alert(window_id, alert, now=NOW)
    [stored] = store.windows()
    assert stored.result.findings[0].detail == {
        "ci_low": None,
        "ci_high": None,
        "pairs": 200,
        "shares": [0.5, None],
    }
    assert store.alerts()[0].evidence == {"gap": None}


def test_concurrent_finalisers_produce_one_row(store: Store) -> None:
    barrier = threading.Barrier(4)
    ids: list[int | None] = []
    lock = threading.Lock()

    def finalise() -> None:
        barrier.wait()
        with store.transaction() as tx:
            tx.lock_checkpoints(GROUP)
            got = tx.finalise_window(GROUP, window(minute=10), now=NOW)
        with lock:
            ids.append(got)

    threads = [threading.Thread(target=finalise) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 4
    assert sum(i is not None for i in ids) == 1
    assert len(store.windows()) == 1


def test_alerts_are_deduplicated_and_listed_newest_first(store: Store) -> None:
    with store.transaction() as tx:
        wid = tx.finalise_window(GROUP, window(), now=NOW)
        assert wid is not None
        alert = NewAlert(
            "ctr/drift/price/0", "ctr", Check.DRIFT, "price", Severity.WARNING, "drift", {"e": 0.3}
        )
        first = tx.add_alert(wid, alert, now=NOW)
        assert first is not None
        assert tx.add_alert(wid, alert, now=NOW) is None
        later = NewAlert("ctr/skew/hour/0", "ctr", Check.SKEW, "hour", Severity.CRITICAL, "skew", {})
        second = tx.add_alert(wid, later, now=NOW + dt.timedelta(seconds=1))
        assert second is not None and second != first
    alerts = store.alerts()
    assert [a.subject for a in alerts] == ["hour", "price"]
    assert [a.id for a in alerts] == [second, first]
    assert alerts[1].evidence == {"e": 0.3}
    assert alerts[0].window_start == NOW


def test_open_alerts_are_counted_per_group_past_any_page_limit(store: Store) -> None:
    with store.transaction() as tx:
        ours = tx.finalise_window(GROUP, window("ctr", 40), now=NOW)
        theirs = tx.finalise_window("other-group", window("ctr", 40), now=NOW)
        assert ours is not None and theirs is not None
        for i in range(105):
            alert = NewAlert(f"ours/{i}", "ctr", Check.DRIFT, f"f{i}", Severity.WARNING, "m", {})
            tx.add_alert(ours, alert, now=NOW)
        tx.add_alert(theirs, NewAlert("theirs", "ctr", Check.DRIFT, "f0", Severity.WARNING, "m", {}), now=NOW)
        tx.resolve_alerts(GROUP, "ctr", Stage.SERVING, {("drift", "f0")})
    assert len(store.alerts(open_only=True)) == 100  # (a page)
    assert store.open_alert_count(GROUP) == 104
    assert store.open_alert_count("other-group") == 1


def test_the_outbox_holds_an_alert_until_its_delivery_was_tried(store: Store) -> None:
    """What a crash between the commit and the delivery would lose is read back from the outbox."""
    counted_window = WindowResult(
        WindowKey("ctr", NOW, NOW + dt.timedelta(seconds=9), 4), 500, findings=window().findings
    )
    alert = NewAlert("g/ctr/drift/price/n4", "ctr", Check.DRIFT, "price", Severity.WARNING, "d", {"e": 0.3})
    with store.transaction() as tx:
        wid = tx.finalise_window(GROUP, counted_window, now=NOW)
        assert wid is not None
        held = tx.add_alert(wid, alert, now=NOW)
        assert held is not None
        tx.hold_for_delivery(GROUP, held, now=NOW)
        quiet = tx.add_alert(wid, dataclasses.replace(alert, dedup_key="g/ctr/x"), now=NOW)
        assert quiet is not None  # recorded, never held: not in the outbox
    assert store.undelivered("other-group") == []
    [pending] = store.undelivered(GROUP)
    assert (pending.id, pending.alert, pending.key) == (held, alert, counted_window.key)
    store.delivered([held])
    assert store.undelivered(GROUP) == []
    assert len(store.alerts()) == 2  # the alerts themselves stay


def test_windows_filter_by_model_and_order_newest_first(store: Store) -> None:
    with store.transaction() as tx:
        for minute in (0, 5, 10):
            tx.finalise_window(GROUP, window("ctr", minute), now=NOW)
        tx.finalise_window(GROUP, window("other", 0), now=NOW)
    starts = [w.result.key.start for w in store.windows(model="ctr")]
    assert starts == sorted(starts, reverse=True)
    assert len(starts) == 3
    assert [w.result.key.model for w in store.windows(model="other")] == ["other"]


def test_naive_times_and_bad_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WindowKey("m", NOW.replace(tzinfo=None), NOW)
    with pytest.raises(StoreError, match="unsupported store backend"):
        Store("mysql+pymysql://x@127.0.0.1/db", create=False)
    with pytest.raises(StoreError, match="no-such-dir' does not exist"):
        Store(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")


def test_a_checkpoint_never_moves_backwards(store: Store) -> None:
    with store.transaction() as tx:
        tx.save_checkpoint(GROUP, Checkpoint("log", 0, 100, {"owner": "new"}), now=NOW)
    with store.transaction() as tx:  # a stale owner that has not noticed the rebalance yet
        tx.save_checkpoint(GROUP, Checkpoint("log", 0, 60, {"owner": "stale"}), now=NOW)
        assert tx.load_checkpoints(GROUP)[("log", 0)] == Checkpoint("log", 0, 100, {"owner": "new"})


def test_recent_flags_previous_profile_and_alert_episodes(store: Store) -> None:
    with store.transaction() as tx:
        for minute in (0, 5, 10):
            tx.finalise_window(GROUP, window("ctr", minute), now=NOW, profile={"minute": minute})
        third = window("ctr", 10).key
        assert tx.previous_profile(GROUP, third) == {"minute": 5}
        assert tx.previous_profile(GROUP, window("ctr", 0).key) is None
    newest = store.windows(model="ctr", limit=1)[0]
    assert store.window_profile(newest.id) == {"minute": 10}
    with store.transaction() as tx:
        assert tx.recent_flags(GROUP, third, 5) == [{("drift", "price")}] * 2
        first = to_micros(NOW), to_micros(NOW + dt.timedelta(minutes=5))
        assert tx.finalised(GROUP, [("ctr", *first), ("ctr", 1, 2)]) == {("ctr", *first)}
        wid = tx.finalise_window(GROUP, window("ctr", 20), now=NOW)
        assert wid is not None
        tx.add_alert(wid, NewAlert("k1", "ctr", Check.DRIFT, "price", Severity.WARNING, "m", {}), now=NOW)
        assert tx.open_alerts(GROUP, "ctr", Stage.SERVING) == {("drift", "price")}
        tx.resolve_alerts(GROUP, "ctr", Stage.SERVING, {("drift", "price")})
        assert tx.open_alerts(GROUP, "ctr", Stage.SERVING) == set()


def test_an_alert_episode_belongs_to_the_stage_and_group_that_raised_it(store: Store) -> None:
    """Both stages judge a shadow candidate by its name; neither may resolve the other's alert."""
    shadow = Finding(Check.SHADOW, "v2", True, 0.05, 0.01, 1e-6, "auc", "v2 is worse", Severity.WARNING)
    key = ("shadow", "v2")
    with store.transaction() as tx:
        labels_window = dataclasses.replace(window("ctr", 30), findings=(shadow,), stage=Stage.LABELS)
        wid = tx.finalise_window(GROUP, labels_window, now=NOW)
        assert wid is not None
        tx.add_alert(wid, NewAlert("k2", "ctr", Check.SHADOW, "v2", Severity.WARNING, "m", {}), now=NOW)
        other = tx.finalise_window("other-group", window("ctr", 30), now=NOW)
        assert other is not None
        tx.add_alert(other, NewAlert("k3", "ctr", Check.SHADOW, "v2", Severity.WARNING, "m", {}), now=NOW)
        assert tx.open_alerts(GROUP, "ctr", Stage.LABELS) == {key}
        assert tx.open_alerts(GROUP, "ctr", Stage.SERVING) == set()  # (other-group's is not ours)
        tx.resolve_alerts(GROUP, "ctr", Stage.SERVING, {key})  # a serving-stage window saw no disagreement
        assert tx.open_alerts(GROUP, "ctr", Stage.LABELS) == {key}
        assert tx.open_alerts("other-group", "ctr", Stage.SERVING) == {key}
        tx.resolve_alerts(GROUP, "ctr", Stage.LABELS, {key})
        assert tx.open_alerts(GROUP, "ctr", Stage.LABELS) == set()
        assert tx.open_alerts("other-group", "ctr", Stage.SERVING) == {key}


def counted(number: int, minute: int, *, flagged: bool = True) -> WindowResult:
    """Count window ``number``; its bounds are its records' span (two windows may share one)."""
    start = NOW + dt.timedelta(minutes=minute)
    finding = Finding(Check.DRIFT, "price", flagged, 0.3, 0.1, 1e-9, "wasserstein", "price", Severity.WARNING)
    return WindowResult(
        WindowKey("ctr", start, start + dt.timedelta(seconds=1), number), 500, findings=(finding,)
    )


def test_count_windows_are_identified_by_their_number(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.last_number(GROUP, "ctr") is None
        assert tx.finalise_window(GROUP, counted(0, 0), now=NOW, profile={"n": 0}) is not None
        # Same span as window 0 (every record at one instant): still a window of its own.
        assert tx.finalise_window(GROUP, counted(1, 0, flagged=False), now=NOW, profile={"n": 1}) is not None
        assert tx.finalise_window(GROUP, counted(1, 0), now=NOW) is None  # the same number again: once
        tx.finalise_window(GROUP, counted(2, 3), now=NOW, profile={"n": 2})
        # An event-time window with window 2's bounds neither hides nor is hidden by it.
        plain = WindowResult(WindowKey("ctr", counted(2, 3).key.start, counted(2, 3).key.end), 9)
        assert tx.finalise_window(GROUP, plain, now=NOW) is not None
        assert tx.finalised_numbers(GROUP, [("ctr", 1), ("ctr", 2), ("ctr", 3), ("other", 1)]) == {
            ("ctr", 1),
            ("ctr", 2),
        }
        bounds = counted(2, 3).key
        assert tx.finalised(GROUP, [("ctr", to_micros(bounds.start), to_micros(bounds.end))]) == {
            ("ctr", to_micros(bounds.start), to_micros(bounds.end))
        }
        assert tx.last_number(GROUP, "ctr") == 2
        assert tx.window_bounds(GROUP, "ctr", 2) == (to_micros(bounds.start), to_micros(bounds.end))
        assert tx.window_bounds(GROUP, "ctr", 7) is None
        # Previous and recent windows go by number, not by time (windows 0 and 1 share their span).
        assert tx.previous_profile(GROUP, counted(2, 3).key) == {"n": 1}
        assert tx.previous_profile(GROUP, counted(0, 0).key) is None
        flags = {("drift", "price")}
        assert tx.recent_flags(GROUP, counted(3, 4).key, 3) == [flags, set(), flags]  # 2, 1, 0
    numbers = [w.result.key.index for w in store.windows(model="ctr")]
    assert sorted(numbers, key=lambda n: -1 if n is None else n) == [None, 0, 1, 2]


def test_a_store_from_before_count_windows_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the window table as the first release created it
        conn.execute(sa.text("CREATE TABLE window_results (id INTEGER PRIMARY KEY, model VARCHAR(200))"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"earlier skewguard \(window_results has no [a-z_, ]*window_index"):
        Store(url)


def test_any_table_lacking_a_column_of_this_release_is_refused_naming_it(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Store(url).engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a table as a release that stored one column fewer left it
        conn.execute(sa.text("ALTER TABLE label_pairs DROP COLUMN payload"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"label_pairs has no payload\) and there is no migration yet"):
        Store(url)
    Store(url, create=False).engine.dispose()  # reading only (skewguard status) does not check


def test_opening_a_store_to_read_that_holds_nothing_is_refused_naming_it(tmp_path: Path) -> None:
    # (skewguard status / report / shadow report): a missing file was created empty by reading it, and
    # a store without tables failed on the first query with an SQL dump.
    missing = tmp_path / "missing.db"
    with pytest.raises(
        StoreConfigError, match=r"missing.db' \(store.url\) does not exist; has the monitor run"
    ):
        Store(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    sqlite3.connect(tmp_path / "empty.db").close()  # a file, but no skewguard tables in it
    with pytest.raises(StoreConfigError, match="holds no skewguard tables; has the monitor run"):
        Store(f"sqlite:///{tmp_path / 'empty.db'}", create=False)
    Store(f"sqlite:///{tmp_path / 'used.db'}").close()
    Store(f"sqlite:///{tmp_path / 'used.db'}", create=False).close()  # written once: opens for reading
    # An SQLite URI filename (a read-only open: the reading use exactly) names the file after 'file:'.
    Store(f"sqlite:///file:{tmp_path / 'used.db'}?mode=ro&uri=true", create=False).close()


@pytest.mark.postgres
def test_replicas_creating_the_store_together_do_not_collide() -> None:
    schema = f"sg_race_{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start_replica() -> None:
        barrier.wait()
        try:
            Store(POSTGRES_URL, schema=schema).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = Store(POSTGRES_URL, schema=schema)
    try:
        assert errors == []
        assert store.windows() == []
    finally:
        store.drop_all()
        store.close()


def test_state_blobs_are_lz4_and_zlib_blobs_of_earlier_versions_still_read() -> None:
    state = {"profile": [1, 2.5, None], "windows": {"a": "b"}}
    packed = pack_state(state)
    assert packed[:4] == b"\x04\x22\x4d\x18"  # the lz4 frame magic
    assert unpack_state(packed) == state
    assert unpack_state(zlib.compress(orjson.dumps(state), 1)) == state
