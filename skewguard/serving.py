"""The serving side: log each request to Kafka without ever slowing or breaking the request path.

Two pieces for model-serving code:

* :class:`ServingLogger` takes one call per request (``log(...)``) and returns at once: the record goes
  into a bounded queue (``put_nowait``; when full it is dropped and counted), and a background thread
  batches records into columnar envelope messages, sends them lz4-compressed, and counts what was sent,
  dropped and failed. A broker that is down, slow or never there costs the request path nothing: the thread
  retries with backoff, the queue absorbs what it can, and the rest is counted, never raised.
* :class:`FeatureGroupFetcher` fetches feature groups (online stores, services) in parallel under a
  deadline; a group that raises or misses the deadline falls back to its declared defaults, and the
  result names the defaulted features so the record (and the monitor) knows.

Counting contract of :meth:`ServingLogger.stats`: every call of ``log`` ends up in exactly one of
``dropped`` (refused at once: queue full or logger closed), ``invalid`` (the codec refused the record),
``sent`` (acknowledged by the broker), ``failed`` (delivery gave up, or abandoned at close), or is still
``queued`` (waiting or in flight).
"""

from __future__ import annotations

import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

from skewguard.errors import BrokerError, ConfigError, RecordError
from skewguard.io.kafka import (
    DeliveredRecord,
    KafkaSettings,
    RawProducer,
    broker_reachable,
    partition_for_key,
    topic_name_problem,
)
from skewguard.records import Prediction, ServingRecord, defaulted_names, encode_records

__all__ = ["FeatureGroupFetcher", "FetchResult", "LoggerStats", "ServingLogger"]

log = logging.getLogger(__name__)

#: Consecutive delivery failures after which the producer is rebuilt (a restarted broker can leave a
#: producer unable to deliver for good, e.g. with an unknown producer id).
_REBUILD_AFTER_FAILURES: Final = 3


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters of a :class:`ServingLogger`, in records (not messages)."""

    sent: int
    dropped: int
    failed: int
    invalid: int
    queued: int
    last_error: str | None = None


class _Ledger:
    """Thread-safe counters plus the low-watermark of resolved records that ``flush`` waits on.

    The background thread numbers records in dequeue order (= queue order) and resolves them in ranges
    (one range per message); ``resolved_below`` only advances over contiguous resolved ranges, so a
    flush returns only when every record logged before it is settled.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.accepted = 0  # records that entered the queue (and get a sequence number)
        self.in_queue = 0  # of those, still in the queue (not yet taken by the background thread)
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.invalid_at_log = 0  # refused before queueing (e.g. naive event_time)
        self.invalid_queued = 0  # refused by the encoder in the background thread
        self.last_error: str | None = None
        self.resolved_below = 0
        self._done: dict[int, int] = {}

    def resolve(
        self, start: int, end: int, *, sent: int = 0, failed: int = 0, error: str | None = None
    ) -> None:
        with self.cond:
            self.sent += sent
            self.failed += failed
            if error is not None:
                self.last_error = error
            if end > start:
                self._done[start] = end
                while self.resolved_below in self._done:
                    self.resolved_below = self._done.pop(self.resolved_below)
            self.cond.notify_all()

    def snapshot(self) -> LoggerStats:
        with self.cond:
            settled = self.sent + self.failed + self.invalid_queued
            return LoggerStats(
                sent=self.sent,
                dropped=self.dropped,
                failed=self.failed,
                invalid=self.invalid_at_log + self.invalid_queued,
                queued=max(0, self.accepted - settled),
                last_error=self.last_error,
            )


