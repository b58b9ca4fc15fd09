"""``skewguard bench scale``: one daemon vs three in one consumer group, with one SIGKILLed mid-run.

The same stream (≥ 8 partitions) is processed twice on the real broker against one shared store: by one
``skewguard monitor`` process, and by three processes in another consumer group, one of which is killed
with SIGKILL part-way through. Every window's counts and verdicts must come out identical. Throughput is
records over the time from starting the processes to the last window stored (process start-up and the
group join are inside both figures). Each run reads its own copy of the stream: the first half is on the
topic when the processes start; once the group has checkpointed progress, one of the three is killed and
only then is the second half (with the records that close the windows) produced, so the kill always
lands mid-stream. ``rebalance_seconds`` is the time from the kill until every partition's checkpoint
has moved again, i.e. until the survivors own and process the dead one's share.

With ``count``, windows are count windows of that many records (each partition's share of window k is its
records k*share..(k+1)*share-1, share = ceil(count / partitions)) rather than 60 s event-time windows:
then the windows every partition fills are expected, and their numbers are part of what must be equal.

With ``labels``, every request also gets a delayed label (20 s after it, on the co-partitioned labels
topic; half before the processes start, the rest with the second half of the stream), so the label join
is rebalanced and restored too: each window's label stage (pairs joined, metrics, verdicts) must come out
identical as well, with every request joined once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline
from skewguard.demo.labels import publish_labels
from skewguard.demo.traffic import ctr_baseline, generate_requests, produce_records, serving_records
from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings, RawProducer, ensure_topics, group_by_partition
from skewguard.records import LabelRecord, ServingRecord
from skewguard.results import Stage, WindowResult
from skewguard.store import Store, to_micros

DEFAULT_STORE = os.environ.get("SKEWGUARD_BENCH_STORE", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
WINDOW = dt.timedelta(seconds=60)
#: A label's delay after its request, and how long after a window's end its labels count (``labels``).
LABEL_DELAY = dt.timedelta(seconds=20)
LABEL_HORIZON_S = 30.0


def _baseline(directory: Path, *, with_label: bool) -> Baseline:
    baseline = ctr_baseline(
        rows=12_000, seed=1, end=T0, window_size=1_000, calibration_draws=50, with_label=with_label
    )
    baseline.save(directory)
    return baseline


def _stream(baseline: Baseline, records: int, windows: int) -> list[ServingRecord]:
    per_window = records // windows
    out: list[ServingRecord] = []
    for index in range(windows):
        frame = generate_requests(
            per_window, seed=100 + index, start=T0 + index * WINDOW, span=WINDOW - dt.timedelta(seconds=1)
        )
        frame["request_id"] = [f"w{index}-{i}" for i in range(per_window)]
        scores = np.random.default_rng(200 + index).beta(2, 5, per_window).tolist()
        out += serving_records(
            frame, CTR_FEATURES, baseline.state, model="ctr", scores=scores, with_raw=False
        )
    # Closers: one record per partition key far in the future, so every partition seals every window.
    closers = generate_requests(
        64, seed=999, start=T0 + (windows + 5) * WINDOW, span=dt.timedelta(seconds=30)
    )
    closers["request_id"] = [f"closer-{i}" for i in range(64)]
    out += serving_records(closers, CTR_FEATURES, baseline.state, model="ctr", with_raw=False)
    return out


def _labels(stream: Sequence[ServingRecord]) -> list[LabelRecord]:
    """A click label per request, ``LABEL_DELAY`` after it, drawn with its score; in event-time order.

    The closers get theirs too: they move every labels partition's watermark past every window's horizon.
    """
    draws = np.random.default_rng(300).random(len(stream)).tolist()
    labels = [
        LabelRecord(
            r.request_id,
            r.event_time + LABEL_DELAY,
            int(isinstance(r.prediction, float) and draw < r.prediction),
        )
        for r, draw in zip(stream, draws, strict=True)
    ]
    return sorted(labels, key=lambda label: label.event_time)


def _produce_labels(bootstrap: str, topic: str, labels: Sequence[LabelRecord], partitions: int) -> None:
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        publish_labels(producer, topic, labels, partitions)
    finally:
        producer.close(5)


def _config(
    path: Path,
    bootstrap: str,
    baseline_dir: Path,
    store_url: str,
    group: str,
    topics: dict[str, str],
    window: dict[str, float],
) -> Path:
    path.write_text(
        json.dumps(
            {
                "kafka": {"bootstrap_servers": bootstrap, "profile": "local"},
                "group_id": group,
                "topics": topics,
                "store": {"url": store_url},
                "window": window,
                "labels": {"horizon_s": LABEL_HORIZON_S},
                "models": [
                    {
                        "name": "ctr",
                        "baseline": str(baseline_dir),
                        "features": "features.ctr:CTR_FEATURES",
                        "drift_exclude": ["hour_of_day_local", "day_of_week_local"],
                    }
                ],
                "checkpoint_interval_s": 0.5,
                "max_poll_records": 1000,
                "http": {"port": 0},
            }
        )
    )
    return path


def _summary(store: Store, group: str) -> list[tuple[Any, ...]]:
    """Every stored window of ``group`` (both stages): counts, pairs joined, and each finding's verdict.

    A label-stage finding's effect is kept too: the same pairs give the same metric to the last bit (the
    join sorts them by request id), so one lost or doubled label shows.
    """
    rows: list[tuple[Any, ...]] = []
    results: list[WindowResult] = [w.result for w in store.windows(group=group, stage=None, limit=10_000)]
    for result in sorted(results, key=lambda r: (r.key.start, r.stage.value)):
        labelled = result.stage is Stage.LABELS
        rows.append(
            (
                result.stage.value,
                result.key.start.isoformat(),
                result.key.index,
                result.records,
                result.late_records,
                result.context.get("pairs"),
                sorted(
                    (f.check.value, f.subject, f.flagged, f.effect if labelled else None)
                    for f in result.findings
                ),
            )
        )
    return rows


def _log_tail(log: Any, size: int = 4000) -> str:
    """The end of the daemons' shared log, for an error message (the log is deleted with its folder)."""
    try:
        log.flush()
        with Path(log.name).open("rb") as reader:
            reader.seek(0, 2)
            reader.seek(max(0, reader.tell() - size))
            return "; the daemons' log ends:\n" + reader.read().decode("utf-8", "replace")
    except (OSError, AttributeError, TypeError):
        return ""


