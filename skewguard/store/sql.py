"""The results store (SQLite or PostgreSQL): windows, findings, alerts, checkpoints, label join rows.

The label join's rows are ``skewguard.store.joins``'s; they are written in the checkpoint's transaction.

Why one transaction matters: the daemon's promise is *exactly-once effect on results*. Each poll loop
writes, in ONE transaction, the new partial window state of every partition it touched together with the
next offset to read, plus any window it finalised. Kafka offsets are committed only after that
transaction. A daemon killed anywhere restarts from the stored offsets with the stored state, so every
record is folded exactly once into the stored results, whatever happened to Kafka's own offsets.

Finalisation is guarded by the database, not by a coordinator: ``window_results`` has a unique key on
(group, model, stage, start, end, window index) and a window is inserted with ``ON CONFLICT DO
NOTHING``. Two daemons that both think they should finalise a window race on that insert; exactly one
row wins, the other learns it lost (``False``) and does nothing else — no alert is sent twice.

Timestamps are stored as integer microseconds since the epoch (UTC): exact, sortable and identical on
both backends (SQLite has no timezone-aware type). State blobs are orjson + lz4 (frame format).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.frame
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from skewguard.errors import StoreConfigError, StoreError
from skewguard.labels import EarlyLabel, WaitingPrediction
from skewguard.records import from_us, to_us
from skewguard.results import Check, Finding, Severity, Stage, WindowKey, WindowResult, json_bytes
from skewguard.store.joins import JoinRows, join_tables

#: ``window_index`` of an event-time window.
NO_INDEX = -1
#: The columns that identify a finalised window (its unique key).
_WINDOW_IDENTITY = ("consumer_group", "model", "stage", "start_us", "end_us", "window_index")


def to_micros(instant: dt.datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (exact)."""
    if instant.tzinfo is None:
        msg = f"naive datetime {instant.isoformat()} cannot be stored; attach a timezone"
        raise StoreError(msg)
    return to_us(instant)


def from_micros(value: int) -> dt.datetime:
    """Integer microseconds since the epoch → aware UTC datetime."""
    return from_us(int(value))


def pack_state(state: Any) -> bytes:
    """Serialise a JSON-able state for a blob column: orjson, then lz4.

    lz4 rather than zlib because every checkpoint packs every open window's profile on the daemon's
    poll thread: at the fastest zlib level packing was a third of the checkpoint's time, lz4 packs
    the same state several times faster for a somewhat larger blob.
    """
    return bytes(lz4.frame.compress(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)))


def unpack_state(blob: bytes) -> Any:
    """Inverse of ``pack_state``; also reads the zlib blobs earlier versions wrote."""
    if blob[:4] == _LZ4_MAGIC:
        return orjson.loads(lz4.frame.decompress(blob))
    return orjson.loads(zlib.decompress(blob))


_LZ4_MAGIC = b"\x04\x22\x4d\x18"