class ServingLogger:
    """Logs served requests to a Kafka topic in the background; ``log`` never blocks and never raises.

    One logger per deployed model: ``model``, ``model_version`` and ``feature_state_hash`` are stamped
    on every record. Records are grouped into batch envelopes of up to ``batch_records`` records, sent
    when full or ``linger_ms`` after the first one arrived, and never above ``max_message_bytes``.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        model: str,
        model_version: str,
        feature_state_hash: str,
        queue_size: int = 10_000,
        batch_records: int = 100,
        linger_ms: int = 20,
        max_message_bytes: int = 900_000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, value in (("queue_size", queue_size), ("batch_records", batch_records)):
            if value < 1:
                msg = f"ServingLogger {name}: expected at least 1, got {value}"
                raise ConfigError(msg)
        if linger_ms < 0:
            msg = f"ServingLogger linger_ms: expected >= 0, got {linger_ms}"
            raise ConfigError(msg)
        if not 1024 <= max_message_bytes <= settings.max_request_size:
            msg = (
                f"ServingLogger max_message_bytes: expected 1024..{settings.max_request_size} "
                f"(the producer's max_request_size), got {max_message_bytes}"
            )
            raise ConfigError(msg)
        problem = topic_name_problem(topic) if isinstance(topic, str) else "expected a string"
        if problem is not None:
            msg = f"ServingLogger topic {topic!r}: {problem}"
            raise ConfigError(msg)
        self._settings = settings
        self._topic = topic
        self._model = model
        self._model_version = model_version
        self._feature_state_hash = feature_state_hash
        self._batch_records = batch_records
        self._linger_s = linger_ms / 1000
        self._max_message_bytes = max_message_bytes
        self._clock = clock or _utc_now
        # SimpleQueue (C, lock-free put) bounded by the ledger's count: a put costs ~0.1 us, not ~1 us
        self._queue: queue.SimpleQueue[ServingRecord] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._refusing = False
        self._ledger = _Ledger()
        self._closing = threading.Event()
        self._wake = threading.Event()
        #: A flush wants every record accepted before it handed to the producer and acknowledged: the
        #: number of records accepted at the latest flush() call, and that of the last one served.
        #: (A count, not an event: an event set under steady traffic stayed set, because it was cleared
        #: only when the queue happened to be empty, and every later batch skipped its linger.)
        self._flush_target = 0
        self._flushed_to = 0
        self._close_deadline = float("inf")
        self._producer: RawProducer | None = None
        self._consecutive_failures = 0
        #: Record ranges of the batch in hand already given to the ledger (or to a delivery callback).
        self._handed: list[tuple[int, int]] = []
        self._thread = threading.Thread(
            target=self._run, name=f"skewguard-serving-logger-{topic}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ the request path

    def log(
        self,
        *,
        request_id: str,
        features: Mapping[str, Any],
        prediction: Prediction | Any,
        raw_inputs: Mapping[str, Any] | None = None,
        shadow_predictions: Mapping[str, Any] | None = None,
        defaulted: Iterable[str] = (),
        event_time: datetime | None = None,
        model_version: str | None = None,
    ) -> bool:
        """Queue one served request; True if accepted, False if dropped or refused. Never raises.

        ``features`` and ``raw_inputs`` are copied one level deep, so the caller may reuse its dicts.
        ``event_time`` defaults to now (UTC); a naive one is refused (counted as invalid).
        """
        try:
            if type(request_id) is not str:
                msg = f"request_id: expected a string, got {type(request_id).__name__}"
                raise TypeError(msg)
            record = ServingRecord(
                request_id,
                event_time if event_time is not None else self._clock(),
                self._model,
                model_version if model_version is not None else self._model_version,
                self._feature_state_hash,
                dict(features),
                prediction,
                dict(raw_inputs) if raw_inputs is not None else None,
                dict(shadow_predictions) if shadow_predictions else {},
                defaulted_names(defaulted),
            )
        except Exception as exc:  # the request path must never see our errors
            with self._ledger.cond:
                self._ledger.invalid_at_log += 1
                self._ledger.last_error = f"refused record {request_id!r}: {exc}"
            return False
        return self.log_record(record)

    def log_record(self, record: ServingRecord) -> bool:
        """Queue a ready-made record; True if accepted, False if dropped (queue full or closed)."""
        ledger = self._ledger
        # one lock for the bound, the counters and the put: accepted count and queue order agree
        with ledger.cond:
            if self._refusing or ledger.in_queue >= self._queue_size:
                ledger.dropped += 1
                return False
            self._queue.put(record)
            ledger.in_queue += 1
            ledger.accepted += 1
            if ledger.in_queue == self._batch_records:
                self._wake.set()  # a full batch is waiting: end the sender's linger now
        return True

    # ------------------------------------------------------------------ control

    def stats(self) -> LoggerStats:
        """Counters so far (records): sent, dropped, failed, invalid, queued, and the last error seen."""
        return self._ledger.snapshot()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything logged so far and wait until the broker acknowledged (or refused) it.

        Returns True when every record logged before the call is settled (sent, failed or invalid),
        False on timeout (e.g. the broker is down). Never raises.
        """
        deadline = time.monotonic() + timeout_s
        ledger = self._ledger
        with ledger.cond:
            target = ledger.accepted
            self._flush_target = max(self._flush_target, target)
        self._wake.set()
        with ledger.cond:
            while ledger.resolved_below < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                ledger.cond.wait(min(remaining, 0.1))
        return True

    def close(self, timeout_s: float = 10.0) -> LoggerStats:
        """Deliver what is queued within ``timeout_s``, stop the thread, and return the final counters.

        Records still undelivered at the deadline are counted as failed. Never raises; idempotent.
        """
        if not self._closing.is_set():
            with self._ledger.cond:
                self._refusing = True  # after this no record enters the queue; shutdown drains it all
            self._close_deadline = time.monotonic() + timeout_s
            self._closing.set()
            self._wake.set()
        self._thread.join(timeout_s + 2.0)
        if self._thread.is_alive():  # pragma: no cover - only if kafka-python ignores its own timeouts
            log.warning("serving logger thread did not stop within %.1f s", timeout_s)
        return self.stats()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the background thread

    def _run(self) -> None:
        seq = 0  # sequence number of the next record taken from the queue
        backlog: list[ServingRecord] = []
        backoff = self._settings.reconnect_backoff_ms / 1000
        while True:
            if not backlog:
                backlog = self._take_batch()
            if not backlog:
                if self._closing.is_set():
                    break
                self._flush_if_due(seq)
                continue
            self._handed = []
            try:
                producer = self._ensure_producer()
                partitions = None if producer is None else self._partitions(producer)
                if producer is None or partitions is None:
                    # No broker, or no metadata for the topic: keep the batch (rather than guess where
                    # its keys go) and try again after a backoff, until close() stops waiting.
                    if producer is not None:
                        self._consecutive_failures += 1  # (enough of them rebuild the producer)
                    if self._closing.is_set() and time.monotonic() >= self._close_deadline:
                        break
                    self._wake.wait(min(backoff, self._until_close_deadline()))
                    self._wake.clear()
                    backoff = min(backoff * 2, self._settings.reconnect_backoff_max_ms / 1000)
                    continue
                backoff = self._settings.reconnect_backoff_ms / 1000
                self._send(producer, backlog, seq, partitions)
            except Exception as exc:  # a bug here must not end the thread and strand every later record
                # The records not yet handed to the ledger count as failed; those handed stay as they are
                # (resolving a range twice would wedge flush(), which waits for contiguous ranges).
                log.exception("serving log: sending %d records failed", len(backlog))
                for start, end in _gaps(self._handed, seq, seq + len(backlog)):
                    self._ledger.resolve(start, end, failed=end - start, error=f"send failed: {exc!r}")
            seq += len(backlog)
            backlog = []
            self._flush_if_due(seq)
        self._shutdown(backlog, seq)

    def _take_batch(self) -> list[ServingRecord]:
        """Wait for a first record, then gather more until the batch is full or the linger passed.

        The linger is slept on ``_wake``, which the request path sets only when a full batch is queued
        (and flush/close set): waiting on the queue instead would wake this thread, and take the GIL
        from the request threads, at every logged record.
        """
        try:
            first = self._queue.get(timeout=0.05 if not self._closing.is_set() else 0.0)
        except queue.Empty:
            return []
        batch = [first]
        linger_end = time.monotonic() + self._linger_s
        get = self._queue.get_nowait
        while True:
            try:
                while len(batch) < self._batch_records:
                    batch.append(get())
            except queue.Empty:
                pass
            remaining = linger_end - time.monotonic()
            hurry = self._flush_target > self._flushed_to or self._closing.is_set()
            if len(batch) >= self._batch_records or hurry or remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()  # (then drained: a record queued meanwhile is taken below)
        with self._ledger.cond:
            self._ledger.in_queue -= len(batch)
        return batch

    def _ensure_producer(self) -> RawProducer | None:
        if self._producer is not None and self._consecutive_failures >= _REBUILD_AFTER_FAILURES:
            log.warning("rebuilding the serving-log producer after %d failures", self._consecutive_failures)
            self._producer.close(timeout_s=0.5)
            self._producer = None
            self._consecutive_failures = 0
        if self._producer is None:
            if not broker_reachable(self._settings, timeout_s=0.5):
                self._note_error(f"no broker reachable at {','.join(self._settings.bootstrap_servers)}")
                return None
            try:
                # fail sends fast rather than block this thread for a minute when the broker is gone
                self._producer = RawProducer(self._settings, connect_timeout_s=5.0, max_block_ms=2000)
            except (BrokerError, ConfigError) as exc:
                self._note_error(str(exc))
                return None
        return self._producer

    def _partitions(self, producer: RawProducer) -> int | None:
        """How many partitions the topic has now; None (the error noted) while metadata is unavailable.

        Asked per batch (kafka-python answers from its metadata cache, refreshed every
        ``metadata_max_age_ms``), so records follow partitions added to the topic as the labels'
        producer does. Never guessed: a record sent to a partition its key does not hash to is
        never joined with its label.
        """
        try:
            partitions = producer.partitions_for(self._topic)
        except BrokerError as exc:
            self._note_error(f"no partitions known for topic {self._topic!r}: {exc}")
            return None
        if not partitions:
            self._note_error(f"no partitions known for topic {self._topic!r}")
            return None
        return len(partitions)

    def _send(
        self, producer: RawProducer, records: list[ServingRecord], first_seq: int, partitions: int
    ) -> None:
        """Send records as columnar envelopes, one or more per partition, never above the size limit.

        Each envelope holds records of ONE partition — the one each request id's own key hashes to — so
        the serving log stays co-partitioned with the labels topic (keyed by request id) and the monitor
        can join labels partition by partition.
        """
        keyed: list[tuple[int, ServingRecord]] = []
        for record in records:
            try:
                keyed.append((partition_for_key(record.request_id.encode(), partitions), record))
            except (AttributeError, UnicodeEncodeError):  # log_record of a hand-made record
                rid = getattr(record, "request_id", None)
                with self._ledger.cond:
                    self._ledger.invalid_queued += 1
                    self._ledger.last_error = f"refused record {rid!r}: the request id must be UTF-8 text"
        if len(keyed) < len(records):
            self._handed.append((first_seq + len(keyed), first_seq + len(records)))
            self._ledger.resolve(first_seq + len(keyed), first_seq + len(records))
        keyed.sort(key=operator.itemgetter(0))  # (stable: a partition's records keep their order)
        targets = [target for target, _record in keyed]
        records = [record for _target, record in keyed]
        start = 0
        for end in range(1, len(records) + 1):
            if end == len(records) or targets[end] != targets[start]:
                self._send_run(producer, records[start:end], first_seq + start, targets[start])
                start = end

    def _send_run(
        self, producer: RawProducer, records: list[ServingRecord], first_seq: int, partition: int
    ) -> None:
        """One envelope of ``records``; halved while it is too big or holds a record the codec refuses.

        Encoding the whole run at once is the common, cheap case; halving finds a bad record (dropped and
        counted alone) in a few re-encodings instead of checking every record on its own.
        """
        try:
            message = encode_records(records, max_bytes=self._max_message_bytes)
        except RecordError as exc:
            if len(records) > 1:
                half = len(records) // 2
                self._send_run(producer, records[:half], first_seq, partition)
                self._send_run(producer, records[half:], first_seq + half, partition)
                return
            with self._ledger.cond:
                self._ledger.invalid_queued += 1
                self._ledger.last_error = f"refused record {records[0].request_id!r}: {exc}"
            self._handed.append((first_seq, first_seq + 1))
            self._ledger.resolve(first_seq, first_seq + 1)
            return
        self._send_envelope(producer, message, len(records), first_seq, partition)

    def _send_envelope(
        self, producer: RawProducer, message: bytes, count: int, start: int, partition: int
    ) -> None:
        end = start + count
        self._handed.append((start, end))
        try:
            delivery = producer.send(self._topic, message, partition=partition)
        except Exception as exc:  # (BrokerError, or anything kafka-python should not have raised)
            self._consecutive_failures += 1
            self._ledger.resolve(start, end, failed=count, error=str(exc))
            return

        def settled(record: DeliveredRecord | None, error: BrokerError | None) -> None:
            if error is None:
                self._consecutive_failures = 0
                self._ledger.resolve(start, end, sent=count)
            else:
                self._consecutive_failures += 1
                self._ledger.resolve(start, end, failed=count, error=str(error))

        delivery.on_done(settled)

    def _flush_if_due(self, taken: int) -> None:
        """Flush the producer once every record a pending flush() waits for has been taken (and sent)."""
        target = self._flush_target
        if target > self._flushed_to and taken >= target:
            self._flush_producer()
            self._flushed_to = target

    def _flush_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout_s=self._until_close_deadline(default=30.0))
            except Exception as exc:  # (BrokerError; anything else must not end the thread either)
                self._note_error(str(exc))

    def _shutdown(self, backlog: list[ServingRecord], seq: int) -> None:
        """Close the producer (abandoned sends fail through their callbacks); count leftovers as failed."""
        if self._producer is not None:
            self._producer.close(timeout_s=self._until_close_deadline(default=1.0))
            self._producer = None
        leftovers = len(backlog)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            leftovers += 1
        with self._ledger.cond:
            self._ledger.in_queue -= leftovers - len(backlog)
        if leftovers:
            self._ledger.resolve(
                seq, seq + leftovers, failed=leftovers, error=f"closed with {leftovers} undelivered record(s)"
            )

    def _until_close_deadline(self, default: float = 1.0) -> float:
        if not self._closing.is_set():
            return default
        return max(0.0, self._close_deadline - time.monotonic())

    def _note_error(self, error: str) -> None:
        with self._ledger.cond:
            self._ledger.last_error = error