def spawn_monitor(config: Path, log: Any) -> subprocess.Popen[bytes]:
    """A ``skewguard monitor --config`` process (this interpreter), its stderr to ``log``."""
    entry = "from skewguard.cli import main; main()"
    command = [sys.executable, "-c", entry, "monitor", "--config", str(config), "--log-level", "WARNING"]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _progress(store: Store, group: str, topic: str) -> int:
    """Messages the group has checkpointed as processed, over all partitions."""
    with store.transaction() as tx:
        return sum(cp.next_offset for cp in tx.load_checkpoints(group, [topic]).values())


def _run_group(
    store: Store,
    config: Path,
    group: str,
    expected_windows: int,
    processes: int,
    log: Any,
    *,
    kill: bool,
    feed_rest: Callable[[], None],
    partitions: int,
    serving_topic: str,
    timeout_s: float,
) -> tuple[float, float | None]:
    """Run one group of processes over the stream, killing one of them mid-stream when ``kill``.

    Done once ``expected_windows`` are stored, of both stages.

    The processes start on the first half; once they have checkpointed progress, one is SIGKILLed and
    only then is the rest produced. No event-time window can close before the kill (a count window may,
    once every partition has its share in the first half), and the survivors must restore the dead
    process's partitions from their checkpoints.
    """
    started = time.monotonic()
    procs = [spawn_monitor(config, log) for _ in range(processes)]
    killed_at: float | None = None
    killed_wall: dt.datetime | None = None
    rebalance: float | None = None
    fed = False
    try:
        while time.monotonic() - started < timeout_s:
            if not fed and _progress(store, group, serving_topic) > 0:
                if kill:
                    procs[0].send_signal(signal.SIGKILL)
                    procs[0].wait(10)
                    killed_at = time.monotonic()
                    killed_wall = dt.datetime.now(dt.UTC)
                feed_rest()
                fed = True
            if (
                killed_wall is not None
                and rebalance is None
                and _updated_since(store, group, serving_topic, killed_wall, partitions)
            ):
                rebalance = time.monotonic() - (killed_at or 0.0)
            if fed and len(store.windows(group=group, stage=None, limit=10_000)) >= expected_windows:
                elapsed = time.monotonic() - started
                if killed_at is not None and rebalance is None:
                    rebalance = time.monotonic() - killed_at
                return elapsed, rebalance
            time.sleep(0.2)
        msg = f"group {group}: windows not all stored within {timeout_s}s{_log_tail(log)}"
        raise TimeoutError(msg)
    finally:
        _stop(procs)


def _updated_since(store: Store, group: str, topic: str, since: dt.datetime, partitions: int) -> bool:
    """Every partition's checkpoint written after ``since``: the survivors own and process them all."""
    since_us = to_micros(since)
    with store.transaction() as tx:
        updated = tx.checkpoint_times(group, topic)
    return len(updated) == partitions and all(value >= since_us for value in updated.values())


