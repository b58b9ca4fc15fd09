"""The streaming monitor daemon: Kafka serving log in, judged windows, alerts and metrics out.

One poll loop, single-threaded, in this order (the order is the correctness argument):

1. ``poll`` raw messages; apply the rebalance changes the poll recorded (restore a newly assigned
   partition's window state and next offset from the store and seek there; forget a revoked one).
2. Decode each message ourselves; refused input goes to the dead-letter topic with its reason. A message
   below the partition's restored offset was already folded before a crash: it is skipped, never counted
   twice.
3. Fold records into their partition's event-time windows (lateness decided per record), and join
   labels with predictions by request id (the partner looked up in the store's join rows first, before
   the partition changes; a store error sends the poll's unfolded partitions back to be read again).
4. Every ``checkpoint_interval_s``: in ONE store transaction, save every owned partition's window state
   with its next offset and its label join changes since the last checkpoint (``skewguard.store.joins``;
   a labels partition's offset only with its serving partner's), and finalise each window that every
   partition has sealed (merging the stored partial states of all partitions — so it does not matter
   which daemon, or which incarnation of one, does it). Only after that commit are the Kafka offsets
   the store saved committed and the alerts delivered; a rolled-back transaction puts the join changes
   back in memory.

A daemon killed anywhere restarts from the last checkpoint and replays from its offsets: the stored
results are those of a run that never died. Several daemons in one consumer group share the partitions
the same way (``skewguard bench scale``).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features import FeatureSet, FeatureState
from skewguard.alerts import AlertDispatcher, Answer, Sink, WebhookSink, alert_payload
from skewguard.baseline import LABEL_COLUMN, Baseline, PredictionKind
from skewguard.config import import_object
from skewguard.errors import (
    BrokerError,
    ConfigError,
    DataError,
    MessageTooLarge,
    RecordError,
    StatisticsError,
    StoreError,
)
from skewguard.io.kafka import (
    AssignmentChange,
    ChangeKind,
    Delivery,
    RawConsumer,
    RawMessage,
    RawProducer,
    TopicPartition,
    ensure_topics,
    publish_dead_letter,
)
from skewguard.labels import (
    LABEL_WORDS_TEXT,
    EarlyLabel,
    LabelTally,
    Outcome,
    PerformanceOptions,
    WaitingPrediction,
    candidates_from_json,
    evaluate_window,
    joined_predictions,
    label_outcome,
    label_to_float,
    outcome_arrays,
    outcome_from_json,
)
from skewguard.monitor import ModelMonitor, MonitorOptions, prediction_values
from skewguard.ops import Metrics, OpsServer
from skewguard.records import (
    DecodeResult,
    LabelRecord,
    LabelValue,
    Prediction,
    Reason,
    ServingBatch,
    ServingRecord,
    decode_label_message,
    decode_serving,
    encode_label,
    encode_record,
)
from skewguard.results import Severity, Stage, WindowKey, WindowResult, json_bytes
from skewguard.settings import MonitorSettings
from skewguard.shadow.compare import labelled_findings
from skewguard.stats import Profile
from skewguard.store import Checkpoint, JoinRows, NewAlert, Store, from_micros, to_micros
from skewguard.windows import (
    LatePolicy,
    PartitionWindows,
    WindowAccumulator,
    WindowId,
    WindowSpec,
    from_us,
    to_us,
)

log = logging.getLogger(__name__)

UNKNOWN_MODEL = "unknown_model"
#: Dead-letter reason of a late record under ``LatePolicy.DEAD_LETTER``.
LATE = "late"
#: Why a label is refused when every labelled model reads labels as numbers.
_NOT_A_NUMBER = (
    f"neither a number nor a boolean word ({LABEL_WORDS_TEXT}), and every labelled model here takes "
    "numeric labels"
)
#: Dead-letter reason of a record or label dated further ahead of the clock than ``window.max_future_s``.
FUTURE = "future"
#: An alert and its outbox row's id (see ``skewguard.alerts.delivery``).
_Delivery = tuple[dict[str, Any], int]
#: How long the alerts-topic sink waits for the broker's acknowledgement of one alert.
_ALERT_ACK_TIMEOUT_S = 30.0
#: Phases of the poll loop whose time is counted (``DaemonCounters.seconds``, ``skewguard_busy_seconds``).
PHASES = ("poll", "fold", "checkpoint", "finalise")


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    """A refused record's dead letter, waiting to be sent: whence (topic, partition, offset), what, why."""

    source: tuple[str, int, int]
    key: bytes | None
    raw: bytes | None
    reason: str
    detail: str
    #: How much was left out after a refusal for size: 0 nothing, 1 the value, 2 the value and the key.
    shrunk: int = 0

    def smaller(self) -> _DeadLetter | None:
        """The letter with one more part left out, None when nothing is left to leave out."""
        return replace(self, shrunk=self.shrunk + 1) if self.shrunk < _MOST_SHRUNK else None


#: A dead letter refused for its size is sent without its value, then also without its key: the
#: source headers still locate the original, and a letter the broker always refuses would hold every
#: checkpoint back for good. (A letter resent smaller follows letters sent after it: the dead-letter
#: topic's order is not the source's, whose offsets are in the headers.)
_MOST_SHRUNK: Final = 2


#: Room left in a produce request for a dead letter's headers and framing.
_DEAD_LETTER_HEADROOM: Final = 16_384


@dataclass
class OwnedPartition:
    """A serving-log partition this daemon currently owns, with the label join of its request ids.

    The labels topic is co-partitioned with the serving log (same key, same partition count), so labels
    partition ``p`` joins against serving partition ``p``. The join's state is in the store's join rows;
    its changes since the last checkpoint live here, and are written in the same transaction as both
    partitions' offsets.
    """

    windows: PartitionWindows
    #: Next offset to fold; None until the first message when the store had no checkpoint.
    next_offset: int | None
    last_record_wall_us: int
    caught_up: bool = False
    #: The label join's changes since the last checkpoint (the rest is in the store, skewguard.store.joins):
    #: predictions now waiting for their label, by request id (a prediction is a number, or a class
    #: name for a class model) ...
    awaiting: dict[str, WaitingPrediction] = field(default_factory=dict)
    #: ... labels that came before their prediction ...
    pending: dict[str, EarlyLabel] = field(default_factory=dict)
    #: ... and stored rows that joined, or were counted unmatched, since (deleted at the checkpoint).
    settled: set[str] = field(default_factory=set)
    #: Early labels in the store at the last checkpoint, request id → event time (µs): a prediction is
    #: looked up in the store only when its request id is here (a store query per serving batch would
    #: cost more than the fold).
    stored_labels: dict[str, int] = field(default_factory=dict)
    #: Per prediction window: the pairs joined since the last checkpoint, and the window's counts of
    #: predictions and of labels beyond the horizon (these are checkpointed with the partition).
    tallies: dict[WindowId, LabelTally] = field(default_factory=dict)
    #: Records and late records of each window in this partition's stored state (the last checkpoint
    #: saved or restored): what another replica finalising the window merged for this partition.
    saved: dict[WindowId, tuple[int, int]] = field(default_factory=dict)

    def detach_join(self) -> JoinChanges:
        """Take the join's changes since the last checkpoint out, to be written (the counts stay)."""
        pairs = {key: tally.take_pairs() for key, tally in self.tallies.items() if tally.ids}
        changes = JoinChanges(self.awaiting, self.pending, self.settled, pairs)
        self.awaiting, self.pending, self.settled = {}, {}, set()
        return changes

    def reattach_join(self, changes: JoinChanges) -> None:
        """Undo :meth:`detach_join`: the transaction that wrote the changes rolled back."""
        self.awaiting, self.pending, self.settled = changes.awaiting, changes.pending, changes.settled
        for key, pairs in changes.pairs.items():
            self.tallies.setdefault(key, LabelTally()).put_back(pairs)

    def state(self) -> dict[str, Any]:
        """What the checkpoint stores for this partition (the join's rows are stored beside it)."""
        return {
            "windows": self.windows.to_dict(),
            "last_record_wall_us": self.last_record_wall_us,
            "caught_up": self.caught_up,
            "tallies": [
                {"model": m, "start": s, "predicted": t.predicted, "beyond_horizon": t.beyond_horizon}
                for (m, s), t in sorted(self.tallies.items())
            ],
        }

    @classmethod
    def restore(
        cls, spec: WindowSpec, next_offset: int, state: dict[str, Any], now_us: int, horizon_us: int
    ) -> OwnedPartition:
        """Inverse of :meth:`state`.

        A checkpoint of an earlier version holds the join itself (waiting predictions, early labels,
        pairs): restored as changes not yet stored, they are written to the join's rows at the next
        checkpoint. ``horizon_us`` dates the waiting predictions of checkpoints that did not store it.
        """
        windows = PartitionWindows.from_dict(spec, state["windows"])
        return cls(
            windows,
            next_offset,
            int(state.get("last_record_wall_us", now_us)),
            bool(state.get("caught_up", False)),
            awaiting={
                rid: WaitingPrediction(
                    str(v[0]),
                    int(v[1]),
                    outcome_from_json(v[2]),
                    candidates_from_json(v[3]),
                    int(v[4]) if len(v) > 4 else int(v[1]) + spec.size_us + horizon_us,
                )
                for rid, v in state.get("awaiting", {}).items()
            },
            pending={
                rid: EarlyLabel(_stored_label(v[0]), int(v[1]), len(v) > 2 and bool(v[2]))
                for rid, v in state.get("pending", {}).items()
            },
            tallies={
                (str(t["model"]), int(t["start"])): _restored_tally(t) for t in state.get("tallies", [])
            },
            saved=windows.record_counts(),
        )


