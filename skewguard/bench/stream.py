"""Benchmark: the monitor daemon's end-to-end throughput against raw kafka-python consumption.

One process, one embedded broker (Tansu), the same messages for every side:

1. A synthetic feature set of ``features`` pass-through features (70 % numeric, 25 % categorical, one
   boolean) and its baseline are built in a temporary directory.
2. ``records`` serving records are produced twice: as single-record messages to one topic, and as
   ``batch_size``-record columnar envelopes (what the ServingLogger sends) to another. Records carry
   features and a score, **no raw inputs**, so what is measured is the monitoring path (decode →
   windows → profile fold → verdicts), not the implementation-skew replay. Event times are in order
   and spread over ``windows`` event-time windows; one closing record per partition, in the window
   after, seals the last of them (rates count it).
3. For each topic, in the same run, the time to consume every message is measured for

   * **raw**: a :class:`~skewguard.io.kafka.RawConsumer` (kafka-python's ``KafkaConsumer.poll`` plus one
     tuple per message, which the daemon pays too) in its own consumer group, reading each value's
     length, decoding nothing: the ceiling for any Python consumer of these messages;
   * **orjson**: the same plus ``orjson.loads`` of each value: the ceiling for any consumer that
     parses the JSON, before it does anything with it;
   * **histogram**: the same plus a histogram of every feature of every record, per poll — numeric
     values binned between 21 fixed edges (``searchsorted`` + ``bincount`` over the column, a packed
     column read as one array; 22 counts: below, 20 bins, above or null), categorical and boolean
     values counted (``collections.Counter``) — and nothing else: no windows, no state, no store, no
     verdicts. The least any drift monitor computes from these messages in Python, so the ceiling for
     the daemon's ratio (:func:`histograms`);
   * **daemon**: a :class:`~skewguard.daemon.MonitorDaemon` with a SQLite store, stepped until every
     record is folded and every window is finalised (judged and stored) — so the checkpoints, the
     finalisation and the store writes are inside the time.

Warm-up: group joins are excluded from every run. Every consumer joins its group on the still-empty
topics before anything is produced, and production waits until the fetches those joins left waiting at
the broker have come back empty; the clock of each run starts at its first poll after production, so
the first fetch is inside every time. Each topic is then read once, untimed, so no side pays the
broker's first (cold) read of the data; the readers are rewound to the start for their timed runs.
Nothing else is excluded. With ``repeats > 1`` the sides
alternate, each reader is rewound to the start for its next run, each daemon run has its own group and
store, and the best rate of each side counts.

Throughputs are records per second (a 100-record envelope counts 100). ``peak_rss_mb`` is the peak
resident memory of this process (``getrusage``): the producer, the readers and the daemons included,
so it grows with ``repeats``. The broker is a separate process, reported as ``broker_peak_rss_mb``
(Linux only).
"""

from __future__ import annotations

import binascii
import datetime as dt
import operator
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd

from features import Feature, FeatureKind, FeatureSet
from features.inputs import InputColumns, InputType, RawInput
from skewguard.baseline import Baseline, BaselineOptions, build_baseline
from skewguard.daemon import MonitorDaemon
from skewguard.errors import ConfigError, SkewguardError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings, RawConsumer, RawProducer, ensure_topics
from skewguard.monitor import ModelMonitor
from skewguard.records import ServingRecord, encode_record, encode_records
from skewguard.settings import MonitorSettings, load_settings
from skewguard.store import Store

__all__ = ["BenchStreamError", "Side", "bench_stream", "histograms", "stream_feature_set"]

MODEL: Final = "bench"
#: Windows start at a window boundary, so ``windows`` windows hold the records exactly.
T0: Final = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WINDOW_S: Final = 60.0
#: Long enough for a slow, shared machine; a run that exceeds it is reported as an error, not a figure.
PHASE_TIMEOUT_S: Final = 600.0
_POLL_MS: Final = 200
_JOIN_POLL_MS: Final = 50
_JOIN_TIMEOUT_S: Final = 120.0


class BenchStreamError(SkewguardError):
    """The streaming benchmark could not complete a measurement (a client never joined, records lost)."""