def _tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    checkpoints = sa.Table(
        "checkpoints",
        metadata,
        sa.Column("consumer_group", sa.String(200), primary_key=True),
        sa.Column("topic", sa.String(250), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    windows = sa.Table(
        "window_results",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("consumer_group", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        # A count window's number (its identity: its bounds are the span of its records, known only
        # once it closes); NO_INDEX for event-time windows, whose bounds are their identity.
        sa.Column("window_index", sa.BigInteger, nullable=False, server_default=str(NO_INDEX)),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("late_records", sa.BigInteger, nullable=False),
        sa.Column("flagged", sa.Integer, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("finalised_us", sa.BigInteger, nullable=False),
        # The window's merged Profile: the reference for the next window's span drift, and the sample
        # behind ``skewguard report``.
        sa.Column("profile", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint(*_WINDOW_IDENTITY, name="uq_window_once"),
    )
    findings = sa.Table(
        "findings",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(windows.c.id, ondelete="CASCADE"), nullable=False),
        sa.Column("check_name", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(250), nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("effect", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("method", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Index("ix_findings_window", "window_id"),
    )
    alerts = sa.Table(
        "alerts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(400), nullable=False, unique=True),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(windows.c.id, ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("check_name", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(250), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("resolved", sa.Boolean, nullable=False, default=False),
    )
    # The alerts recorded but not yet taken by every sink: written in the transaction that records the
    # alert, deleted once every sink has taken (or refused) it or when it is given up on, so an alert a
    # crash or an outage kept from its sinks is sent again. A table of its own: older stores gain it.
    outbox = sa.Table(
        "alert_outbox",
        metadata,
        sa.Column("alert_id", sa.Integer, sa.ForeignKey(alerts.c.id, ondelete="CASCADE"), primary_key=True),
        sa.Column("consumer_group", sa.String(200), nullable=False, index=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    return {
        "checkpoints": checkpoints,
        "windows": windows,
        "findings": findings,
        "alerts": alerts,
        "outbox": outbox,
        **join_tables(metadata),
    }


def _before(w: sa.Table, key: WindowKey) -> tuple[Any, Any]:
    """The filter and newest-first order of the windows before ``key``.

    By number for count windows, by end time (at or before ``key``'s start) for event-time windows.
    """
    if key.index is not None:
        return (w.c.window_index < key.index) & (w.c.window_index != NO_INDEX), w.c.window_index.desc()
    return (w.c.end_us <= to_micros(key.start)) & (w.c.window_index == NO_INDEX), w.c.end_us.desc()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One partition's resume point: the next offset to read and the partial state at that offset."""

    topic: str
    partition: int
    next_offset: int
    state: Any


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """A finalised window as read back from the store."""

    id: int
    result: WindowResult


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert as read back from the store."""

    id: int
    model: str
    check: Check
    subject: str
    severity: Severity
    message: str
    evidence: dict[str, Any]
    created: dt.datetime
    window_start: dt.datetime
    window_end: dt.datetime


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to record; ``dedup_key`` makes recording it twice a no-op."""

    dedup_key: str
    model: str
    check: Check
    subject: str
    severity: Severity
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UndeliveredAlert:
    """An alert whose delivery was never completed, as recorded, with the window that raised it."""

    id: int
    alert: NewAlert
    key: WindowKey


class StoreTransaction:
    """The writes and reads of one transaction; obtained from ``Store.transaction()``."""

    def __init__(self, store: Store, connection: Connection) -> None:
        self._store = store
        self._conn = connection
        self._t = store.tables

    def save_checkpoint(self, group: str, checkpoint: Checkpoint, *, now: dt.datetime) -> bool:
        """Upsert one partition's next offset and partial state; False when a newer one is stored."""
        table = self._t["checkpoints"]
        values = {
            "consumer_group": group,
            "topic": checkpoint.topic,
            "partition": checkpoint.partition,
            "next_offset": checkpoint.next_offset,
            "state": pack_state(checkpoint.state),
            "updated_us": to_micros(now),
        }
        insert = self._store.insert(table).values(**values)
        update = {k: insert.excluded[k] for k in ("next_offset", "state", "updated_us")}
        # Never move a checkpoint backwards: a consumer that lost its partition in a rebalance it has not
        # noticed yet must not overwrite the newer checkpoint of the partition's new owner.
        written = self._conn.execute(
            insert.on_conflict_do_update(
                index_elements=["consumer_group", "topic", "partition"],
                set_=update,
                where=table.c.next_offset <= insert.excluded.next_offset,
            ).returning(table.c.next_offset)
        ).first()
        return written is not None  # (rowcount says 1 on PostgreSQL even when the guard refused)

    def joins(self, group: str) -> JoinRows:
        """The label join's rows of ``group``, in this transaction."""
        return JoinRows(self._conn, self._t, group, self._store.insert)

    def load_checkpoints(
        self,
        group: str,
        topics: Sequence[str] | None = None,
        *,
        held: Mapping[tuple[str, int], int] | None = None,
    ) -> dict[tuple[str, int], Checkpoint]:
        """Every stored checkpoint of ``group`` (optionally of ``topics`` only), by (topic, partition).

        A checkpoint whose next offset is the one ``held`` names for its partition comes back with
        state None: the caller saved it and holds that state already, and unpacking every window's
        profile again was the largest part of a daemon's checkpoint.
        """
        table = self._t["checkpoints"]
        query = sa.select(table).where(table.c.consumer_group == group)
        if topics is not None:
            query = query.where(table.c.topic.in_(list(topics)))
        held = held or {}
        out: dict[tuple[str, int], Checkpoint] = {}
        for row in self._conn.execute(query):
            key = (row.topic, row.partition)
            state = None if held.get(key) == row.next_offset else unpack_state(row.state)
            out[key] = Checkpoint(row.topic, row.partition, row.next_offset, state)
        return out

    def checkpoint_times(self, group: str, topic: str) -> dict[int, int]:
        """When each partition of ``topic`` was last checkpointed (epoch µs), by partition."""
        table = self._t["checkpoints"]
        query = sa.select(table.c.partition, table.c.updated_us).where(
            table.c.consumer_group == group, table.c.topic == topic
        )
        return {row.partition: row.updated_us for row in self._conn.execute(query)}

    def lock_checkpoints(self, group: str) -> None:
        """Serialise the checkpoints of ``group``'s daemons from here to the end of the transaction.

        PostgreSQL: ``SELECT … FOR UPDATE`` of the group's checkpoint rows. SQLite: a write that changes
        nothing, which takes the database's write lock now (waiting for another writer to finish), so
        every read after it sees what the other daemons committed before. Called first in a checkpoint.
        """
        table = self._t["checkpoints"]
        if self._store.dialect == "postgresql":
            self._conn.execute(
                sa.select(table.c.partition).where(table.c.consumer_group == group).with_for_update()
            )
        else:
            self._conn.execute(
                sa.update(table).where(sa.false()).values(consumer_group=table.c.consumer_group)
            )

    def finalise_window(
        self, group: str, result: WindowResult, *, now: dt.datetime, profile: Any = None
    ) -> int | None:
        """Insert a finished window and its findings, once: the id, or ``None`` if it already exists."""
        windows = self._t["windows"]
        insert = (
            self._store.insert(windows)
            .values(
                consumer_group=group,
                model=result.key.model,
                stage=result.stage.value,
                start_us=to_micros(result.key.start),
                end_us=to_micros(result.key.end),
                window_index=NO_INDEX if result.key.index is None else result.key.index,
                records=result.records,
                late_records=result.late_records,
                flagged=len(result.flagged),
                context=result.context,
                finalised_us=to_micros(now),
                profile=None if profile is None else pack_state(profile),
            )
            .on_conflict_do_nothing(index_elements=list(_WINDOW_IDENTITY))
            .returning(windows.c.id)
        )
        window_id = self._conn.execute(insert).scalar_one_or_none()
        if window_id is None:
            return None
        if result.findings:
            self._conn.execute(
                self._t["findings"].insert(),
                [
                    {
                        "window_id": window_id,
                        "check_name": f.check.value,
                        "subject": f.subject,
                        "flagged": f.flagged,
                        "effect": f.effect,
                        "threshold": f.threshold,
                        "p_value": f.p_value,
                        "method": f.method,
                        "reason": f.reason,
                        "severity": f.severity.value,
                        "detail": f.detail,
                    }
                    for f in result.findings
                ],
            )
        return int(window_id)

    def finalised(
        self, group: str, keys: Sequence[tuple[str, int, int]], stage: Stage = Stage.SERVING
    ) -> set[tuple[str, int, int]]:
        """Which of ``keys`` (model, start µs, end µs) are already finalised at ``stage``."""
        if not keys:
            return set()
        w = self._t["windows"]
        models = sorted({k[0] for k in keys})
        starts = sorted({k[1] for k in keys})
        query = sa.select(w.c.model, w.c.start_us, w.c.end_us).where(
            w.c.consumer_group == group,
            w.c.stage == stage.value,
            w.c.model.in_(models),
            w.c.start_us.in_(starts),
            w.c.window_index == NO_INDEX,
        )
        found = {(row.model, row.start_us, row.end_us) for row in self._conn.execute(query)}
        return found & set(keys)

    def finalised_numbers(
        self, group: str, keys: Sequence[tuple[str, int]], stage: Stage = Stage.SERVING
    ) -> set[tuple[str, int]]:
        """Which count windows of ``keys`` (model, window number) are already finalised at ``stage``."""
        if not keys:
            return set()
        w = self._t["windows"]
        query = sa.select(w.c.model, w.c.window_index).where(
            w.c.consumer_group == group,
            w.c.stage == stage.value,
            w.c.model.in_(sorted({k[0] for k in keys})),
            w.c.window_index.in_(sorted({k[1] for k in keys})),
        )
        found = {(row.model, int(row.window_index)) for row in self._conn.execute(query)}
        return found & set(keys)

    def last_number(self, group: str, model: str) -> int | None:
        """The highest finalised count-window number of ``model`` (serving stage), if any."""
        w = self._t["windows"]
        value = self._conn.execute(
            sa.select(sa.func.max(w.c.window_index)).where(
                w.c.consumer_group == group,
                w.c.model == model,
                w.c.stage == Stage.SERVING.value,
                w.c.window_index != NO_INDEX,
            )
        ).scalar_one_or_none()
        return None if value is None else int(value)

    def window_bounds(self, group: str, model: str, number: int) -> tuple[int, int] | None:
        """(start µs, end µs) of the finalised count window ``number`` of ``model`` (serving stage)."""
        w = self._t["windows"]
        row = self._conn.execute(
            sa.select(w.c.start_us, w.c.end_us).where(
                w.c.consumer_group == group,
                w.c.model == model,
                w.c.stage == Stage.SERVING.value,
                w.c.window_index == number,
            )
        ).first()
        return None if row is None else (int(row.start_us), int(row.end_us))

    def previous_profile(self, group: str, key: WindowKey) -> Any:
        """The stored profile state of the latest window of ``key.model`` before ``key``."""
        w = self._t["windows"]
        before, newest_first = _before(w, key)
        row = self._conn.execute(
            sa.select(w.c.profile)
            .where(
                w.c.consumer_group == group,
                w.c.model == key.model,
                w.c.stage == Stage.SERVING.value,
                before,
            )
            .order_by(newest_first)
            .limit(1)
        ).first()
        return None if row is None or row.profile is None else unpack_state(row.profile)

    def recent_flags(
        self, group: str, key: WindowKey, windows: int, stage: Stage = Stage.SERVING
    ) -> list[set[tuple[str, str]]]:
        """Flagged (check, subject) pairs of the latest ``windows`` windows of the model before ``key``."""
        w, f = self._t["windows"], self._t["findings"]
        before, newest_first = _before(w, key)
        ids = [
            row.id
            for row in self._conn.execute(
                sa.select(w.c.id)
                .where(
                    w.c.consumer_group == group,
                    w.c.model == key.model,
                    w.c.stage == stage.value,
                    before,
                )
                .order_by(newest_first)
                .limit(windows)
            )
        ]
        flags: dict[int, set[tuple[str, str]]] = {i: set() for i in ids}
        if ids:
            query = sa.select(f.c.window_id, f.c.check_name, f.c.subject).where(
                f.c.window_id.in_(ids), f.c.flagged.is_(True)
            )
            for row in self._conn.execute(query):
                flags[row.window_id].add((row.check_name, row.subject))
        return [flags[i] for i in ids]

    def _episode_scope(self, group: str, model: str, stage: Stage) -> list[sa.ColumnElement[bool]]:
        """The alerts of ``model`` raised by ``group``'s windows of ``stage``.

        An alert's episode belongs to the stage and group that raised it: a serving-stage finding must
        not resolve what the labels stage alerted on (both report on a shadow candidate, by its name),
        nor may one consumer group resolve another's alerts in a shared store.
        """
        a, w = self._t["alerts"], self._t["windows"]
        raised_by = sa.select(w.c.id).where(
            w.c.consumer_group == group, w.c.model == model, w.c.stage == stage.value
        )
        return [a.c.model == model, a.c.window_id.in_(raised_by)]

    def open_alerts(self, group: str, model: str, stage: Stage) -> set[tuple[str, str]]:
        """(check, subject) pairs of ``model`` with an unresolved alert raised by ``group``'s ``stage``."""
        a = self._t["alerts"]
        scope = self._episode_scope(group, model, stage)
        query = sa.select(a.c.check_name, a.c.subject).where(*scope, a.c.resolved.is_(False))
        return {(row.check_name, row.subject) for row in self._conn.execute(query)}

    def resolve_alerts(self, group: str, model: str, stage: Stage, keys: set[tuple[str, str]]) -> None:
        """Mark resolved the open alerts of these (check, subject) pairs that :meth:`open_alerts` scopes."""
        a = self._t["alerts"]
        scope = self._episode_scope(group, model, stage)
        for check_name, subject in keys:
            self._conn.execute(
                sa.update(a)
                .where(*scope, a.c.check_name == check_name, a.c.subject == subject, a.c.resolved.is_(False))
                .values(resolved=True)
            )

    def add_alert(self, window_id: int, alert: NewAlert, *, now: dt.datetime) -> int | None:
        """Record an alert unless one with the same dedup key exists; its id when it was new."""
        insert = (
            self._store.insert(self._t["alerts"])
            .values(
                dedup_key=alert.dedup_key,
                window_id=window_id,
                model=alert.model,
                check_name=alert.check.value,
                subject=alert.subject,
                severity=alert.severity.value,
                message=alert.message,
                evidence=alert.evidence,
                created_us=to_micros(now),
                resolved=False,
            )
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(self._t["alerts"].c.id)
        )
        alert_id: int | None = self._conn.execute(insert).scalar_one_or_none()
        return alert_id

    def hold_for_delivery(self, group: str, alert_id: int, *, now: dt.datetime) -> None:
        """Keep alert ``alert_id`` in ``group``'s outbox until :meth:`Store.delivered` removes it."""
        self._conn.execute(
            sa.insert(self._t["outbox"]).values(
                alert_id=alert_id, consumer_group=group, created_us=to_micros(now)
            )
        )


class Store:
    """A SQLAlchemy-backed store of window results, findings, alerts and checkpoints.

    ``url`` is any SQLAlchemy URL (``sqlite:///file.db``, ``postgresql+psycopg://user@host/db``).
    ``schema`` (PostgreSQL) keeps several deployments, or test runs, apart in one database.
    """

    def __init__(self, url: str, *, schema: str | None = None, create: bool = True) -> None:
        try:
            parsed = sa.engine.make_url(url)
        except (SQLAlchemyError, ValueError) as exc:
            msg = f"store URL {url!r} is not a SQLAlchemy URL (e.g. sqlite:///results.db): {exc}"
            raise StoreConfigError(msg) from exc
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            backend = parsed.get_backend_name()
            msg = f"unsupported store backend {backend!r} in {shown!r}: use sqlite or postgresql"
            raise StoreConfigError(msg)
        database = parsed.database
        if database and parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
            database = database.removeprefix("file:")  # (an SQLite URI filename: file:results.db?mode=ro)
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            folder = Path(database).parent  # SQLite creates the file, never its folder
            if not folder.is_dir():
                msg = f"cannot open store {shown!r}: its folder {str(folder)!r} does not exist"
                raise StoreConfigError(msg)
            if not create and not Path(database).exists():
                # Reading would create an empty file, then fail on its missing tables with an SQL dump.
                msg = (
                    f"the store file {database!r} (store.url) does not exist; has the monitor run with "
                    "this config (relative paths are relative to the current directory)?"
                )
                raise StoreConfigError(msg)
        try:
            self.engine: Engine = sa.create_engine(parsed, pool_pre_ping=True, json_serializer=_json_text)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            msg = f"cannot open store {shown!r}: {exc}"
            raise StoreError(msg) from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.metadata = sa.MetaData(schema=schema)
        self.tables = _tables(self.metadata)
        self.schema = schema
        if create:
            self.create()
        else:
            self._require_tables(shown)

    def _require_tables(self, shown: str) -> None:
        """StoreConfigError when the store holds none of skewguard's tables (nothing was stored there).

        A configuration error (exit 2) like a missing SQLite file: the URL names a store the monitor
        never wrote, which no retry fixes; a store that cannot be reached stays a StoreError.
        """
        with self._guarded(self.engine.connect, f"cannot read the store {shown!r}") as conn:
            present = sa.inspect(conn).has_table(self.tables["windows"].name, schema=self.schema)
        if not present:
            where = f" in schema {self.schema!r}" if self.schema else ""
            msg = (
                f"the store {shown!r} holds no skewguard tables{where}; has the monitor run with this config?"
            )
            raise StoreConfigError(msg)

    def create(self) -> None:
        """Create the schema and tables when missing (idempotent)."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Replicas starting together would race on CREATE SCHEMA / CREATE TABLE (IF NOT EXISTS
                    # is not atomic in PostgreSQL); a transaction-scoped advisory lock serialises them.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7406119862093175151)"))
                    if self.schema:
                        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                self.metadata.create_all(conn)
                inspector = sa.inspect(conn)
                missing = {
                    table.name: sorted(
                        {c.name for c in table.columns}
                        - {c["name"] for c in inspector.get_columns(table.name, schema=self.schema)}
                    )
                    for table in self.metadata.sorted_tables
                }
        except SQLAlchemyError as exc:
            msg = f"cannot create the store tables: {exc}"
            raise StoreError(msg) from exc
        # create_all leaves an existing table as it is: one an earlier release created may lack columns
        # this one writes, which would fail later, mid-checkpoint, with a database error.
        lacking = [f"{name} has no {', '.join(columns)}" for name, columns in missing.items() if columns]
        if lacking:
            msg = (
                f"the store's tables were created by an earlier skewguard ({'; '.join(lacking)}) and there "
                "is no migration yet: point store.url at a new database (or schema), or drop the old tables"
            )
            raise StoreError(msg)

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which supports ON CONFLICT on both backends."""
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """One atomic unit of writes: committed on normal exit, rolled back on any exception."""
        with self._guarded(self.engine.begin, "store transaction failed") as conn:
            yield StoreTransaction(self, conn)

    def _writing(self, what: str) -> AbstractContextManager[Connection]:
        """A connection for one write outside a checkpoint; database errors become StoreError naming it."""
        return self._guarded(self.engine.begin, f"cannot {what}")

    # -- reads ---------------------------------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[Connection]:
        """A connection for reads; database errors become StoreError (no SQLAlchemy error leaks out)."""
        return self._guarded(self.engine.connect, "reading the store failed")

    @staticmethod
    @contextmanager
    def _guarded(
        connect: Callable[[], AbstractContextManager[Connection]], failure: str
    ) -> Iterator[Connection]:
        """A connection from ``connect``; a database error becomes ``StoreError("<failure>: <error>")``."""
        try:
            with connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            msg = f"{failure}: {exc}"
            raise StoreError(msg) from exc

    def windows(
        self,
        *,
        group: str | None = None,
        model: str | None = None,
        stage: Stage | None = Stage.SERVING,
        limit: int = 50,
    ) -> list[StoredWindow]:
        """The most recent finalised windows (newest first), with their findings."""
        w, f = self.tables["windows"], self.tables["findings"]
        query = sa.select(w).order_by(w.c.end_us.desc(), w.c.model).limit(limit)
        if group is not None:
            query = query.where(w.c.consumer_group == group)
        if model is not None:
            query = query.where(w.c.model == model)
        if stage is not None:
            query = query.where(w.c.stage == stage.value)
        with self._reading() as conn:
            rows = list(conn.execute(query))
            ids = [row.id for row in rows]
            found: dict[int, list[Finding]] = {i: [] for i in ids}
            if ids:
                for fr in conn.execute(sa.select(f).where(f.c.window_id.in_(ids)).order_by(f.c.id)):
                    found[fr.window_id].append(
                        Finding(
                            check=Check(fr.check_name),
                            subject=fr.subject,
                            flagged=bool(fr.flagged),
                            effect=fr.effect,
                            threshold=fr.threshold,
                            p_value=fr.p_value,
                            method=fr.method,
                            reason=fr.reason,
                            severity=Severity(fr.severity),
                            detail=dict(fr.detail or {}),
                        )
                    )
        return [
            StoredWindow(
                row.id,
                WindowResult(
                    key=WindowKey(
                        row.model,
                        from_micros(row.start_us),
                        from_micros(row.end_us),
                        None if row.window_index == NO_INDEX else int(row.window_index),
                    ),
                    records=row.records,
                    late_records=row.late_records,
                    findings=tuple(found[row.id]),
                    context=dict(row.context or {}),
                    stage=Stage(row.stage),
                ),
            )
            for row in rows
        ]

    def alerts(
        self, *, model: str | None = None, group: str | None = None, open_only: bool = True, limit: int = 100
    ) -> list[StoredAlert]:
        """Alerts (of one model, raised by one consumer group's windows), newest first."""
        a, w = self.tables["alerts"], self.tables["windows"]
        query = (
            sa.select(a, w.c.start_us, w.c.end_us)
            .join(w, a.c.window_id == w.c.id)
            .order_by(a.c.created_us.desc(), a.c.id.desc())
            .limit(limit)
        )
        if model is not None:
            query = query.where(a.c.model == model)
        if group is not None:
            query = query.where(w.c.consumer_group == group)
        if open_only:
            query = query.where(a.c.resolved.is_(False))
        with self._reading() as conn:
            return [
                StoredAlert(
                    id=row.id,
                    model=row.model,
                    check=Check(row.check_name),
                    subject=row.subject,
                    severity=Severity(row.severity),
                    message=row.message,
                    evidence=dict(row.evidence or {}),
                    created=from_micros(row.created_us),
                    window_start=from_micros(row.start_us),
                    window_end=from_micros(row.end_us),
                )
                for row in conn.execute(query)
            ]

    def waiting(
        self, group: str, partition: int, request_ids: Iterable[str]
    ) -> dict[str, WaitingPrediction | EarlyLabel]:
        """The stored waiting predictions and early labels of these request ids (outside a checkpoint)."""
        with self._reading() as conn:
            return JoinRows(conn, self.tables, group, self.insert).waiting(partition, request_ids)

    def open_alert_count(self, group: str, model: str | None = None) -> int:
        """How many alerts raised by ``group``'s windows (of one model) are open (no page limit)."""
        a, w = self.tables["alerts"], self.tables["windows"]
        query = (
            sa.select(sa.func.count())
            .select_from(a.join(w, a.c.window_id == w.c.id))
            .where(w.c.consumer_group == group, a.c.resolved.is_(False))
        )
        if model is not None:
            query = query.where(a.c.model == model)
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    def undelivered(self, group: str, *, created_before_us: int | None = None) -> list[UndeliveredAlert]:
        """The alerts in ``group``'s outbox (recorded, delivery never completed), oldest first.

        ``created_before_us``: only those recorded before then (epoch µs).
        """
        o, a, w = self.tables["outbox"], self.tables["alerts"], self.tables["windows"]
        query = (
            sa.select(a, w.c.start_us, w.c.end_us, w.c.window_index)
            .join(o, o.c.alert_id == a.c.id)
            .join(w, a.c.window_id == w.c.id)
            .where(o.c.consumer_group == group)
            .order_by(a.c.id)
        )
        if created_before_us is not None:
            query = query.where(o.c.created_us < created_before_us)
        with self._reading() as conn:
            return [
                UndeliveredAlert(
                    row.id,
                    NewAlert(
                        row.dedup_key,
                        row.model,
                        Check(row.check_name),
                        row.subject,
                        Severity(row.severity),
                        row.message,
                        dict(row.evidence or {}),
                    ),
                    WindowKey(
                        row.model,
                        from_micros(row.start_us),
                        from_micros(row.end_us),
                        None if row.window_index == NO_INDEX else int(row.window_index),
                    ),
                )
                for row in conn.execute(query)
            ]

    def expire_outbox(self, group: str, created_before_us: int) -> int:
        """Take out of ``group``'s outbox the alerts recorded before then (given up on); how many."""
        o = self.tables["outbox"]
        query = sa.delete(o).where(o.c.consumer_group == group, o.c.created_us < created_before_us)
        with self._writing(f"expire the alert outbox of {group!r}") as conn:
            return int(conn.execute(query).rowcount or 0)

    def outbox_ids(self, group: str) -> set[int]:
        """The ids of the alerts in ``group``'s outbox."""
        o = self.tables["outbox"]
        with self._reading() as conn:
            return {
                int(i)
                for i in conn.execute(sa.select(o.c.alert_id).where(o.c.consumer_group == group)).scalars()
            }

    def delivered(self, alert_ids: Iterable[int]) -> None:
        """Take these alerts out of the outbox: delivered, or refused for good (see ``AlertDispatcher``)."""
        ids = list(alert_ids)
        if not ids:
            return
        o = self.tables["outbox"]
        with self._writing(f"take alerts {ids} out of the outbox") as conn:
            conn.execute(sa.delete(o).where(o.c.alert_id.in_(ids)))

    def window_profile(self, window_id: int) -> Any:
        """The stored merged-profile state of a finalised window (``Profile.from_dict`` input), or None."""
        w = self.tables["windows"]
        with self._reading() as conn:
            row = conn.execute(sa.select(w.c.profile).where(w.c.id == window_id)).first()
        return None if row is None or row.profile is None else unpack_state(row.profile)

    def drop_all(self) -> None:
        """Drop the tables (and the schema, on PostgreSQL); for tests and ``--reset``."""
        with self.engine.begin() as conn:
            self.metadata.drop_all(conn)
            if self.schema and self.dialect == "postgresql":
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()


def _json_text(value: Any) -> str:
    """A JSON column's text (findings' detail, alerts' evidence, window context): standard JSON."""
    return json_bytes(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets status readers run while the daemon writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
