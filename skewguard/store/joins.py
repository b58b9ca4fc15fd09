"""The label join's state in the store: predictions waiting for their label, early labels, joined pairs.

Why rows and not the checkpoint blob: a prediction waits for its label up to the horizon (an hour by
default), so at a thousand requests a second a partition holds millions of waiting predictions. Packed
into the partition's checkpoint they were re-serialised every few seconds and held in memory whole. Here
each waiting prediction, early label and joined pair is one row, written once (in the checkpoint's
transaction, so it stays exactly-once with the offsets), looked up by request id when its partner comes,
and deleted when it joins, is evicted, or its window's label stage is finalised. The daemon keeps only
what changed since its last checkpoint in memory.

Rows are keyed by the serving partition: the labels topic is co-partitioned with the serving log, so
labels partition ``p`` joins against serving partition ``p``'s rows.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from skewguard.labels import (
    EarlyLabel,
    LabelTally,
    WaitingPrediction,
    candidates_from_json,
    outcome_from_json,
)

#: ``role`` of a row: a prediction waiting for its label, or a label that came before its prediction.
PREDICTION: Final = "prediction"
LABEL: Final = "label"
#: Request ids per ``IN (…)`` lookup: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK: Final = 900

WindowId = tuple[str, int]


def join_tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    """The two tables of the label join (created with the store's others)."""
    waiting = sa.Table(
        "label_waiting",
        metadata,
        sa.Column("consumer_group", sa.String(200), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("role", sa.String(10), nullable=False),
        # A prediction's model and window (its start µs or count number): a finalised window's
        # predictions are deleted together. NULL for a label (its model is not known yet).
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("window", sa.BigInteger, nullable=True),
        # A prediction's label deadline, or a label's event time (evicted once the watermark passes it).
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Index("ix_label_waiting_role", "consumer_group", "partition", "role", "time_us"),
        sa.Index("ix_label_waiting_window", "consumer_group", "model", "window"),
    )
    pairs = sa.Table(
        "label_pairs",
        metadata,
        # Keyed, so that writing the same pair twice stores it once: a daemon that lost its partition
        # without noticing yet may still save the deltas its successor saves again.
        sa.Column("consumer_group", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    return {"label_waiting": waiting, "label_pairs": pairs}


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)  # NaN is written as null; outcome_from_json reads it back as NaN


def _waiting(row: Any) -> WaitingPrediction | EarlyLabel:
    payload = orjson.loads(row.payload)
    if row.role == PREDICTION:
        prediction, candidates = payload
        return WaitingPrediction(
            str(row.model),
            int(row.window),
            outcome_from_json(prediction),
            candidates_from_json(candidates),
            int(row.time_us),
        )
    label, as_logged = payload
    return EarlyLabel(label, int(row.time_us), bool(as_logged))


def _bulk(
    connection: Connection,
    insert: Callable[[sa.Table], Any],
    table: sa.Table,
    rows: list[dict[str, Any]],
    conflict: Callable[[Any], Any],
) -> None:
    """Insert ``rows`` (one key at most once) into ``table``, ``conflict`` adding the ON CONFLICT clause.

    ``insert`` is the dialect's insert construct. On PostgreSQL through psycopg 3 a large batch is
    copied (COPY) into a temporary stage table and inserted from there in one statement; otherwise
    (SQLite, another PostgreSQL driver, a small batch) the statement runs once per row through the
    driver's executemany. Why not ``connection.execute(statement, rows)``:
    SQLAlchemy's per-row parameter processing cost more than the insert itself (measured, 200k waiting
    predictions: 3.7 s vs 1.4 s on SQLite, 5.9 s vs 3.2 s on PostgreSQL). Every value here is already
    of the driver's type (str, int, bytes, None).
    """
    if connection.dialect.driver == "psycopg" and len(rows) >= _COPY_ROWS:
        names = list(rows[0])
        stage = _copy_to_stage(connection, table, rows)
        source = sa.table(stage, *(sa.column(name) for name in names))
        connection.execute(conflict(insert(table).from_select(names, sa.select(*source.c))))
        return
    compiled = conflict(insert(table).values(_bound(rows[0]))).compile(dialect=connection.dialect)
    if compiled.positional:
        order = compiled.positiontup or []
        connection.exec_driver_sql(str(compiled), [tuple(row[n] for n in order) for row in rows])
    else:
        connection.exec_driver_sql(str(compiled), rows)


#: Rows from which PostgreSQL inserts go through COPY: below, the stage's extra statements cost more.
_COPY_ROWS: Final = 200


def _copy_to_stage(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> str:
    """PostgreSQL (psycopg 3): COPY ``rows`` into a session-local stage table shaped like ``table``.

    Returns the stage's name. COPY streams rows without a statement per row: 200 000 waiting
    predictions took 22 us a row instead of 37 (most of the rest is the server's index upkeep). The
    stage is a temporary table (``LIKE``: columns only; the session needs the TEMP privilege), emptied
    before each use and at commit, so several saves in one transaction, and a rolled-back one, never
    see another's rows. A driver error is raised as SQLAlchemy's (the store turns it into a
    StoreError, which the daemon retries), the connection invalidated when it is a disconnect.
    """
    names = list(rows[0])
    preparer = connection.dialect.identifier_preparer
    stage_name = f"sg_stage_{table.name}"
    stage = preparer.quote(stage_name)
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {preparer.format_table(table)}) "
        "ON COMMIT DELETE ROWS"
    )
    connection.exec_driver_sql(f"TRUNCATE {stage}")
    driver = cast("Any", connection.connection.driver_connection)  # psycopg's, open (in a transaction)
    columns = ", ".join(preparer.quote(name) for name in names)
    statement = f"COPY {stage} ({columns}) FROM STDIN"
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[name] for name in names])
    except dbapi_error as exc:
        lost = connection.dialect.is_disconnect(exc, connection.connection.dbapi_connection, None)
        if lost:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, dbapi_error, connection_invalidated=lost, dialect=connection.dialect
        ) from exc
    return stage_name