# --------------------------------------------------------------------------------------------------
# the synthetic feature set


def _passthrough(name: str) -> Callable[[InputColumns, Any], pd.Series[Any]]:
    def compute(raw: InputColumns, params: Any) -> pd.Series[Any]:
        return raw[name]

    return compute


def _layout(features: int) -> tuple[list[str], list[str], str]:
    """Names of the numeric, categorical and the boolean feature for a feature set of this width."""
    if features < 5:
        msg = f"features must be >= 5 (numeric, categorical and boolean ones), got {features}"
        raise ConfigError(msg)
    n_cat = max(1, round(features * 0.25))
    n_num = features - n_cat - 1
    return [f"num_{i:02d}" for i in range(n_num)], [f"cat_{j:02d}" for j in range(n_cat)], "flag"


def _categories(j: int) -> tuple[str, ...]:
    return tuple(f"c{j}_{v}" for v in range(3 + (5 * j) % 17))


def stream_feature_set(features: int = 20) -> FeatureSet:
    """A feature set of ``features`` pass-through features over raw inputs of the same names.

    Pass-through keeps the baseline build cheap; the monitor never runs the computations here, since
    the benchmark's records carry no raw inputs.
    """
    numeric, categorical, flag = _layout(features)
    inputs = [RawInput(n, InputType.FLOAT, nullable=i % 5 == 4) for i, n in enumerate(numeric)]
    inputs += [RawInput(n, InputType.STRING) for n in categorical]
    inputs.append(RawInput(flag, InputType.BOOL))
    feature_set = FeatureSet(f"bench_stream_{features}", inputs)
    for i, name in enumerate(numeric):
        feature_set.add(Feature(name, FeatureKind.NUMERIC, (name,), _passthrough(name), nullable=i % 5 == 4))
    for j, name in enumerate(categorical):
        feature_set.add(
            Feature(name, FeatureKind.CATEGORICAL, (name,), _passthrough(name), categories=_categories(j))
        )
    feature_set.add(Feature(flag, FeatureKind.BOOLEAN, (flag,), _passthrough(flag)))
    return feature_set