def _restored_tally(entry: dict[str, Any]) -> LabelTally:
    """A checkpointed tally: its counts, or (an earlier version's checkpoint) its pairs too."""
    if "tally" in entry:
        return LabelTally.from_dict(entry["tally"])
    return LabelTally(predicted=int(entry["predicted"]), beyond_horizon=int(entry["beyond_horizon"]))


@dataclass
class JoinChanges:
    """A partition's label join changes since its last checkpoint, detached while they are written."""

    awaiting: dict[str, WaitingPrediction]
    pending: dict[str, EarlyLabel]
    settled: set[str]
    #: The new pairs of each prediction window (counts zero: those stay with the partition).
    pairs: dict[WindowId, LabelTally]


@dataclass
class LabelPartition:
    """A labels partition this daemon owns: its offset and its label watermark."""

    next_offset: int | None
    max_event_us: int | None
    last_record_wall_us: int
    caught_up: bool = False

    def state(self) -> dict[str, Any]:
        """What the checkpoint stores for this partition."""
        return {
            "max_event_us": self.max_event_us,
            "last_record_wall_us": self.last_record_wall_us,
            "caught_up": self.caught_up,
        }


@dataclass
class DaemonCounters:
    """Plain counters for tests and /status (Prometheus has the same numbers, labelled)."""

    records: int = 0
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: int = 0
    windows: int = 0
    labels: int = 0
    labels_joined: int = 0
    late_labels: int = 0
    #: Labels whose prediction never came (evicted past the watermark), repeated labels that never
    #: joined, or labels that cannot name a class (or, for a score or value model, a number).
    unmatched_labels: int = 0
    #: Labels with no serving partition to join (topics not co-partitioned) or whose prediction's model
    #: is no longer monitored.
    unjoinable_labels: int = 0
    label_windows: int = 0
    #: Wall seconds spent per phase (poll, fold, checkpoint, finalise): where the daemon's time goes.
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))


def _stored_label(value: Any) -> LabelValue:
    """A checkpointed early label, as logged (older checkpoints stored it as a number already)."""
    if isinstance(value, bool | int | float | str):
        return value
    msg = f"checkpointed label {value!r}: expected a number, text or boolean"
    raise StoreError(msg)


def _shadow_values(shadows: dict[str, Prediction], kind: PredictionKind) -> dict[str, Outcome]:
    """A record's shadow predictions as its model's kind compares them (scores, values or class names).

    A candidate's class probabilities become the class they name: candidates are compared on the main
    metric (accuracy for a class model), so only production's lists are kept whole, for its log-loss.
    """
    if not shadows:
        return {}
    versions = sorted(shadows)
    values = prediction_values([shadows[v] for v in versions], kind)
    # prediction_values gives floats, or class names for a class model: already what the join keeps.
    pairs = zip(versions, values.tolist(), strict=True)
    return {v: x for v, x in pairs if x is not None and x == x}


def _refusal_detail(error: RecordError) -> str:
    """A refusal's dead-letter detail, naming its record as the daemon's own refusals do."""
    text = str(error)
    if error.record_id is None or repr(error.record_id) in text:
        return text
    return f"record {error.record_id!r}: {text}"


def _where(source: tuple[str, int, int]) -> str:
    """A message's place, ``topic[partition]@offset``, for logs."""
    topic, partition, offset = source
    return f"{topic}[{partition}]@{offset}"


def _rebuilt(message: RawMessage, record: ServingRecord) -> bytes | None:
    """One refused record of a message, re-encoded on its own for its dead letter.

    When it cannot be (re-encoded it is over the codec's size limit — ``Z`` spelled ``+00:00`` grows a
    record at the limit — or nested too deep for orjson), the message's own bytes go instead: raising
    here would leave the partition half-folded, and the same message would fail it again after a restart.
    """
    try:
        return encode_record(record, max_bytes=sys.maxsize)
    except (RecordError, TypeError, ValueError):
        return message.value


def _group_by_window(
    models: list[str], windows: npt.NDArray[np.int64]
) -> dict[WindowId, npt.NDArray[np.intp]]:
    """The rows of a batch (none late) by (model, window start or number), in their order.

    ``models`` are the rows' models. The common case of one model is vectorised.
    """
    distinct = set(models)
    if len(distinct) > 1:
        groups: dict[WindowId, list[int]] = defaultdict(list)
        for row, (model, window) in enumerate(zip(models, windows.tolist(), strict=True)):
            groups[(model, window)].append(row)
        return {key: np.asarray(rows, dtype=np.intp) for key, rows in groups.items()}
    (model,) = distinct
    first = int(windows[0])
    if bool((windows == first).all()):
        return {(model, first): np.arange(len(models), dtype=np.intp)}
    starts, inverse = np.unique(windows, return_inverse=True)
    return {(model, int(start)): np.flatnonzero(inverse == j) for j, start in enumerate(starts.tolist())}


def load_monitors(settings: MonitorSettings) -> dict[str, ModelMonitor]:
    """Build one ModelMonitor per configured model from its baseline directory and feature set."""
    monitors: dict[str, ModelMonitor] = {}
    for model in settings.models:
        if model.name in monitors:
            msg = f"models: model {model.name!r} is configured twice"
            raise ConfigError(msg)
        feature_set: FeatureSet = import_object(model.features, expected=FeatureSet, what="feature set")
        baseline = Baseline.load(model.baseline)
        if baseline.model != model.name:
            where = str(model.baseline)
            msg = f"models: baseline {where!r} is for model {baseline.model!r}, not {model.name!r}"
            raise ConfigError(msg)
        known = {baseline.state_hash: baseline.state}
        for path in model.extra_states:
            state = FeatureState.from_json(Path(path).read_text())
            known[state.content_hash] = state
        unknown_excludes = sorted(set(model.drift_exclude) - set(feature_set.features))
        if unknown_excludes:
            msg = f"models[{model.name}].drift_exclude names unknown feature(s) {unknown_excludes}"
            raise ConfigError(msg)
        monitors[model.name] = ModelMonitor(
            baseline,
            feature_set,
            policy=settings.policy,
            options=MonitorOptions(
                drift_exclude=frozenset(model.drift_exclude),
                defaults_max_rate=model.defaults_max_rate,
                skew_max_rate=model.skew_max_rate,
            ),
            known_states=known,
        )
    return monitors