def _bound(row: Mapping[str, Any]) -> dict[str, Any]:
    """A bound parameter per column of ``row`` (an INSERT of exactly these columns, named as they are)."""
    return {name: sa.bindparam(name) for name in row}


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class JoinRows:
    """The label join's rows of one consumer group, read and written on one connection."""

    def __init__(
        self,
        connection: Connection,
        tables: Mapping[str, sa.Table],
        group: str,
        insert: Callable[[sa.Table], Any],
    ) -> None:
        self._conn = connection
        self._insert = insert
        self._waiting = tables["label_waiting"]
        self._pairs = tables["label_pairs"]
        self._group = group

    def waiting(
        self, partition: int, request_ids: Iterable[str]
    ) -> dict[str, WaitingPrediction | EarlyLabel]:
        """The stored waiting prediction or early label of each of ``request_ids`` that has one."""
        t = self._waiting
        wanted = sorted(set(request_ids))
        found: dict[str, WaitingPrediction | EarlyLabel] = {}
        for chunk in _chunks(wanted):
            query = sa.select(t).where(
                t.c.consumer_group == self._group, t.c.partition == partition, t.c.request_id.in_(chunk)
            )
            for row in self._conn.execute(query):
                found[row.request_id] = _waiting(row)
        return found

    def early_labels(self, partition: int) -> dict[str, int]:
        """The stored early labels of ``partition``: request id → the label's event time (µs).

        Ids and times only, so the owner can keep them in memory: a prediction is then looked up only
        when a label for its request id is stored, and the owner knows when eviction is due.
        """
        t = self._waiting
        query = sa.select(t.c.request_id, t.c.time_us).where(
            t.c.consumer_group == self._group, t.c.partition == partition, t.c.role == LABEL
        )
        return {str(rid): int(time_us) for rid, time_us in self._conn.execute(query)}

    def save(
        self,
        partition: int,
        *,
        settled: Collection[str],
        predictions: Mapping[str, WaitingPrediction],
        labels: Mapping[str, EarlyLabel],
        tallies: Mapping[WindowId, LabelTally],
    ) -> None:
        """Write what changed since the partition's last save.

        ``settled``: stored rows that joined (or were counted unmatched, or were superseded) since,
        deleted first; then the new waiting predictions and early labels (a row of the same request id
        is replaced, as a repeated prediction replaces the one before) and every tally's new pairs (a
        pair already stored — the same request id in the same window and partition — is kept once).
        """
        t = self._waiting
        mine = (t.c.consumer_group == self._group) & (t.c.partition == partition)
        for chunk in _chunks(sorted(settled)):
            self._conn.execute(sa.delete(t).where(mine, t.c.request_id.in_(chunk)))
        rows = [
            {
                "consumer_group": self._group,
                "partition": partition,
                "request_id": request_id,
                "role": PREDICTION,
                "model": wait.model,
                "window": wait.window,
                "time_us": wait.deadline_us,
                "payload": _dumps([wait.prediction, wait.candidates]),
            }
            for request_id, wait in predictions.items()
        ]
        rows += [
            {
                "consumer_group": self._group,
                "partition": partition,
                "request_id": request_id,
                "role": LABEL,
                "model": None,
                "window": None,
                "time_us": early.event_us,
                "payload": _dumps([early.label, early.as_logged]),
            }
            for request_id, early in labels.items()
        ]
        # One row per request id (the label's, should both be here), as one INSERT of them all needs.
        rows = list({row["request_id"]: row for row in rows}.values())
        if rows:
            # A stored row of the same request id that is not settled (a repeated prediction or label)
            # is replaced, as the in-memory join replaces it.

            def upsert(insert: Any) -> Any:
                update = {c: insert.excluded[c] for c in ("role", "model", "window", "time_us", "payload")}
                return insert.on_conflict_do_update(
                    index_elements=["consumer_group", "partition", "request_id"], set_=update
                )

            _bulk(self._conn, self._insert, t, rows, upsert)
        pairs = [
            {
                "consumer_group": self._group,
                "model": model,
                "window": window,
                "partition": partition,
                "request_id": request_id,
                "payload": _dumps([prediction, label, candidates]),
            }
            for (model, window), tally in sorted(tallies.items())
            for request_id, prediction, label, candidates in tally.rows()
        ]
        if pairs:
            keep_stored = operator.methodcaller("on_conflict_do_nothing")
            _bulk(self._conn, self._insert, self._pairs, pairs, keep_stored)

    def evict_labels(self, partition: int, before_us: int) -> int:
        """Delete the stored early labels of ``partition`` older than ``before_us``; how many there were."""
        t = self._waiting
        result = self._conn.execute(
            sa.delete(t).where(
                t.c.consumer_group == self._group,
                t.c.partition == partition,
                t.c.role == LABEL,
                t.c.time_us < before_us,
            )
        )
        return int(result.rowcount)

    def pairs(self, window: WindowId) -> LabelTally:
        """Every partition's stored pairs of ``window`` (counts are the partitions' own, not here)."""
        p = self._pairs
        query = (
            sa.select(p.c.request_id, p.c.payload)
            .where(p.c.consumer_group == self._group, p.c.model == window[0], p.c.window == window[1])
            .order_by(p.c.partition, p.c.request_id)
        )
        tally = LabelTally()
        for row in self._conn.execute(query):
            prediction, label, candidates = orjson.loads(row.payload)
            tally.add(
                row.request_id,
                outcome_from_json(prediction),
                outcome_from_json(label),
                candidates_from_json(candidates),
            )
        return tally

    def forget_window(self, window: WindowId) -> None:
        """Delete a finalised window's pairs and the predictions of it still waiting, in every partition."""
        p, t = self._pairs, self._waiting
        model, number = window
        self._conn.execute(
            sa.delete(p).where(p.c.consumer_group == self._group, p.c.model == model, p.c.window == number)
        )
        self._conn.execute(
            sa.delete(t).where(t.c.consumer_group == self._group, t.c.model == model, t.c.window == number)
        )