def _draw(features: int, n: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    """``n`` rows of raw values per input, as plain Python lists (nulls as None)."""
    numeric, categorical, flag = _layout(features)
    columns: dict[str, list[Any]] = {}
    for i, name in enumerate(numeric):
        values = rng.normal(float(i), 1.0 + i % 3, n) if i % 2 == 0 else rng.gamma(2.0, 1.0 + i % 4, n)
        column: list[Any] = values.tolist()
        if i % 5 == 4:
            for position in np.flatnonzero(rng.random(n) < 0.01).tolist():
                column[position] = None
        columns[name] = column
    for j, name in enumerate(categorical):
        values = np.asarray(_categories(j), dtype=object)
        weights = 1.0 / np.arange(1, len(values) + 1)
        columns[name] = rng.choice(values, size=n, p=weights / weights.sum()).tolist()
    columns[flag] = (rng.random(n) < 0.3).tolist()
    return columns


def _build_baseline(
    feature_set: FeatureSet, features: int, directory: Path, seed: int, *, rows: int = 20_000
) -> Baseline:
    """Fit, profile and calibrate the synthetic feature set on ``rows`` training rows; save it."""
    rng = np.random.default_rng(seed)
    train = pd.DataFrame(_draw(features, rows, rng))
    numeric, _, _ = _layout(features)
    for name in numeric:
        train[name] = train[name].astype("float64")
    train["score"] = rng.beta(2.0, 5.0, rows)

    def chunks() -> Iterator[pd.DataFrame]:
        yield train

    baseline = build_baseline(
        feature_set,
        chunks,
        model=MODEL,
        prediction_column="score",
        options=BaselineOptions(window_size=min(1_000, rows // 10), calibration_draws=50, seed=seed),
    )
    # Saved without the feature set: that would also write a Great Expectations suite, which the
    # daemon never reads (and importing GX costs seconds and ~100 MB this benchmark would report).
    baseline.save(directory)
    return baseline


# --------------------------------------------------------------------------------------------------
# producing


@dataclass(frozen=True, slots=True)
class _Produced:
    single_messages: int
    batch_messages: int
    seconds: float


def _produce(
    bootstrap: str,
    single_topic: str,
    batch_topic: str,
    *,
    baseline: Baseline,
    features: int,
    records: int,
    batch_size: int,
    windows: int,
    partitions: int,
    seed: int,
) -> _Produced:
    """Write the same records as single-record messages and as batch envelopes, chunk by chunk.

    Chunks keep the process's memory flat whatever ``records`` is: nothing but the chunk in hand is held.
    Last, each partition gets one closing record in the window after the last: it seals every window
    of the benchmark (lateness is 0), so all of them can be finalised, and it stays in its own open
    window, which nobody waits for.
    """
    rng = np.random.default_rng(seed + 1)
    step_us = windows * WINDOW_S * 1e6 / records
    state_hash = baseline.state_hash
    started = time.perf_counter()
    producer = RawProducer(KafkaSettings.local(bootstrap))
    single = batch = 0
    try:
        chunk = batch_size * max(1, 5_000 // batch_size)
        for first in range(0, records, chunk):
            n = min(chunk, records - first)
            columns = _draw(features, n, rng)
            names = list(columns)
            scores = rng.beta(2.0, 5.0, n).tolist()
            pending: list[ServingRecord] = []
            for offset, values in enumerate(zip(*columns.values(), strict=True)):
                index = first + offset
                record = ServingRecord(
                    request_id=f"r{index:09d}",
                    event_time=T0 + dt.timedelta(microseconds=int(index * step_us)),
                    model=MODEL,
                    model_version="v1",
                    feature_state_hash=state_hash,
                    features=dict(zip(names, values, strict=True)),
                    prediction=scores[offset],
                )
                # Round-robin partitions: every partition gets messages even in a tiny run.
                key = record.request_id.encode()
                producer.send(single_topic, encode_record(record), key=key, partition=index % partitions)
                single += 1
                pending.append(record)
                if len(pending) == batch_size:
                    envelope = encode_records(pending)
                    producer.send(batch_topic, envelope, key=key, partition=batch % partitions)
                    batch += 1
                    pending = []
        for partition in range(partitions):
            closing = ServingRecord(
                request_id=f"closing-{partition}",
                event_time=T0 + dt.timedelta(seconds=windows * WINDOW_S, microseconds=partition),
                model=MODEL,
                model_version="v1",
                feature_state_hash=state_hash,
                features=dict(zip(names, next(zip(*columns.values(), strict=True)), strict=True)),
                prediction=0.5,
            )
            producer.send(single_topic, encode_record(closing), partition=partition)
            producer.send(batch_topic, encode_records([closing]), partition=partition)
            single += 1
            batch += 1
        producer.flush(120)
    finally:
        producer.close(5)
    return _Produced(single, batch, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------
# measuring


class Side(StrEnum):
    """What consumes the messages in one timed run."""

    RAW = "raw"
    """kafka-python through RawConsumer; each value's length is read, nothing is decoded."""
    ORJSON = "orjson"
    """As RAW, plus ``orjson.loads`` of each value: what any consumer that parses the JSON must pay."""
    HISTOGRAM = "histogram"
    """As ORJSON, plus a histogram of every feature of every record: the least any drift monitor does."""
    DAEMON = "daemon"
    """The monitor daemon, until every record is folded and every window is finalised."""


@dataclass(frozen=True, slots=True)
class _Timing:
    records: int
    seconds: float
    #: For a daemon run: the seconds of its timed section by phase of the poll loop.
    phases: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


_READERS: Final = (Side.RAW, Side.ORJSON, Side.HISTOGRAM)
#: The histogram side's bin edges: fixed, since binning costs the same wherever the edges are.
_EDGES: Final = np.linspace(-10.0, 40.0, 21)


def histograms(objects: Sequence[Any], names: Sequence[str], numeric: Sequence[str]) -> dict[str, Any]:
    """A histogram of every feature over parsed messages (single records or columnar envelopes).

    The histogram side's work (see the module docstring), as fast as plain Python and numpy make it:
    features gathered into one column per poll (a record's features by ``itemgetter``, an envelope's
    column as it is), numeric columns binned as arrays (22 counts over :data:`_EDGES`: below the first
    edge, the 20 bins, and above the last edge or null, as ``searchsorted`` sorts NaN last), every
    other column counted. Returns the bin counts (numeric) and the value counts (others) by feature.
    """
    numeric_names = set(numeric)
    parts: dict[str, list[Any]] = {name: [] for name in names}
    records = [obj["features"] for obj in objects if "columns" not in obj]
    if records:
        for name, column in zip(
            names, zip(*map(operator.itemgetter(*names), records), strict=True), strict=True
        ):
            parts[name].append(list(column))
    for obj in objects:
        body = obj.get("columns")
        if body is not None:
            for name in names:
                parts[name].append(body["features"][name])
    out: dict[str, Any] = {}
    for name, columns in parts.items():
        if name not in numeric_names:
            counts: Counter[Any] = Counter()
            for column in columns:
                counts.update(column)
            out[name] = counts
            continue
        arrays = [
            np.frombuffer(binascii.a2b_base64(column["f8"]), dtype="<f8")
            if isinstance(column, dict)
            else np.asarray(column, dtype=np.float64)  # (None becomes NaN)
            for column in columns
        ]
        values = np.concatenate(arrays) if arrays else np.empty(0)
        out[name] = np.bincount(np.searchsorted(_EDGES, values), minlength=len(_EDGES) + 1)
    return out


class _Reader:
    """A group member that reads the raw messages (ORJSON: parses them; HISTOGRAM: bins their features)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        max_poll_records: int,
        *,
        side: Side,
        names: Sequence[str],
        numeric: Sequence[str],
    ) -> None:
        self.consumer = RawConsumer(
            kafka, [topic], group_id=f"bench-raw-{uuid.uuid4().hex[:8]}", max_poll_records=max_poll_records
        )
        self.max_poll_records = max_poll_records
        self.side = side
        #: The features a histogram is made of (all of them), and which of them are numeric.
        self.names, self.numeric = names, numeric

    def joined(self) -> bool:
        """One short poll towards the group join; True once partitions are assigned."""
        if self.consumer.assignment():
            return True
        if self.consumer.poll(timeout_ms=_JOIN_POLL_MS):
            msg = "a raw consumer received records while joining: the topic was not empty"
            raise BenchStreamError(msg)
        return bool(self.consumer.assignment())

    def measure(self, messages: int, records: int, *, rewind: bool = False) -> _Timing:
        """Time reading ``messages`` messages (``records`` records), from the first poll after production.

        ``rewind`` first seeks back to the start of every partition, for a repeated run (the seek's
        offset lookup then happens inside the timed first poll).
        """
        if rewind:
            self.consumer.seek_to_beginning()
        poll, limit, loads = self.consumer.poll, self.max_poll_records, orjson.loads
        parse, histogram = self.side is not Side.RAW, self.side is Side.HISTOGRAM
        seen = size = 0
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        started = time.perf_counter()
        while seen < messages:
            batch = poll(_POLL_MS, limit)
            parsed = []  # kept for the histogram side only: the orjson side drops each parse at once
            for message in batch:
                value = message.value or b""
                size += len(value)
                if histogram:
                    parsed.append(loads(value))
                elif parse:
                    loads(value)
            if parsed:
                histograms(parsed, self.names, self.numeric)
            seen += len(batch)
            if time.monotonic() > deadline:
                msg = f"a raw consumer read {seen} of {messages} messages within {PHASE_TIMEOUT_S:g} s"
                raise BenchStreamError(msg)
        seconds = time.perf_counter() - started
        if seen != messages or size == 0:
            msg = f"a raw consumer read {seen} messages ({size} bytes), expected {messages}"
            raise BenchStreamError(msg)
        return _Timing(records, seconds)

    def close(self) -> None:
        self.consumer.close(timeout_s=5.0)  # idempotent


class _DaemonRun:
    """A MonitorDaemon with its own group and SQLite store, joined and waiting for the records."""

    def __init__(self, settings: MonitorSettings, monitor: ModelMonitor, store_url: str) -> None:
        self.store = Store(store_url)
        self.daemon = MonitorDaemon(settings, {MODEL: monitor}, self.store)
        self.daemon.open()
        self.partitions = settings.topics.create_partitions or 1
        self.closed = False

    def joined(self) -> bool:
        """One daemon step towards the group join; True once it owns every serving partition."""
        if len(self.daemon.owned) < self.partitions:
            self.daemon.step()
            if self.daemon.counters.records:
                msg = "the daemon received records while joining: the topic was not empty"
                raise BenchStreamError(msg)
        return len(self.daemon.owned) == self.partitions

    def measure(self, records: int, windows: int) -> _Timing:
        """Time the daemon from its first step after production until every window is stored."""
        daemon = self.daemon
        counters = daemon.counters
        before = dict(counters.seconds)  # the joins' polls are not part of the run
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        started = time.perf_counter()
        while counters.records < records:  # the benchmark's records and the closing ones
            daemon.step()
            if counters.dead_letters or counters.late:
                msg = f"benchmark records were refused or late: {counters}"
                raise BenchStreamError(msg)
            if time.monotonic() > deadline:
                msg = (
                    f"the daemon folded {counters.records} of {records} records within {PHASE_TIMEOUT_S:g} s"
                )
                raise BenchStreamError(msg)
        # Every partition has folded its closing record, so every benchmark window is sealed everywhere:
        # the next checkpoint finalises them (another one only if a checkpoint was already under way).
        while counters.windows < windows:
            daemon.checkpoint()
            if time.monotonic() > deadline:
                done = counters.windows
                msg = f"the daemon finalised {done} of {windows} windows within {PHASE_TIMEOUT_S:g} s"
                raise BenchStreamError(msg)
        seconds = time.perf_counter() - started
        phases = {phase: round(spent - before[phase], 5) for phase, spent in counters.seconds.items()}
        return _Timing(counters.records, seconds, phases)

    def stored(self) -> tuple[int, int]:
        """Finalised windows and the records they hold, read back from the store."""
        stored = self.store.windows(group=self.daemon.group, limit=10_000)
        return len(stored), sum(w.result.records for w in stored)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.daemon.close()
        self.store.close()


def _join_all(clients: Sequence[_Reader | _DaemonRun]) -> None:
    """Let every client join its group, one after the other.

    One at a time on purpose: polled round-robin, kafka-python clients in one process took several times
    longer to join (measured: 27 s instead of 7 s for six).
    """
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    for position, client in enumerate(clients):
        while not client.joined():
            if time.monotonic() > deadline:
                msg = (
                    f"benchmark consumer {position + 1} of {len(clients)} did not join its group "
                    f"within {_JOIN_TIMEOUT_S:g} s"
                )
                raise BenchStreamError(msg)


def _settings(
    bootstrap: str, baseline_dir: Path, store_url: str, topic: str, partitions: int, max_poll_records: int
) -> MonitorSettings:
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        None,
        kafka={"bootstrap_servers": bootstrap, "profile": "local"},
        group_id=f"bench-daemon-{suffix}",
        topics={
            "serving": topic,
            "labels": f"bench-labels-{suffix}",
            "dead_letter": f"bench-dead-{suffix}",
            "alerts": f"bench-alerts-{suffix}",
            "create_partitions": partitions,
        },
        store={"url": store_url},
        # Lateness 0: records are in event-time order within a partition. Windows are sealed by the
        # records of the next window (the last by the closing records), never by an idle timeout, so the
        # results do not depend on timing.
        window={"size_s": WINDOW_S, "lateness_s": 0.0, "idle_timeout_s": 3600.0},
        # The daemon builds monitors from this entry in production; the benchmark passes its monitor in
        # directly, because its feature set is generated for the requested width.
        models=[{"name": MODEL, "baseline": str(baseline_dir), "features": "skewguard.bench.stream:unused"}],
        max_poll_records=max_poll_records,
        http={"port": 0},
    )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _broker_peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _check(
    records: int, batch_size: int, partitions: int, windows: int, repeats: int, max_poll_records: int
) -> None:
    for name, value in (
        ("records", records),
        ("batch_size", batch_size),
        ("partitions", partitions),
        ("windows", windows),
        ("repeats", repeats),
        ("max_poll_records", max_poll_records),
    ):
        if value < 1:
            msg = f"{name} must be >= 1, got {value}"
            raise ConfigError(msg)
    if records % batch_size:
        msg = f"records ({records}) must be a multiple of batch_size ({batch_size})"
        raise ConfigError(msg)
    if records // batch_size < partitions:
        msg = (
            f"records ({records}) must fill at least one {batch_size}-record message per partition "
            f"({partitions})"
        )
        raise ConfigError(msg)
    if records < windows:
        msg = f"records ({records}) must be at least windows ({windows})"
        raise ConfigError(msg)


def bench_stream(
    records: int = 100_000,
    features: int = 20,
    *,
    batch_size: int = 100,
    partitions: int = 4,
    windows: int = 5,
    repeats: int = 1,
    max_poll_records: int = 5000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring for what is timed); returns the figures.

    Keys: ``records, raw_single_rps, daemon_single_rps, single_ratio, raw_batch_rps, daemon_batch_rps,
    batch_ratio, peak_rss_mb``; ``orjson_single_rps, orjson_batch_rps`` (raw consumption plus
    ``orjson.loads``); ``histogram_single_rps, histogram_batch_rps`` and their ratios to raw (plus a
    histogram of every feature: the ceiling of any drift monitor's rate); the seconds behind each
    rate; how it was measured (``features, batch_size, partitions, windows, repeats, raw_inputs,
    warmup, timing``);
    ``daemon_phase_seconds`` (where each daemon run's time went: poll, fold, checkpoint, finalise);
    the produced message counts; the windows and records each daemon stored; ``broker_peak_rss_mb``.
    """
    _check(records, batch_size, partitions, windows, repeats, max_poll_records)
    say = progress or (lambda _text: None)
    feature_set = stream_feature_set(features)
    names, numeric = list(feature_set.features), _layout(features)[0]  # (for the histogram side)
    kinds = ("single", "batch")
    best: dict[tuple[str, Side], _Timing] = {}
    stored: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="skewguard-bench-stream-") as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        say("building the baseline")
        _build_baseline(feature_set, features, work / "baseline", seed)
        baseline = Baseline.load(work / "baseline")  # as the daemon's load_monitors does
        monitor = ModelMonitor(baseline, feature_set)
        bootstrap = broker.bootstrap_servers
        kafka = KafkaSettings.local(bootstrap)
        suffix = uuid.uuid4().hex[:8]
        topics = {kind: f"bench-{kind}-{suffix}" for kind in kinds}
        ensure_topics(kafka, dict.fromkeys(topics.values(), partitions))

        say("joining the consumer groups (before producing, so no join is timed)")
        # A reader is rewound for its next run; a daemon is never reused (its state and store would count
        # the records twice), so every daemon run has its own, joined here too.
        readers: dict[tuple[str, Side], _Reader] = {}
        clients: dict[tuple[str, Side, int], _Reader | _DaemonRun] = {}
        try:
            for kind, topic in topics.items():
                for side in _READERS:
                    readers[kind, side] = _Reader(
                        kafka, topic, max_poll_records, side=side, names=names, numeric=numeric
                    )
                for attempt in range(repeats):
                    for side in _READERS:
                        clients[kind, side, attempt] = readers[kind, side]
                    url = f"sqlite:///{work / f'{kind}-{attempt}.db'}"
                    settings = _settings(
                        bootstrap, work / "baseline", url, topic, partitions, max_poll_records
                    )
                    clients[kind, Side.DAEMON, attempt] = _DaemonRun(settings, monitor, url)
            _join_all([*readers.values(), *(c for c in clients.values() if isinstance(c, _DaemonRun))])
            # The join's last poll leaves a fetch waiting at the broker for up to fetch_max_wait_ms: had
            # production started meanwhile, that client would begin its run with records already fetched.
            time.sleep(kafka.fetch_max_wait_ms / 1000 + 0.5)

            say(f"producing {records:,} records twice (single-record messages, {batch_size}-record batches)")
            produced = _produce(
                bootstrap,
                topics["single"],
                topics["batch"],
                baseline=baseline,
                features=features,
                records=records,
                batch_size=batch_size,
                windows=windows,
                partitions=partitions,
                seed=seed,
            )
            messages = {"single": produced.single_messages, "batch": produced.batch_messages}
            consumed = records + partitions  # with one closing record per partition
            for kind in kinds:
                # Untimed: whichever side ran first would otherwise pay the broker's first, cold read
                # of the data (measured: raw 1.9 s cold vs 1.0 s warm for the single-record topic).
                say(f"{kind}: warm-up read (untimed)")
                readers[kind, Side.RAW].measure(messages[kind], consumed)
            # The warm-up's last poll left a fetch waiting at the broker; a rewound run must not wait on it.
            time.sleep(kafka.fetch_max_wait_ms / 1000 + 0.5)
            for kind in kinds:
                for attempt in range(repeats):
                    for side in Side:
                        say(f"{kind}: {side.value}, run {attempt + 1} of {repeats}")
                        client = clients[kind, side, attempt]
                        if isinstance(client, _DaemonRun):
                            timing = client.measure(consumed, windows)
                            stored[kind] = client.stored()
                            if stored[kind] != (windows, records):
                                msg = (
                                    f"{kind}: the store holds {stored[kind][0]} windows with "
                                    f"{stored[kind][1]} records; expected {windows} windows with {records}"
                                )
                                raise BenchStreamError(msg)
                        else:
                            timing = client.measure(messages[kind], consumed, rewind=True)
                        if isinstance(client, _DaemonRun) or attempt == repeats - 1:
                            client.close()  # at once: its buffers and state must not weigh on later runs
                        if (kind, side) not in best or timing.rate > best[kind, side].rate:
                            best[kind, side] = timing
        finally:
            for client in clients.values():
                client.close()
        broker_rss = _broker_peak_rss_mb(broker.pid)

    def rate(kind: str, side: Side) -> int:
        return round(best[kind, side].rate)

    def ratio(kind: str, side: Side = Side.DAEMON) -> float:
        return round(best[kind, side].rate / best[kind, Side.RAW].rate, 3)

    return {
        "records": records,
        "raw_single_rps": rate("single", Side.RAW),
        "daemon_single_rps": rate("single", Side.DAEMON),
        "single_ratio": ratio("single"),
        "raw_batch_rps": rate("batch", Side.RAW),
        "daemon_batch_rps": rate("batch", Side.DAEMON),
        "batch_ratio": ratio("batch"),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "orjson_single_rps": rate("single", Side.ORJSON),
        "orjson_batch_rps": rate("batch", Side.ORJSON),
        "histogram_single_rps": rate("single", Side.HISTOGRAM),
        "histogram_batch_rps": rate("batch", Side.HISTOGRAM),
        "histogram_single_ratio": ratio("single", Side.HISTOGRAM),
        "histogram_batch_ratio": ratio("batch", Side.HISTOGRAM),
        "seconds": {
            f"{side.value}_{kind}": round(best[kind, side].seconds, 5) for kind in kinds for side in Side
        },
        "daemon_phase_seconds": {kind: best[kind, Side.DAEMON].phases for kind in kinds},
        "closing_records": partitions,
        "features": features,
        "batch_size": batch_size,
        "partitions": partitions,
        "windows": windows,
        "repeats": repeats,
        "raw_inputs": False,
        "warmup": (
            "group joins excluded from every run (all joined, and their pending fetches returned empty, "
            "before producing); each topic read once, untimed, before the timed runs; first fetch included"
        ),
        "timing": (
            "records/s, wall clock, best of repeats; raw = RawConsumer.poll touching each value; "
            "orjson = raw + orjson.loads per value; histogram = orjson + a histogram of every feature "
            "per poll (no state); daemon = MonitorDaemon.step until every record is "
            "folded, then checkpoints until every window is finalised in SQLite"
        ),
        "single_messages": produced.single_messages,
        "batch_messages": produced.batch_messages,
        "produce_s": round(produced.seconds, 2),
        "stored_windows": {kind: stored[kind][0] for kind in kinds},
        "stored_records": {kind: stored[kind][1] for kind in kinds},
        "broker_peak_rss_mb": broker_rss,
    }