class MonitorDaemon:
    """The poll loop; see the module docstring for the order of operations."""

    def __init__(
        self,
        settings: MonitorSettings,
        monitors: Mapping[str, ModelMonitor],
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.monitors = dict(monitors)
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.counters = DaemonCounters()
        self.spec = WindowSpec(
            size=dt.timedelta(seconds=settings.window.size),
            lateness=dt.timedelta(seconds=settings.window.lateness_s),
            late_policy=settings.window.late_policy,
            count=settings.window.count,
        )
        self.group = settings.group_id
        self.topics = settings.topics
        self.owned: dict[TopicPartition, OwnedPartition] = {}
        self.label_parts: dict[TopicPartition, LabelPartition] = {}
        self.horizon_us = int(settings.labels.horizon_s * 1e6)
        self.performance = PerformanceOptions(
            min_pairs=settings.labels.min_pairs,
            tolerance=settings.labels.tolerance,
            resamples=settings.labels.bootstrap_resamples,
            alpha=settings.policy.alpha,
        )
        # Models whose predictions are joined with labels: their baseline knows a label and a prediction.
        self.labelled = {
            name
            for name, m in self.monitors.items()
            if m.baseline.has_label and m.baseline.prediction_kind is not None
        }
        # With no class model among them, every label must read as a number: one that does not ("n/a")
        # is refused as it arrives, not counted as a negative when it joins.
        self._numeric_labels = bool(self.labelled) and all(
            self.monitors[name].baseline.prediction_kind is not PredictionKind.CLASS for name in self.labelled
        )
        self.consumer: RawConsumer | None = None
        self.producer: RawProducer | None = None
        self.dispatcher: AlertDispatcher | None = None
        self.ops: OpsServer | None = None
        self._last_checkpoint = 0.0
        self._last_alert_sweep = 0.0
        self._last_poll_ok = 0.0
        self._partition_count: int | None = None
        #: Dead letters refused by a fold, not yet handed to the producer / not yet acknowledged.
        self._dead_letters: list[_DeadLetter] = []
        self._dead_letters_in_flight: list[tuple[_DeadLetter, Delivery]] = []
        #: Set when a step failed unexpectedly: its partitions may be half-folded, so no final checkpoint.
        self._broken: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def open(self, *, serve_http: bool = False) -> None:
        """Connect to Kafka (creating topics if configured), start alert delivery and, optionally, HTTP."""
        kafka = self.settings.kafka
        partitions = self.topics.create_partitions
        if partitions is not None:
            t = self.topics
            ensure_topics(kafka, dict.fromkeys((t.serving, t.labels, t.dead_letter, t.alerts), partitions))
        self.producer = RawProducer(kafka)
        if self.labelled:
            self._check_co_partitioned()
        self.consumer = RawConsumer(
            kafka,
            [self.topics.serving, self.topics.labels],
            group_id=self.group,
            max_poll_records=self.settings.max_poll_records,
        )
        sinks: dict[str, Sink] = {"topic": self._send_alert_to_topic}
        if self.settings.alerts.webhook_url:
            hook = WebhookSink(
                self.settings.alerts.webhook_url,
                timeout_s=self.settings.alerts.webhook_timeout_s,
                retries=self.settings.alerts.webhook_retries,
            )
            sinks["webhook"] = hook.send
        self.dispatcher = AlertDispatcher(
            sinks, on_settled=self._alert_settled, on_answer=self.metrics.alert_answered
        )
        self.dispatcher.start()
        # Alerts a previous run recorded but never finished delivering (it crashed, or closed first).
        self._resend_undelivered(None)
        self._last_alert_sweep = self.clock()
        if self.spec.counted:  # each partition's share of a count window depends on how many there are
            self.spec = replace(self.spec, partitions=self._serving_partitions())
        if serve_http:
            http = self.settings.http
            self.ops = OpsServer(http.host, http.port, self.metrics, self.health, self.status)
            self.ops.start()
        self._last_checkpoint = time.monotonic()
        self._last_poll_ok = time.monotonic()
        # Everything imported and loaded so far lives as long as the daemon: keep it out of the cyclic
        # garbage collector's full passes (measured: ~0.2 s each, 22-25 % of the daemon's time).
        gc.collect()
        gc.freeze()

    def close(self) -> None:
        """Final checkpoint, then release everything (consumers before the broker goes, per Tansu)."""
        try:
            if self.consumer is not None and self._broken is None:
                self.checkpoint()
            elif self.consumer is not None:
                log.error(
                    "no final checkpoint: a step failed unexpectedly (%r), so the state in memory may be "
                    "half-folded; a restart resumes from the last checkpoint",
                    self._broken,
                )
        except (StoreError, BrokerError) as exc:
            log.error("final checkpoint failed: %s", exc)
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.consumer is not None:
            self.consumer.close(timeout_s=5.0)
        if self.producer is not None:
            self.producer.close(timeout_s=5.0)
        if self.ops is not None:
            self.ops.close()
        self.consumer = self.producer = None
        self.dispatcher = self.ops = None  # (closing twice is a no-op)

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; broker outages are retried with backoff, never fatal."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self.step()
                backoff = 0.5
            except BrokerError as exc:
                self.metrics.broker_errors.inc()
                log.warning("broker problem, retrying in %.1fs: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except StoreError as exc:
                log.warning("store problem, retrying in %.1fs: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # -- the loop ------------------------------------------------------------------------------------

    def step(self) -> int:
        """One poll, fold and (when due) checkpoint; returns the number of messages polled.

        Broker and store errors leave the daemon consistent (retry by calling again); any other error
        marks it broken: :meth:`close` then skips its final checkpoint.
        """
        try:
            return self._step()
        except (BrokerError, StoreError):
            raise
        except BaseException as exc:
            self._broken = exc
            raise

    def _step(self) -> int:
        consumer = self._require(self.consumer)
        started = time.perf_counter()
        messages = consumer.poll(timeout_ms=200, max_records=self.settings.max_poll_records)
        self._last_poll_ok = time.monotonic()
        by_partition: dict[TopicPartition, list[RawMessage]] = defaultdict(list)
        for message in messages:
            by_partition[TopicPartition(message.topic, message.partition)].append(message)
        folded: set[TopicPartition] = set()
        try:
            self._apply_assignment_changes()
            polled = time.perf_counter()
            self._spent("poll", polled - started)
            for tp, batch in by_partition.items():
                if tp.topic == self.topics.labels:
                    self._fold_labels(tp, batch)
                else:
                    self._fold_partition(tp, batch)
                folded.add(tp)
        except StoreError:
            # A rebalance's checkpoint read or a label join lookup failed (before its partition
            # changed): the consumer is already past this poll, so every partition not folded is read
            # again once the store answers.
            assigned = consumer.assignment()  # (one revoked in this very poll is its new owner's)
            for tp, batch in by_partition.items():
                if tp not in folded and tp in assigned:
                    consumer.seek(tp, batch[0].offset)
            raise
        self._spent("fold", time.perf_counter() - polled)
        self._send_dead_letters()
        if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
            self.checkpoint()
        return len(messages)

    def _spent(self, phase: str, seconds: float) -> None:
        self.counters.seconds[phase] += seconds
        self.metrics.busy_seconds.labels(phase).inc(seconds)

    def _apply_assignment_changes(self) -> None:
        consumer = self._require(self.consumer)
        changes = consumer.assignment_changes()
        for position, change in enumerate(changes):
            try:
                self._apply_assignment_change(change)
            except StoreError:
                consumer.requeue_changes(changes[position:])  # applied at the next step, in order
                raise

    def _apply_assignment_change(self, change: AssignmentChange) -> None:
        consumer = self._require(self.consumer)
        if change.kind is ChangeKind.REVOKED:
            for tp in change.partitions:
                # Its new owner restores it from the last checkpoint; anything folded since is replayed.
                self.owned.pop(tp, None)
                self.label_parts.pop(tp, None)
                self.metrics.forget_partition(tp.topic, tp.partition)
            return
        with self.store.transaction() as tx:
            stored = tx.load_checkpoints(self.group, [self.topics.serving, self.topics.labels])
            joins = tx.joins(self.group)
            early = {  # (a partition without a checkpoint has no join rows either)
                tp.partition: joins.early_labels(tp.partition) if self.labelled else {}
                for tp in change.partitions
                if tp.topic == self.topics.serving and (tp.topic, tp.partition) in stored
            }
        now_us = int(self.clock() * 1e6)
        # A change applied late (requeued after a store error, or several join rounds in one poll) may
        # name a partition revoked since: restoring it would make this daemon fold and checkpoint a
        # partition it does not own, and seeking it raises. Its REVOKED change follows in the queue.
        assigned = consumer.assignment()
        for tp in change.partitions:
            if tp not in assigned:
                continue
            checkpoint = stored.get((tp.topic, tp.partition))
            labels = tp.topic == self.topics.labels
            if checkpoint is None:
                if labels:
                    self.label_parts[tp] = LabelPartition(None, None, now_us)
                else:
                    self.owned[tp] = OwnedPartition(PartitionWindows(self.spec), None, now_us)
                continue
            state = checkpoint.state
            if labels:
                max_event = state.get("max_event_us")
                self.label_parts[tp] = LabelPartition(
                    checkpoint.next_offset,
                    None if max_event is None else int(max_event),
                    int(state.get("last_record_wall_us", now_us)),
                    bool(state.get("caught_up", False)),
                )
            else:
                self.owned[tp] = OwnedPartition.restore(
                    self.spec, checkpoint.next_offset, state, now_us, self.horizon_us
                )
                self.owned[tp].stored_labels = early[tp.partition]
            consumer.seek(tp, checkpoint.next_offset)

    def _fold_partition(self, tp: TopicPartition, messages: list[RawMessage]) -> None:
        part = self.owned.get(tp)
        if part is None:
            return  # revoked in this very poll: the new owner replays it
        if part.next_offset is not None:  # folded before the last restart (or re-fetched after a seek)
            messages = [m for m in messages if m.offset >= part.next_offset]
        if not messages:
            return
        run = decode_serving([m.value for m in messages], max_bytes=self.settings.max_message_bytes)
        # Looked up before anything changes: a store error leaves the partition to be read again.
        early = self._stored_early_labels(tp.partition, part, run.batch)
        part.next_offset = messages[-1].offset + 1
        for refusal in run.refused:
            message = messages[refusal.message]
            raw = message.value if refusal.raw is None else refusal.raw
            self._dead_letter(message, raw, refusal.error.reason, _refusal_detail(refusal.error))
        batch, message_of = run.batch, run.message_of
        if not set(batch.models) <= self.monitors.keys():
            known = [row for row, model in enumerate(batch.models) if model in self.monitors]
            for row in (row for row, model in enumerate(batch.models) if model not in self.monitors):
                detail = (
                    f"record {batch.request_ids[row]!r}: model {batch.models[row]!r} is not monitored here"
                )
                origin = messages[message_of[row]]
                self._dead_letter(origin, _rebuilt(origin, batch.record(row)), UNKNOWN_MODEL, detail)
            batch, message_of = batch.take(known), message_of[known]
        horizon = self._future_limit_us()
        if len(batch) and horizon is not None and int(batch.event_us.max()) > horizon:
            ahead = batch.event_us > horizon
            for row in np.flatnonzero(ahead).tolist():
                record = batch.record(row)
                detail = f"record {record.request_id!r}: {self._future_detail(record.event_time)}"
                origin = messages[message_of[row]]
                self._dead_letter(origin, _rebuilt(origin, record), FUTURE, detail)
            kept = np.flatnonzero(~ahead)
            batch, message_of = batch.take(kept.tolist()), message_of[kept]
        if not len(batch):
            return
        events, models = batch.event_us, batch.models
        late_counts: dict[WindowId, int] = defaultdict(int)
        if self.spec.counted:
            groups = _group_by_window(models, part.windows.number(models))
        else:
            starts, late, arrival = part.windows.classify(events, models)
            if not late.any():
                groups = _group_by_window(models, starts)
            else:
                rows_of: dict[WindowId, list[int]] = defaultdict(list)
                policy = self.spec.late_policy
                for row in range(len(batch)):
                    model = models[row]
                    if not late[row]:
                        rows_of[(model, int(starts[row]))].append(row)
                        continue
                    arrived = int(arrival[row])
                    late_counts[(model, arrived)] += 1
                    if policy is LatePolicy.ARRIVAL:
                        rows_of[(model, arrived)].append(row)
                    elif policy is LatePolicy.DEAD_LETTER:
                        record = batch.record(row)
                        detail = (
                            f"record {record.request_id!r} at {record.event_time.isoformat()} belongs to "
                            f"the window starting {from_us(int(starts[row])).isoformat()}, which this "
                            f"partition had already closed (lateness {self.settings.window.lateness_s:g} s)"
                        )
                        origin = messages[message_of[row]]
                        self._dead_letter(origin, _rebuilt(origin, record), LATE, detail)
                groups = {key: np.asarray(rows, dtype=np.intp) for key, rows in rows_of.items()}
        for key, rows in groups.items():
            monitor = self.monitors[key[0]]
            accumulator = part.windows.accumulator(key, monitor.new_accumulator)
            if self.spec.counted:  # its stored bounds will be the span of its records
                accumulator.widen(int(events[rows].min()), int(events[rows].max()))
            members = batch if len(rows) == len(batch) else batch.take(rows)
            try:
                monitor.fold(accumulator, members)
            except (DataError, StatisticsError, ValueError, TypeError):
                # A record the codec accepted but the profile cannot take (text in a numeric feature):
                # find it, dead-letter it, fold the rest. The failed fold changed nothing.
                refused = monitor.refused(members)
                for row, why in refused:
                    origin = messages[message_of[rows[row]]]
                    self._dead_letter(origin, _rebuilt(origin, members.record(row)), "wrong_type", why)
                bad = {row for row, _why in refused}
                members = members.take([row for row in range(len(members)) if row not in bad])
                monitor.fold(accumulator, members)
            monitor.fold_shadow(accumulator, members)
            if key[0] in self.labelled:
                self._await_labels(part, key, members, monitor, early)
            self.metrics.records.labels(key[0]).inc(len(members))
            self.counters.records += len(members)
        for key, count in late_counts.items():
            monitor = self.monitors[key[0]]
            part.windows.accumulator(key, monitor.new_accumulator).late_records += count
            self.metrics.late_records.labels(key[0]).inc(count)
            self.counters.late += count
        part.windows.advance(int(events.max()))
        part.last_record_wall_us = int(self.clock() * 1e6)

    def _stored_early_labels(
        self, partition: int, part: OwnedPartition, batch: ServingBatch
    ) -> dict[str, EarlyLabel]:
        """The stored early labels of a batch's labelled predictions (a lookup only when one is stored)."""
        if not part.stored_labels or not self.labelled.intersection(batch.models):
            return {}
        wanted = part.stored_labels.keys() & batch.request_ids
        if not wanted:
            return {}
        found = self.store.waiting(self.group, partition, wanted)
        return {rid: row for rid, row in found.items() if isinstance(row, EarlyLabel)}

    def _await_labels(
        self,
        part: OwnedPartition,
        key: WindowId,
        members: ServingBatch,
        monitor: ModelMonitor,
        stored: Mapping[str, EarlyLabel],
    ) -> None:
        """Join each prediction with a label that came first, or keep it waiting for its label.

        A label counts until ``horizon`` after its prediction's window ends (event-time windows) or after
        the prediction itself (count windows, whose end is not known yet). ``stored``: the early labels
        of these requests in the store.
        """
        kind = monitor.baseline.prediction_kind or PredictionKind.SCORE
        logged = members.predictions
        values = joined_predictions(logged, prediction_values(logged, kind).tolist(), kind)
        tally = part.tallies.setdefault(key, LabelTally())
        tally.predicted += len(members)
        window_deadline = key[1] + self.spec.size_us + self.horizon_us
        shadows = members.shadow_predictions
        for row, (request_id, value, event_us) in enumerate(
            zip(members.request_ids, values, members.event_us.tolist(), strict=True)
        ):
            if value is None or value != value:  # no usable prediction (NaN): nothing to score
                continue
            shadow = {} if shadows is None else _shadow_values(shadows[row], kind)
            deadline = event_us + self.horizon_us if self.spec.counted else window_deadline
            early = part.pending.pop(request_id, None)
            if early is None and request_id in stored and request_id not in part.settled:
                early = stored[request_id]
                part.settled.add(request_id)
            waiting = WaitingPrediction(key[0], key[1], value, shadow, deadline)
            if early is None:
                part.awaiting[request_id] = waiting
            elif kind is PredictionKind.CLASS and not early.as_logged:
                self.counters.unmatched_labels += 1  # restored as a number: its class is lost
            else:
                self._pair(tally, request_id, waiting, early.label, early.event_us, kind)

    def _fold_labels(self, tp: TopicPartition, batch: list[RawMessage]) -> None:
        """Join a labels partition's records with the predictions of the co-partitioned serving partition."""
        lp = self.label_parts.get(tp)
        if lp is None:
            return
        if lp.next_offset is not None:
            batch = [m for m in batch if m.offset >= lp.next_offset]
        if not batch:
            return
        partner = self.owned.get(TopicPartition(self.topics.serving, tp.partition))
        decoded = [(message, self._parse_labels(message)) for message in batch]
        # Looked up before anything changes: a store error leaves the partition to be read again.
        stored: dict[str, WaitingPrediction | EarlyLabel] = {}
        if partner is not None and self.labelled:
            ids = [
                label.request_id
                for _message, result in decoded
                if not isinstance(result, RecordError)
                for label in result.records
            ]
            stored = self.store.waiting(self.group, tp.partition, ids) if ids else {}
        lp.next_offset = batch[-1].offset + 1
        horizon = self._future_limit_us()
        for message, result in decoded:
            for label in self._labels_of(message, result):
                event_us = to_us(label.event_time)
                if horizon is not None and event_us > horizon:
                    detail = f"label {label.request_id!r}: {self._future_detail(label.event_time)}"
                    self._dead_letter(message, encode_label(label), FUTURE, detail)
                    continue
                if self._numeric_labels and label_to_float(label.label) is None:
                    detail = f"label {label.request_id!r}: {label.label!r} is {_NOT_A_NUMBER}"
                    self._dead_letter(message, encode_label(label), Reason.WRONG_TYPE, detail)
                    continue
                self.counters.labels += 1
                late = lp.max_event_us is not None and event_us < lp.max_event_us - self.spec.lateness_us
                lp.max_event_us = event_us if lp.max_event_us is None else max(lp.max_event_us, event_us)
                if late:
                    self.counters.late_labels += 1
                    continue
                if partner is None:
                    self.counters.unjoinable_labels += (
                        1  # labels topic not co-partitioned with the serving log
                    )
                    continue
                self._join_label(partner, label, event_us, stored)
        lp.last_record_wall_us = int(self.clock() * 1e6)

    def _join_label(
        self,
        part: OwnedPartition,
        label: LabelRecord,
        event_us: int,
        stored: Mapping[str, WaitingPrediction | EarlyLabel],
    ) -> None:
        """Join one label with its waiting prediction (in memory, else stored), or keep it waiting."""
        request_id = label.request_id
        waiting = part.awaiting.pop(request_id, None)
        if waiting is not None and isinstance(stored.get(request_id), WaitingPrediction):
            part.settled.add(request_id)  # the stored prediction this repeated one replaced goes too
        # A repeated label never replaces the first: the first joins, as it does when the prediction
        # is already waiting, so the pairs do not depend on how the two topics interleave (a replay).
        if waiting is None and request_id not in part.settled and request_id in stored:
            found = stored[request_id]
            if isinstance(found, EarlyLabel):
                self.counters.unmatched_labels += 1  # a repeated label: the stored first one waits on
                return
            part.settled.add(request_id)
            waiting = found
        if waiting is None:
            if request_id in part.pending:
                self.counters.unmatched_labels += 1  # a repeated label: the first one waits on
                return
            part.pending[request_id] = EarlyLabel(label.label, event_us, True)
            return
        monitor = self.monitors.get(waiting.model)
        if monitor is None:  # a restored prediction of a model no longer in the configuration
            self.counters.unjoinable_labels += 1
            return
        tally = part.tallies.setdefault((waiting.model, waiting.window), LabelTally())
        kind = monitor.baseline.prediction_kind or PredictionKind.SCORE
        self._pair(tally, request_id, waiting, label.label, event_us, kind)

    def _pair(
        self,
        tally: LabelTally,
        request_id: str,
        waiting: WaitingPrediction,
        label: LabelValue,
        label_us: int,
        kind: PredictionKind,
    ) -> None:
        """A prediction meets its label (in either order): a scored pair, or one beyond the horizon."""
        if label_us < waiting.deadline_us:
            try:
                outcome = label_outcome(label, kind)
            except DataError:  # text that is no number, for a score model (with class models configured)
                self.counters.unmatched_labels += 1
                return
            tally.add(request_id, waiting.prediction, outcome, waiting.candidates)
            self.counters.labels_joined += 1
            self.metrics.labels_joined.labels(waiting.model).inc()
        else:
            tally.beyond_horizon += 1

    def _parse_labels(self, message: RawMessage) -> DecodeResult[LabelRecord] | RecordError:
        """A labels message decoded, or why it is refused as a whole (no side effect yet)."""
        try:
            return decode_label_message(message.value, max_bytes=self.settings.max_message_bytes)
        except RecordError as exc:
            return exc

    def _labels_of(
        self, message: RawMessage, result: DecodeResult[LabelRecord] | RecordError
    ) -> list[LabelRecord]:
        """The labels of one decoded message; dead-letters the refused message or batch members."""
        if isinstance(result, RecordError):
            self._dead_letter(message, message.value, result.reason, _refusal_detail(result))
            return []
        for rejected in result.rejected:
            raw = message.value if rejected.raw is None else rejected.raw
            self._dead_letter(message, raw, rejected.error.reason, _refusal_detail(rejected.error))
        return result.records

    def _future_limit_us(self) -> int | None:
        """The latest event time (epoch µs) accepted now; None when ``window.max_future_s`` is 0."""
        ahead = self.settings.window.max_future_s
        return None if ahead == 0 else int((self.clock() + ahead) * 1e6)

    def _future_detail(self, event_time: dt.datetime) -> str:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        return (
            f"event time {event_time.isoformat()} is {(event_time - now).total_seconds():.0f} s ahead of "
            f"the monitor's clock ({now.isoformat(timespec='seconds')}); window.max_future_s allows "
            f"{self.settings.window.max_future_s:g} s"
        )

    def _dead_letter(self, message: RawMessage, raw: bytes | None, reason: str, detail: str) -> None:
        """Count a refused record and queue its dead letter, to send after the fold.

        Sent after it and acknowledged before the next checkpoint: a send failing mid-fold (the
        producer's buffer full, the broker gone) would leave the partition half-folded.
        """
        source = (message.topic, message.partition, message.offset)
        self._dead_letters.append(_DeadLetter(source, message.key, raw, reason, detail))
        self.metrics.dead_letters.labels(reason).inc()
        self.counters.dead_letters[reason] += 1

    def _send_dead_letters(self) -> None:
        """Hand the queued dead letters to the producer; BrokerError leaves the rest queued for a retry."""
        if not self._dead_letters:
            return
        sent = 0
        try:
            for letter in self._dead_letters:
                self._dead_letters_in_flight.append(self._publish_dead_letter(letter))
                sent += 1
        finally:
            del self._dead_letters[:sent]  # (one slice, not a pop(0) per letter of a large poll)

    def _publish_dead_letter(self, letter: _DeadLetter) -> tuple[_DeadLetter, Delivery]:
        """Hand one letter to the producer, smaller while the producer refuses it for its size."""
        producer = self._require(self.producer)
        limit = self.settings.kafka.max_request_size - _DEAD_LETTER_HEADROOM
        while True:
            try:
                delivery = publish_dead_letter(
                    producer,
                    self.topics.dead_letter,
                    letter.raw,
                    letter.reason,
                    letter.detail,
                    letter.source,
                    key=letter.key if letter.shrunk < _MOST_SHRUNK else None,
                    max_value_bytes=limit if letter.shrunk == 0 else 0,
                    key_omitted=letter.shrunk >= _MOST_SHRUNK and letter.key is not None,
                )
            except MessageTooLarge as exc:
                smaller = letter.smaller()
                if smaller is None:
                    raise
                log.warning("dead letter of %s too large, sent smaller: %s", _where(letter.source), exc)
                letter = smaller
                continue
            return letter, delivery

    def _acknowledge_dead_letters(self) -> None:
        """Wait until every dead letter sent is acknowledged; else queue the failed again, BrokerError.

        Called before a checkpoint saves offsets: past them, the refused records are never read
        again, so their dead letters must be in Kafka by then.
        """
        self._send_dead_letters()
        if not self._dead_letters_in_flight:
            return
        self._require(self.producer).flush(timeout_s=self.settings.kafka.request_timeout_ms / 1000)
        failed: list[_DeadLetter] = []
        error: BrokerError | None = None
        for letter, delivery in self._dead_letters_in_flight:
            try:
                delivery.wait(timeout_s=0)
            except MessageTooLarge as exc:  # (the broker's limit, below the producer's)
                smaller = letter.smaller()
                if smaller is None:
                    failed.append(letter)
                    error = exc
                else:
                    log.warning(
                        "dead letter of %s refused by the broker, sent smaller: %s",
                        _where(letter.source),
                        exc,
                    )
                    self._dead_letters.append(smaller)
            except BrokerError as exc:
                failed.append(letter)
                error = exc
        self._dead_letters_in_flight = []
        if failed:
            self._dead_letters[:0] = failed
            msg = f"{len(failed)} dead letter(s) not acknowledged ({error}); the checkpoint waits for them"
            raise BrokerError(msg)
        if self._dead_letters:  # (only letters refused for their size, each now smaller: at most twice more)
            self._acknowledge_dead_letters()

    # -- checkpoint and finalisation -----------------------------------------------------------------

    def checkpoint(self) -> list[WindowResult]:
        """Save state + offsets and finalise ready windows in one transaction; then commit and alert."""
        consumer = self._require(self.consumer)
        started = time.perf_counter()
        self._acknowledge_dead_letters()
        finalising = 0.0
        now = self.clock()
        now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
        lag = consumer.lag()
        parts: list[tuple[TopicPartition, OwnedPartition | LabelPartition]] = [
            *self.owned.items(),
            *self.label_parts.items(),
        ]
        for tp, owned in parts:
            behind = lag.get(tp)
            owned.caught_up = behind == 0
            if behind is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(behind)
            if owned.next_offset is None and behind == 0:
                # A partition that has had no message at all: checkpoint it empty at its position, or
                # it would never be stored and never count as idle, holding every window back forever.
                try:
                    owned.next_offset = consumer.position(tp)
                except BrokerError as exc:
                    log.info("position of empty partition %s unknown yet: %s", tp, exc)
        self._evict_orphan_labels()
        deliveries: list[_Delivery] = []
        finalised: list[WindowResult] = []
        saved: dict[TopicPartition, dict[WindowId, tuple[int, int]]] = {}
        offsets: dict[TopicPartition, int] = {}
        # Join changes are detached while they are written; a rollback puts them back (else lost).
        detached: list[tuple[OwnedPartition, JoinChanges]] = []
        joined: dict[TopicPartition, tuple[int, dict[str, int]]] = {}
        try:
            with self.store.transaction() as tx:
                # First, so that a replica finalising from our stored states has committed before we look
                # at what is finalised (see _retire_finalised_elsewhere).
                tx.lock_checkpoints(self.group)
                done = self._done(
                    tx,
                    [
                        key
                        for part in self.owned.values()
                        for key in (*part.windows.sealed, *part.windows.open)
                    ],
                )
                labelled = self._done(
                    tx, [key for part in self.owned.values() for key in part.tallies], Stage.LABELS
                )
                for part in self.owned.values():
                    self._retire_finalised_elsewhere(tx, part, done)
                    part.windows.drop(done)
                    for key in done:
                        part.windows.mark_stored(key)
                    self._forget_labelled(part, labelled)
                joins = tx.joins(self.group)
                for tp, part in self.owned.items():
                    if part.next_offset is None:
                        continue
                    checkpoint = Checkpoint(tp.topic, tp.partition, part.next_offset, part.state())
                    if tx.save_checkpoint(self.group, checkpoint, now=now_dt):
                        saved[tp] = part.windows.record_counts()
                        offsets[tp] = part.next_offset
                        if self.labelled:
                            changes = part.detach_join()
                            detached.append((part, changes))
                            joined[tp] = self._save_join(joins, tp.partition, part, changes)
                for tp, lp in self.label_parts.items():
                    serving = TopicPartition(self.topics.serving, tp.partition)
                    if lp.next_offset is None or (serving in self.owned and serving not in saved):
                        # What these labels did lives in the partner's join and counts: saved with them.
                        continue
                    checkpoint = Checkpoint(tp.topic, tp.partition, lp.next_offset, lp.state())
                    if tx.save_checkpoint(self.group, checkpoint, now=now_dt):
                        offsets[tp] = lp.next_offset
                finalise_started = time.perf_counter()
                stored = self._stored_partitions(tx, now)
                if stored is not None:
                    finalised = self._finalise(tx, now, deliveries, stored)
                    if self.labelled:
                        finalised += self._finalise_labels(tx, now, deliveries, stored)
                finalising = time.perf_counter() - finalise_started
        except BaseException:
            for part, changes in detached:
                part.reattach_join(changes)
            raise
        for tp, (evicted, stored_labels) in joined.items():
            self.counters.unmatched_labels += evicted
            self.owned[tp].stored_labels = stored_labels
        for tp, counts in saved.items():
            if tp in self.owned:
                self.owned[tp].saved = counts
        self.metrics.checkpoints.inc()
        self._last_checkpoint = time.monotonic()
        for result in finalised:
            key = self._window_id(result.key)
            if result.stage is Stage.LABELS:
                self.metrics.observe_labelled_window(result)
                self.counters.label_windows += 1
                for part in self.owned.values():
                    self._forget_labelled(part, {key})
                continue
            self.metrics.observe_window(result)
            self.counters.windows += 1
            for part in self.owned.values():
                part.windows.drop([key])
                part.windows.open.pop(key, None)
                part.windows.mark_stored(key)
        # Only offsets the store now holds: a partition's position after a restart without a stored
        # checkpoint is Kafka's committed offset, which must never be ahead of what the store saved.
        if offsets:
            try:
                consumer.commit(offsets)
            except BrokerError as exc:  # the store is the source of truth; a failed commit costs a replay
                self.metrics.broker_errors.inc()
                log.warning("offset commit failed (a restart resumes from the store's checkpoint): %s", exc)
        if self.dispatcher is not None:
            for payload, alert_id in deliveries:
                self.dispatcher.submit(payload, alert_id)
            self._sweep_outbox_if_due()
        self._spent("finalise", finalising)
        self._spent("checkpoint", time.perf_counter() - started - finalising)
        return finalised

    def _done(self, tx: Any, keys: Iterable[WindowId], stage: Stage = Stage.SERVING) -> set[WindowId]:
        """Which of these windows the store already holds at ``stage``."""
        wanted = sorted(set(keys))
        if self.spec.counted:
            found: set[WindowId] = tx.finalised_numbers(self.group, wanted, stage)
            return found
        size = self.spec.size_us
        return {(m, s) for m, s, _ in tx.finalised(self.group, [(m, s, s + size) for m, s in wanted], stage)}

    def _window_key(self, window: WindowId, span: tuple[int, int] = (0, 0)) -> WindowKey:
        """The stored identity of a window: its bounds (event time), or its number and its records' span."""
        model, ident = window
        if not self.spec.counted:
            return WindowKey(model, from_us(ident), from_us(ident + self.spec.size_us))
        return WindowKey(model, from_us(span[0]), from_us(span[1] + 1), ident)

    def _window_id(self, key: WindowKey) -> WindowId:
        """Inverse of :meth:`_window_key`."""
        return (key.model, key.index) if key.index is not None else (key.model, to_us(key.start))

    def _retire_finalised_elsewhere(self, tx: Any, part: OwnedPartition, done: set[WindowId]) -> None:
        """Retire this partition's windows that another daemon finalised (this partition idle there).

        Windows this daemon finalises itself are marked stored in its partitions at once
        (``PartitionWindows.mark_stored``), so later records never reach them; a window another replica
        finalised is only learnt of here, at the next checkpoint. That replica merged this partition's
        stored state (``part.saved`` counts it; the checkpoint lock, taken before ``done`` is read,
        makes sure no finalisation reads our states between). The records folded into the window
        since can no longer count in it: they are reported as late in a window still to be finalised
        (:meth:`_late_target`), never dropped silently, and the records it did count are not reported
        again. A count-window partition also moves its numbering past the last finalised window.
        """
        retired: list[tuple[WindowId, WindowAccumulator, int, int]] = []
        for key in [k for k in (*part.windows.open, *part.windows.sealed) if k in done]:
            was_open = key in part.windows.open
            window = part.windows.open.pop(key) if was_open else part.windows.sealed[key]
            stored_records, stored_late = part.saved.get(key, (0, 0))
            lost = max(0, window.records - stored_records)
            lost_late = max(0, window.late_records - stored_late)
            # A window counted in full is just dropped: no late target (that would create an empty
            # next window, finalised as a 0-record result if the partition stays idle) — except that a
            # count window's partition must still move its numbering past it (in _late_target).
            if lost or lost_late or (was_open and self.spec.counted):
                retired.append((key, window, lost, lost_late))
        # Targets are chosen once every retired window is out of the way, never one of them.
        for key, window, lost, lost_late in retired:
            target = self._late_target(tx, part, key, done)
            if self.spec.counted and window.first_event_us is not None and window.last_event_us is not None:
                target.widen(window.first_event_us, window.last_event_us)
            target.late_records += lost + lost_late
            self.counters.late += lost
            if lost:
                self.metrics.late_records.labels(key[0]).inc(lost)

    def _late_target(
        self, tx: Any, part: OwnedPartition, key: WindowId, done: set[WindowId]
    ) -> WindowAccumulator:
        """The window where the records of retired window ``key`` count as late.

        The first window, from the one they arrived in (the partition's newest), that is after ``key``
        and not finalised or stored yet: late counts added to a finalised window would be lost again.
        """
        model, windows = key[0], part.windows
        if self.spec.counted:
            last = tx.last_number(self.group, model)
            number = max(
                key[1] + 1, 0 if last is None else last + 1, windows.counts.get(model, 0) // self.spec.share
            )
            while (model, number) in done:
                number += 1
            windows.skip_to(model, number)
            target = (model, number)
        else:
            newest = windows.max_event_us
            arrived = key[1] if newest is None else self.spec.start_of(newest)
            target = (model, windows.late_window(model, key[1], arrived, done))
        return windows.writable(target, self.monitors[model].new_accumulator)

    def _save_join(
        self, joins: JoinRows, partition: int, part: OwnedPartition, changes: JoinChanges
    ) -> tuple[int, dict[str, int]]:
        """Write a partition's detached join changes and evict its stored orphan labels.

        Only with the partition's checkpoint (saved in this transaction): the rows must match its offsets.
        Returns (labels evicted, early labels now stored), for the caller to apply once it committed.
        """
        joins.save(
            partition,
            settled=changes.settled,
            predictions=changes.awaiting,
            labels=changes.pending,
            tallies=changes.pairs,
        )
        bound = self._orphan_bound(part)
        # Always asked of the store, not only when the labels known here are due: a row written by a
        # previous owner that had lost the partition without noticing yet is evicted (and counted) too.
        evicted = 0 if bound is None else joins.evict_labels(partition, bound)
        stored = {
            rid: event_us
            for rid, event_us in part.stored_labels.items()
            if rid not in changes.settled and (bound is None or event_us >= bound)
        }
        stored.update((rid, early.event_us) for rid, early in changes.pending.items())
        return evicted, stored

    def _orphan_bound(self, part: OwnedPartition) -> int | None:
        """Event time below which a waiting label's prediction can no longer be folded (None: no bound).

        A prediction precedes its label in event time, and is folded unless its window is sealed: once
        the label's own window is sealed, so is every window its prediction can be in. The watermark
        itself is no such bound — a prediction just before it can still fall into an open window. Count
        windows seal by number, not time: there the watermark is the bound.
        """
        watermark = part.windows.watermark_us
        if watermark is None or self.spec.counted:
            return watermark
        return self.spec.start_of(watermark)

    def _evict_orphan_labels(self) -> None:
        """Drop early labels whose prediction can no longer come (see :meth:`_orphan_bound`)."""
        for part in self.owned.values():
            bound = self._orphan_bound(part)
            if bound is None or not part.pending:
                continue
            orphans = [rid for rid, (_label, event_us, _) in part.pending.items() if event_us < bound]
            for rid in orphans:
                del part.pending[rid]
            self.counters.unmatched_labels += len(orphans)

    @staticmethod
    def _forget_labelled(part: OwnedPartition, keys: set[WindowId]) -> None:
        """Forget windows whose label stage is finalised (their stored rows went with the finalisation)."""
        if not keys:
            return
        for key in keys:
            part.tallies.pop(key, None)
        stale = [rid for rid, wait in part.awaiting.items() if (wait.model, wait.window) in keys]
        for rid in stale:
            del part.awaiting[rid]

    def _finalise_labels(
        self,
        tx: Any,
        now: float,
        deliveries: list[_Delivery],
        stored: list[tuple[int, OwnedPartition, bool]],
    ) -> list[WindowResult]:
        """Judge label-joined performance of windows whose label horizon has passed in every partition."""
        labels = tx.load_checkpoints(self.group, [self.topics.labels])
        now_us = int(now * 1e6)
        partitions: list[tuple[OwnedPartition, bool, int | None, bool]] = []
        for number, part, serving_idle in stored:
            label_checkpoint = labels.get((self.topics.labels, number))
            label_state = label_checkpoint.state if label_checkpoint is not None else {}
            max_label = label_state.get("max_event_us")
            partitions.append(
                (
                    part,
                    serving_idle,
                    None if max_label is None else int(max_label),
                    self._idle(label_state, now_us),
                )
            )
        candidates = {key for part, *_ in partitions for key in part.tallies}
        done = self._done(tx, candidates, Stage.LABELS)
        joins = tx.joins(self.group)
        results: list[WindowResult] = []
        for model, start in sorted(candidates, key=lambda k: (k[1], k[0])):
            if (model, start) in done or model not in self.labelled:
                continue
            key = self._labelled_key(tx, (model, start))
            if key is None:
                continue  # a count window whose serving stage is not stored yet: its end is unknown
            # The horizon is over in a labels partition once its label watermark passed it; an idle one
            # (caught up, no label for idle_timeout_s) has no watermark to move, so the wall clock
            # stands in for it. Idle alone is not enough: labels that come seldom (one every few
            # minutes, an hour's horizon) would leave a window judged on a few of them, the rest lost.
            over = to_us(key.end) + self.horizon_us + self.spec.lateness_us
            ready = all(
                (serving_idle or part.windows.passed((model, start)))
                and ((labels_idle and now_us >= over) or (max_label is not None and max_label >= over))
                for part, serving_idle, max_label, labels_idle in partitions
            )
            if not ready:
                continue
            # The pairs are in the join's rows (this daemon's written earlier in this transaction); the
            # partitions' tallies add their counts (and the pairs of an earlier version's checkpoint).
            merged = joins.pairs((model, start))
            for part, *_ in partitions:
                tally = part.tallies.get((model, start))
                if tally is not None:
                    merged = merged.merge(tally)
            monitor = self.monitors[model]
            baseline = monitor.baseline
            kind = baseline.prediction_kind or PredictionKind.SCORE
            label_sketch = (
                baseline.profile.categorical(LABEL_COLUMN)
                if LABEL_COLUMN in baseline.profile.layout.names and kind is not PredictionKind.VALUE
                else None
            )
            outcomes = outcome_arrays(merged)
            findings = evaluate_window(
                merged,
                kind,
                baseline.metrics,
                self.performance,
                label_sketch,
                outcomes=outcomes,
                holdout_errors=baseline.metric_errors,
            )
            for version, values in sorted(outcomes.candidates.items()):
                options = monitor.shadow_options
                findings += labelled_findings(
                    version, outcomes.predictions, values, outcomes.labels, kind, options
                )
            result = WindowResult(
                key=key,
                records=merged.predicted,
                findings=tuple(findings),
                context={"pairs": len(merged.ids), "beyond_horizon": merged.beyond_horizon},
                stage=Stage.LABELS,
            )
            window_id = tx.finalise_window(self.group, result, now=dt.datetime.fromtimestamp(now, dt.UTC))
            if window_id is None:
                continue
            joins.forget_window((model, start))
            deliveries += self._raise_alerts(tx, window_id, result, now)
            results.append(result)
        return results

    def _labelled_key(self, tx: Any, window: WindowId) -> WindowKey | None:
        """The label stage's key of a window: the serving stage's (for a count window, as stored)."""
        if not self.spec.counted:
            return self._window_key(window)
        bounds = tx.window_bounds(self.group, window[0], window[1])
        return None if bounds is None else self._window_key(window, (bounds[0], bounds[1] - 1))

    def _check_co_partitioned(self) -> None:
        """Labels join predictions partition by partition: both topics need the same partition count.

        Else some serving partition has no labels partner, its label horizon never passes, and its
        windows' performance is never judged while their join state grows (a ConfigError: exit 2).
        """
        producer = self._require(self.producer)
        labels = len(producer.partitions_for(self.topics.labels))
        serving = self._serving_partitions()
        if labels != serving:
            producer.close(timeout_s=1.0)
            self.producer = None
            msg = (
                f"topics.labels ({self.topics.labels!r}) has {labels} partition(s) and topics.serving "
                f"({self.topics.serving!r}) {serving}: labels are joined to predictions partition by "
                "partition (both keyed by request id), so the two topics need the same partition count"
            )
            raise ConfigError(msg)

    def _serving_partitions(self) -> int:
        if self._partition_count is None:
            producer = self._require(self.producer)
            self._partition_count = len(producer.partitions_for(self.topics.serving))
        return self._partition_count

    def _stored_partitions(self, tx: Any, now: float) -> list[tuple[int, OwnedPartition, bool]] | None:
        """Every serving partition's stored state, decoded once per checkpoint, and whether it is idle.

        None while some partition has no checkpoint yet: it may still hold records of any window. Both
        finalisers (serving and labels stage) work from this one decoding. The caller holds the
        group's checkpoint lock (taken first in :meth:`checkpoint`).
        """
        # A partition saved from its object in this very transaction is that object's state: not
        # decoded again (decoding every window's profile was the largest part of a checkpoint).
        held = {
            (tp.topic, tp.partition): part.next_offset
            for tp, part in self.owned.items()
            if part.next_offset is not None
        }
        stored = tx.load_checkpoints(self.group, [self.topics.serving], held=held)
        if len(stored) < self._serving_partitions():
            return None
        now_us = int(now * 1e6)
        partitions: list[tuple[int, OwnedPartition, bool]] = []
        for (topic, number), cp in sorted(stored.items()):
            if cp.state is None:
                mine = self.owned[TopicPartition(topic, number)]
                partitions.append(
                    (number, mine, self._quiet(mine.caught_up, mine.last_record_wall_us, now_us))
                )
                continue
            part = OwnedPartition.restore(self.spec, cp.next_offset, cp.state, now_us, self.horizon_us)
            partitions.append((number, part, self._idle(cp.state, now_us)))
        return partitions

    def _idle(self, state: dict[str, Any], now_us: int) -> bool:
        """A caught-up partition that has had no new record for the idle timeout holds no window back."""
        return self._quiet(
            bool(state.get("caught_up")), int(state.get("last_record_wall_us", now_us)), now_us
        )

    def _quiet(self, caught_up: bool, last_record_wall_us: int, now_us: int) -> bool:
        return caught_up and now_us - last_record_wall_us >= self.settings.window.idle_timeout_s * 1e6

    def _finalise(
        self,
        tx: Any,
        now: float,
        deliveries: list[_Delivery],
        stored: list[tuple[int, OwnedPartition, bool]],
    ) -> list[WindowResult]:
        partitions = [(part.windows, idle) for _number, part, idle in stored]
        candidates: set[WindowId] = set()
        for windows, idle in partitions:
            candidates |= set(windows.sealed)
            if idle:
                candidates |= set(windows.open)
        done = self._done(tx, candidates)
        results: list[WindowResult] = []
        for model, start in sorted(candidates, key=lambda k: (k[1], k[0])):
            if (model, start) in done or model not in self.monitors:
                continue
            ready = all(
                idle or (model, start) in windows.sealed or windows.passed((model, start))
                for windows, idle in partitions
            )
            if not ready:
                continue
            parts: list[WindowAccumulator] = []
            for windows, idle in partitions:
                part = windows.sealed.get((model, start)) or (
                    windows.open.get((model, start)) if idle else None
                )
                if part is not None:
                    parts.append(part)
            merged = parts[0]
            for part in parts[1:]:
                merged = merged.merge(part)
            if merged.first_event_us is not None and merged.last_event_us is not None:
                span = (merged.first_event_us, merged.last_event_us)
            else:  # a count window holding only late counts: dated at the partitions' newest event
                newest = max((w.max_event_us or 0 for w, _idle in partitions), default=0)
                span = (newest, newest)
            key = self._window_key((model, start), span)
            previous_state = tx.previous_profile(self.group, key)
            previous = None if previous_state is None else Profile.from_dict(previous_state)
            result = self.monitors[model].judge(key, merged, previous)
            window_id = tx.finalise_window(
                self.group,
                result,
                now=dt.datetime.fromtimestamp(now, dt.UTC),
                profile=merged.profile.to_dict(),
            )
            if window_id is None:
                continue  # another daemon won the race; it alerts
            deliveries += self._raise_alerts(tx, window_id, result, now)
            results.append(result)
        return results

    def _raise_alerts(self, tx: Any, window_id: int, result: WindowResult, now: float) -> list[_Delivery]:
        """Alert on a flag that persists (k of the last m windows) or is severe; once per episode.

        A new alert is held in the store's outbox in the same transaction until its sinks have taken it.
        """
        policy = self.settings.policy
        model = result.key.model
        start_us = to_us(result.key.start)
        history = tx.recent_flags(self.group, result.key, policy.persistence_m - 1, result.stage)
        window = start_us if result.key.index is None else f"n{result.key.index}"
        open_alerts = tx.open_alerts(self.group, model, result.stage)
        resolved: set[tuple[str, str]] = set()
        payloads: list[_Delivery] = []
        for finding in result.findings:
            key = (finding.check.value, finding.subject)
            if not finding.flagged:
                if key in open_alerts:
                    resolved.add(key)
                continue
            persisted = 1 + sum(key in flags for flags in history)
            if finding.severity is not Severity.CRITICAL and persisted < policy.persistence_k:
                continue
            if key in open_alerts:
                continue
            alert = NewAlert(
                dedup_key=f"{self.group}/{model}/{result.stage.value}/{key[0]}/{key[1]}/{window}",
                model=model,
                check=finding.check,
                subject=finding.subject,
                severity=finding.severity,
                message=finding.reason,
                evidence={
                    "effect": finding.effect,
                    "threshold": finding.threshold,
                    "p_value": finding.p_value,
                    "method": finding.method,
                    "persisted_windows": persisted,
                    **finding.detail,
                },
            )
            raised = dt.datetime.fromtimestamp(now, dt.UTC)
            alert_id = tx.add_alert(window_id, alert, now=raised)
            if alert_id is not None:
                tx.hold_for_delivery(self.group, alert_id, now=raised)
                self.metrics.alerts.labels(model, key[0]).inc()
                payloads.append((alert_payload(alert, result.key), alert_id))
        if resolved:
            tx.resolve_alerts(self.group, model, result.stage, resolved)
        return payloads

    def _resend_undelivered(self, created_before_us: int | None) -> int:
        """Queue the group's outbox alerts (recorded before then) that are not in delivery already."""
        dispatcher: AlertDispatcher = self._require(self.dispatcher)
        pending = self.store.undelivered(self.group, created_before_us=created_before_us)
        queued = sum(dispatcher.submit(alert_payload(u.alert, u.key), u.id) for u in pending)
        if queued:
            log.info("sending again %d alerts whose delivery never completed", queued)
        return queued

    def _sweep_outbox_if_due(self) -> None:
        """Every ``alerts.retry_interval_s``: resend what a sink could not take, drop what is too old.

        Resent: the outbox alerts at least that old; dropped: those older than ``give_up_after_s``.
        """
        interval = self.settings.alerts.retry_interval_s
        now = self.clock()
        if now - self._last_alert_sweep < interval:
            return
        self._last_alert_sweep = now
        give_up = self.settings.alerts.give_up_after_s
        try:
            expired = self.store.expire_outbox(self.group, int((now - give_up) * 1e6))
            if expired:
                log.warning(
                    "gave up delivering %d alerts still undelivered after %g s (they stay in the store)",
                    expired,
                    give_up,
                )
            # What left the outbox (given up on, or settled by another replica) is forgotten.
            self._require(self.dispatcher).retain(self.store.outbox_ids(self.group))
            self._resend_undelivered(int((now - interval) * 1e6))
        except StoreError as exc:  # the next sweep tries again; the checkpoint itself is done
            log.warning("outbox sweep failed: %s", exc)

    def _alert_settled(self, alert_id: int) -> None:
        """Every sink delivered (or refused for good) this alert: out of the outbox (a dispatcher thread)."""
        self.store.delivered([alert_id])

    def _send_alert_to_topic(self, payload: dict[str, Any]) -> Answer:
        producer = self.producer
        if producer is None:  # closed (a shutdown overtook the delivery): sent again at the next start
            return Answer.FAILED
        try:
            sent = producer.send(self.topics.alerts, json_bytes(payload), key=payload["model"].encode())
            sent.wait(_ALERT_ACK_TIMEOUT_S)  # (on the dispatcher's thread) acknowledged, or sent again
            return Answer.DELIVERED
        except BrokerError as exc:
            log.warning("alert %s not published: %s", payload["dedup_key"], exc)
            return Answer.FAILED

    # -- operations ----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Healthy while polls and checkpoints keep succeeding.

        Polls alone are not enough: with the store failing (or a checkpoint refused at every retry)
        polls go on while nothing is saved or committed and unsaved state grows.
        """
        now = time.monotonic()
        limit = max(30.0, 3 * self.settings.checkpoint_interval_s)
        since = now - self._last_poll_ok
        if since > limit:
            return False, f"no successful poll for {since:.0f}s"
        since = now - self._last_checkpoint
        if since > limit:
            return False, f"no successful checkpoint for {since:.0f}s: nothing is saved or committed"
        return True, f"ok: {len(self.owned)} partition(s) owned, {self.counters.records} records folded"

    def status(self) -> dict[str, Any]:
        """Latest window per model and open alerts, from the store (what /status serves)."""
        latest: dict[str, Any] = {}
        for stored in self.store.windows(group=self.group, limit=200):
            result = stored.result
            if result.key.model in latest:
                continue
            latest[result.key.model] = {
                "window_start": result.key.start.isoformat(),
                "window_end": result.key.end.isoformat(),
                "window_index": result.key.index,
                "records": result.records,
                "late_records": result.late_records,
                "flagged": [
                    {"check": f.check.value, "subject": f.subject, "reason": f.reason} for f in result.flagged
                ],
            }
        # Served from the HTTP thread while the poll loop changes these: copied in one step each (a
        # Python-level loop over a dict another thread resizes can raise mid-way).
        owned = tuple(self.owned)
        dead_letters = dict(self.counters.dead_letters)
        return {
            "group": self.group,
            "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in owned),
            "records": self.counters.records,
            "dead_letters": dead_letters,
            "models": latest,
            "open_alerts": self.store.open_alert_count(self.group),
        }

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            msg = "the daemon is not open: call open() first"
            raise ConfigError(msg)
        return value


__all__ = ["MonitorDaemon", "OwnedPartition", "from_micros", "load_monitors", "to_micros"]