def bench_scale(
    *,
    records: int = 40_000,
    windows: int = 4,
    partitions: int = 8,
    count: int | None = None,
    labels: bool = False,
    store_url: str = DEFAULT_STORE,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run the scale-out benchmark; see the module docstring for what is measured."""
    if partitions < 8:
        msg = f"the scale benchmark needs at least 8 partitions, got {partitions}"
        raise ValueError(msg)
    if count is not None and count < 1:
        msg = f"count must be >= 1 record per window, got {count}"
        raise ValueError(msg)
    if labels and count is not None:
        # The label stage of count windows is covered by the daemon's crash test instead.
        msg = "--labels needs event-time windows: leave out --count"
        raise ConfigError(msg)
    window: dict[str, float] = {"lateness_s": 5.0, "idle_timeout_s": 3600.0}
    window |= {"size_s": WINDOW.total_seconds()} if count is None else {"count": count}
    suffix = uuid.uuid4().hex[:8]
    schema = f"sg_bench_{suffix}" if store_url.startswith("postgresql") else None
    with tempfile.TemporaryDirectory(prefix="skewguard-scale-") as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        baseline = _baseline(work / "baseline", with_label=labels)
        stream = _stream(baseline, records, windows)
        expected = windows if count is None else _full_count_windows(stream, count, partitions)
        truth = _labels(stream) if labels else []
        half = len(stream) // 2
        first_labels, rest_labels = truth[: len(truth) // 2], truth[len(truth) // 2 :]
        closers = 64  # the last records of the stream seal every window (see _stream)
        first, rest = stream[:half], stream[half:]
        if len(rest) <= closers:  # the closers must be in the second half
            msg = f"stream of {len(stream)} records is too short to split around its {closers} closers"
            raise ValueError(msg)
        settings = KafkaSettings.local(broker.bootstrap_servers)
        url = store_url
        store = Store(url, schema=schema)
        try:
            with (work / "daemons.log").open("ab") as log:
                runs: dict[str, Any] = {}
                for label, processes, kill in (("one", 1, False), ("three", 3, True)):
                    group = f"bench-{label}-{suffix}"
                    topics = {
                        "serving": f"serving-{label}-{suffix}",
                        "labels": f"labels-{label}-{suffix}",
                        "dead_letter": f"dead-{label}-{suffix}",
                        "alerts": f"alerts-{label}-{suffix}",
                    }
                    ensure_topics(settings, dict.fromkeys(topics.values(), partitions))
                    produce_records(broker.bootstrap_servers, topics["serving"], first)
                    if labels:
                        _produce_labels(broker.bootstrap_servers, topics["labels"], first_labels, partitions)
                    config = _config(
                        work / f"{label}.yaml",
                        broker.bootstrap_servers,
                        work / "baseline",
                        url,
                        group,
                        topics,
                        window,
                    )
                    if schema is not None:
                        data = json.loads(config.read_text())
                        data["store"]["db_schema"] = schema
                        config.write_text(json.dumps(data))

                    def feed_rest(
                        topic: str = topics["serving"], labels_topic: str = topics["labels"]
                    ) -> None:
                        produce_records(broker.bootstrap_servers, topic, rest)
                        if labels:
                            _produce_labels(broker.bootstrap_servers, labels_topic, rest_labels, partitions)

                    seconds, rebalance = _run_group(
                        store,
                        config,
                        group,
                        2 * expected if labels else expected,
                        processes,
                        log,
                        kill=kill,
                        feed_rest=feed_rest,
                        partitions=partitions,
                        serving_topic=topics["serving"],
                        timeout_s=timeout_s,
                    )
                    summary = _summary(store, group)
                    runs[label] = {"seconds": seconds, "rebalance": rebalance, "summary": summary}
            one, three = runs["one"], runs["three"]
            return {
                "records": len(stream),
                "windows": sum(row[0] == Stage.SERVING.value for row in one["summary"]),
                "label_pairs": [row[5] for row in one["summary"] if row[0] == Stage.LABELS.value],
                "partitions": partitions,
                "window": "event time, 60 s" if count is None else f"count, {count} records",
                "labels": len(truth),
                "identical_results": one["summary"] == three["summary"],
                "rps_1": round(len(stream) / one["seconds"], 1),
                "rps_3": round(len(stream) / three["seconds"], 1),
                "rebalance_seconds": None if three["rebalance"] is None else round(three["rebalance"], 2),
                "killed": "one of the three processes, SIGKILL, once the group had checkpointed progress, "
                "before the second half of the stream was produced",
                "store": "postgresql" if schema is not None else "sqlite",
                "measured": (
                    "wall time from starting the processes to the last window stored "
                    "(start-up and group join included)"
                ),
            }
        finally:
            if schema is not None:
                store.drop_all()
            store.close()


def _full_count_windows(stream: Sequence[ServingRecord], count: int, partitions: int) -> int:
    """Count windows every partition fills (a window closes once each partition has its share)."""
    share = math.ceil(count / partitions)
    groups = group_by_partition(stream, lambda record: record.request_id, partitions)
    full = min(len(groups.get(p, [])) // share for p in range(partitions))
    if full < 1:
        msg = f"no count window of {count} records fills: some partition has fewer than {share} records"
        raise ValueError(msg)
    return full