def _gaps(covered: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that no range of ``covered`` (disjoint ranges) covers."""
    gaps: list[tuple[int, int]] = []
    position = start
    for first, last in sorted(covered):
        if first > position:
            gaps.append((position, first))
        position = max(position, last)
    if position < end:
        gaps.append((position, end))
    return gaps


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ======================================================================================= feature groups


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Features of all groups, with the names of those that fell back to defaults and why."""

    features: dict[str, Any]
    defaulted: list[str]
    failed_groups: dict[str, str] = field(default_factory=dict)


class FeatureGroupFetcher:
    """Fetch feature groups in parallel under one deadline, falling back to declared defaults.

    ``defaults`` maps group → feature → default value (``FeatureSet.group_defaults()``). A group whose
    fetcher raises, returns something other than a mapping, or is still running at ``timeout_s`` gets
    its defaults; a feature missing from a group's answer gets its own default. A slow fetcher keeps
    its worker thread until it returns (threads cannot be stopped), so size ``max_workers`` for the
    stragglers you expect: with every worker busy and as many fetches waiting, a group gets its
    defaults at once instead of queueing behind fetchers that may hang (an unbounded queue of
    cancelled work, and every request paying the full timeout). After :meth:`close`, every group
    gets its defaults.
    """

    def __init__(
        self,
        defaults: Mapping[str, Mapping[str, Any]],
        *,
        timeout_s: float,
        max_workers: int = 8,
    ) -> None:
        if timeout_s <= 0:
            msg = f"FeatureGroupFetcher timeout_s: expected a positive number of seconds, got {timeout_s}"
            raise ConfigError(msg)
        if max_workers < 1:
            msg = f"FeatureGroupFetcher max_workers: expected at least 1, got {max_workers}"
            raise ConfigError(msg)
        self._defaults = {group: dict(values) for group, values in defaults.items()}
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="skewguard-fetch")
        #: Fetches submitted and not finished: at most twice the workers (see the class docstring).
        self._slots = threading.BoundedSemaphore(2 * max_workers)

    def fetch(self, fetchers: Mapping[str, Callable[[], Mapping[str, Any]]]) -> FetchResult:
        """Run every group's fetcher; return merged features and the names of defaulted ones."""
        unknown = [group for group in fetchers if group not in self._defaults]
        if unknown:
            known = sorted(self._defaults)
            msg = f"feature group(s) {unknown} have no declared defaults; known groups: {known}"
            raise ConfigError(msg)
        deadline = time.monotonic() + self._timeout_s
        futures: dict[str, Future[Mapping[str, Any]]] = {}
        failed: dict[str, str] = {}
        for group, fetch in fetchers.items():
            started = self._submit(fetch)
            if isinstance(started, str):
                failed[group] = started
            else:
                futures[group] = started
        wait_futures(list(futures.values()), timeout=max(0.0, deadline - time.monotonic()))
        features: dict[str, Any] = {}
        defaulted: list[str] = []
        for group in fetchers:
            declared = self._defaults[group]
            answer: Any = None
            future = futures.get(group)
            if future is None:
                pass  # not started (its reason is in failed already)
            elif not future.done():
                # Not cancelled: a cancelled fetch would stay in the pool's queue all the same, but free
                # its slot at once, so the queue could grow without bound behind hanging fetchers.
                failed[group] = f"timed out after {self._timeout_s:g} s"
            elif future.cancelled():
                failed[group] = "cancelled (the fetcher was closed)"
            elif future.exception() is not None:
                error = future.exception()
                failed[group] = f"{type(error).__name__}: {error}"
            else:
                answer = future.result()
                if not isinstance(answer, Mapping):
                    failed[group] = f"returned {type(answer).__name__}, expected a mapping"
                    answer = None
            if answer is None:
                features.update(declared)
                defaulted.extend(declared)
                continue
            for name, default in declared.items():
                if name in answer:
                    features[name] = answer[name]
                else:
                    features[name] = default
                    defaulted.append(name)
            for name, value in answer.items():
                features.setdefault(name, value)
        for group in failed:
            log.debug("feature group %s fell back to defaults: %s", group, failed[group])
        return FetchResult(features, defaulted, failed)

    def _submit(self, fetch: Callable[[], Mapping[str, Any]]) -> Future[Mapping[str, Any]] | str:
        """Start one fetch, or say why it was not started (every worker busy and as many waiting; closed)."""
        if not self._slots.acquire(blocking=False):
            return "not started: every fetch worker is busy and as many fetches wait"
        try:
            future = self._pool.submit(fetch)
        except RuntimeError:  # (the pool is shut down)
            self._slots.release()
            return "not started: the fetcher is closed"
        future.add_done_callback(lambda _future: self._slots.release())
        return future

    def close(self) -> None:
        """Stop accepting work (later fetches get the defaults); running fetchers finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
