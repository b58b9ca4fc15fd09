"""Delayed labels on the real broker: joined by request id, judged per window against the holdout metric."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy import stats

from features.ctr import CTR_FEATURES
from skewguard.daemon import LabelPartition, MonitorDaemon, OwnedPartition, load_monitors
from skewguard.demo.labels import publish_labels
from skewguard.demo.traffic import ctr_baseline, generate_requests, serving_records
from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings, RawMessage, RawProducer, TopicPartition, ensure_topics
from skewguard.records import LabelRecord, ServingRecord, encode_labels, from_us, to_us
from skewguard.results import Check, Stage
from skewguard.settings import MonitorSettings
from skewguard.store import Store
from tests.daemon.helpers import (
    T0,
    WINDOW,
    build_ctr_baseline,
    click_scores,
    closing_record,
    config_file,
    produce,
    results_by_start,
    run_killed,
    settings_for,
    step_until,
)

pytestmark = pytest.mark.kafka
HOLDOUT_AUC_SE = 0.005
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def labelled_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    baseline = ctr_baseline(
        rows=20_000,
        seed=3,
        end=T0,
        window_size=1_500,
        calibration_draws=60,
        scores=lambda train: click_scores(train["click"].to_numpy(), 0.15, 4),
        with_label=True,
    )
    holdout_auc = baseline.metrics["auc"]
    # The holdout AUC's sampling error (a holdout of ~10 000 rows): the daemon widens its margin by it.
    baseline = dataclasses.replace(baseline, metric_errors={"auc": HOLDOUT_AUC_SE})
    directory = tmp_path_factory.mktemp("labelled")
    baseline.save(directory)
    return directory, holdout_auc


def window(
    baseline_state: object, index: int, n: int, seed: int, *, good: bool
) -> tuple[list[ServingRecord], list[LabelRecord]]:
    frame = generate_requests(n, seed=seed, start=T0 + index * WINDOW, span=WINDOW - dt.timedelta(seconds=1))
    frame["request_id"] = [f"w{index}-{i}" for i in range(n)]
    clicks = frame["click"].to_numpy()
    scores = click_scores(clicks, 0.15, seed + 1) if good else np.random.default_rng(seed + 2).random(n)
    records = serving_records(frame, CTR_FEATURES, baseline_state, model="ctr", scores=scores.tolist())  # type: ignore[arg-type]
    labels = [
        LabelRecord(r.request_id, r.event_time + dt.timedelta(seconds=30), int(c))
        for r, c in zip(records, clicks, strict=True)
    ]
    return records, labels


def produce_labels(bootstrap: str, topic: str, labels: list[LabelRecord]) -> None:
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        for label in labels:  # keyed by request id, like the serving log: co-partitioned
            producer.send(topic, encode_labels([label]), key=label.request_id.encode())
        producer.flush(30)
    finally:
        producer.close(5)


def _opened(settings: MonitorSettings) -> tuple[MonitorDaemon, Store]:
    """A daemon on its own store, opened (which creates its topics: open it before producing)."""
    store = Store(settings.store.url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store)
    daemon.open()
    return daemon, store


@pytest.mark.parametrize(
    ("partitions", "windows"),
    [
        (2, {"size_s": WINDOW.total_seconds(), "lateness_s": 5.0, "idle_timeout_s": 3600.0}),
        # Count windows of 1 200 records: on one partition (in order) they are exactly the two windows.
        (1, {"count": 1_200, "lateness_s": 5.0, "idle_timeout_s": 3600.0}),
    ],
    ids=["event_time", "count"],
)
def test_labels_join_late_and_give_a_per_window_metric(
    kafka_broker: EmbeddedBroker,
    labelled_baseline: tuple[Path, float],
    tmp_path: Path,
    partitions: int,
    windows: dict[str, float],
) -> None:
    directory, holdout_auc = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        directory,
        f"sqlite:///{tmp_path / 'labels.db'}",
        partitions=partitions,
        window=windows,
        labels={"horizon_s": 120.0, "min_pairs": 200},
    )
    daemon, store = _opened(settings)
    try:
        from skewguard.baseline import Baseline

        state = Baseline.load(directory).state
        good_records, good_labels = window(state, 0, 1_200, 50, good=True)
        bad_records, bad_labels = window(state, 1, 1_200, 60, good=False)
        # The labels are on their topic before the predictions are on theirs: the join must not care.
        # (Labels arrive in event-time order, as real ones do; one out of order by more than the
        # allowed lateness would be counted late.)
        produce_labels(bootstrap, settings.topics.labels, good_labels + bad_labels)
        produce(bootstrap, settings.topics.serving, good_records + bad_records, batch=20)
        closers = closing_record(Baseline.load(directory), 9)
        produce(bootstrap, settings.topics.serving, closers, batch=1)
        far = [
            LabelRecord(f"closer-{i}", T0 + dt.timedelta(minutes=20), 0) for i in range(20)
        ]  # label watermarks past every horizon
        produce_labels(bootstrap, settings.topics.labels, far)
        step_until(daemon, lambda: daemon.counters.label_windows >= 2, timeout_s=90)
    finally:
        daemon.close()
    results = {w.result.key.start: w.result for w in store.windows(stage=Stage.LABELS, limit=50)}
    first, second = (results[key] for key in sorted(results))
    assert first.context["pairs"] == 1_200 and second.context["pairs"] == 1_200
    if "count" in windows:  # the label stage carries the serving stage's number and span
        served = {w.result.key.index: w.result.key for w in store.windows(limit=50)}
        assert (first.key, second.key) == (served[0], served[1])
        spans = [
            (min(r.event_time for r in rs), max(r.event_time for r in rs))
            for rs in (good_records, bad_records)
        ]
        assert [(k.start, k.end - dt.timedelta(microseconds=1)) for k in (first.key, second.key)] == spans
    auc_first = next(f for f in first.findings if f.subject == "auc")
    auc_second = next(f for f in second.findings if f.subject == "auc")
    assert auc_first.threshold == pytest.approx(holdout_auc)
    assert not auc_first.flagged
    assert (
        auc_first.detail["ci_low"] <= holdout_auc <= auc_first.detail["ci_high"]
        or abs(
            auc_first.effect - holdout_auc  # type: ignore[operator]
        )
        < 0.02
    )
    assert auc_second.flagged and auc_second.effect < 0.6  # type: ignore[operator]
    assert auc_second.detail["ci_high"] < holdout_auc
    # The baseline's standard error reached the judgement: both margins, added in quadrature.
    own = auc_second.detail["ci_high"] - auc_second.effect
    z = stats.norm.ppf(0.5 + daemon.performance.confidence / 2)
    assert auc_second.detail["holdout_standard_error"] == HOLDOUT_AUC_SE
    assert auc_second.detail["margin"] == pytest.approx(math.hypot(own, z * HOLDOUT_AUC_SE))
    label_drift = next(f for f in second.findings if f.check is Check.LABEL_DRIFT)
    assert not label_drift.flagged
    # Every real label joined; the far-future closers are still waiting (their prediction could come).
    assert daemon.counters.labels_joined == 2_400
    assert daemon.counters.late_labels == 0
    store.close()


def test_an_idle_labels_partition_does_not_cut_the_horizon_short(
    kafka_broker: EmbeddedBroker, labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """Labels that come seldom: idle (caught up, none for idle_timeout_s) is not "the horizon is over".

    An idle labels partition counted as past every horizon: with an hour's horizon the window was
    judged a minute after its last label so far, and every later label of it was lost.
    """
    from skewguard.baseline import Baseline

    directory, _ = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        directory,
        f"sqlite:///{tmp_path / 'idle.db'}",
        partitions=1,
        window={"size_s": WINDOW.total_seconds(), "lateness_s": 5.0, "idle_timeout_s": 1.0},
        labels={"horizon_s": 3600.0, "min_pairs": 50},
    )
    now = [(T0 + 10 * WINDOW).timestamp()]
    store = Store(settings.store.url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store, clock=lambda: now[0])
    daemon.open()
    try:
        baseline = Baseline.load(directory)
        records, labels = window(baseline.state, 0, 200, 70, good=True)
        produce_labels(bootstrap, settings.topics.labels, labels[:100])
        produce(bootstrap, settings.topics.serving, records, batch=20)
        produce(bootstrap, settings.topics.serving, closing_record(baseline, 9), batch=1)
        step_until(daemon, lambda: daemon.counters.windows >= 1 and daemon.counters.labels_joined >= 100)
        now[0] += 600.0  # ten minutes without a label: idle, and the horizon still has 50 minutes to go
        daemon.step()
        daemon.checkpoint()
        assert daemon.counters.label_windows == 0
        produce_labels(bootstrap, settings.topics.labels, labels[100:])
        step_until(daemon, lambda: daemon.counters.labels_joined >= 200)
        now[0] = (T0 + WINDOW).timestamp() + 3600.0 + 5.0 + 1.0  # past the end + horizon + lateness
        step_until(daemon, lambda: daemon.counters.label_windows >= 1)
    finally:
        daemon.close()
    [first] = [w.result for w in store.windows(stage=Stage.LABELS, limit=50) if w.result.key.start == T0]
    assert first.context["pairs"] == 200
    store.close()


def test_a_labels_topic_partitioned_unlike_the_serving_log_is_refused_at_open(
    kafka_broker: EmbeddedBroker, labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """A serving partition without a labels partner would never pass its horizon: no verdict, ever."""
    directory, _ = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(bootstrap, directory, f"sqlite:///{tmp_path / 'parts.db'}", partitions=2)
    ensure_topics(
        KafkaSettings.local(bootstrap), {settings.topics.labels: 1}
    )  # (the daemon adds 2 for serving)
    store = Store(settings.store.url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store)
    try:
        with pytest.raises(
            ConfigError, match=r"topics\.labels .* has 1 partition\(s\) and topics\.serving .* 2"
        ):
            daemon.open()
    finally:
        daemon.close()
        store.close()


# --------------------------------------------------------------------------------------------------
# a class model: accuracy per window, class label drift, a shadow candidate judged on the same labels

CLASSES = (0, 1, 2)


def _classes(n: int, shares: tuple[float, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(CLASSES, size=n, p=shares)


def _predict(truth: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Right with probability ``accuracy``, else one of the other classes."""
    rng = np.random.default_rng(seed)
    wrong = (truth + rng.integers(1, len(CLASSES), len(truth))) % len(CLASSES)
    return np.where(rng.random(len(truth)) < accuracy, truth, wrong)


def _probabilities(classes: np.ndarray, seed: int) -> list[list[float]]:
    """Class-probability lists whose argmax is each class (how many classifiers log a prediction).

    The predicted class gets 0.55-0.9 at random (more than the rest together), the others split the rest.
    """
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.55, 0.9, len(classes))
    split = rng.uniform(0.0, 1.0, len(classes))
    out = []
    for c, p, u in zip(classes.tolist(), top.tolist(), split.tolist(), strict=True):
        rest = iter([(1 - p) * u, (1 - p) * (1 - u)])
        out.append([p if k == c else next(rest) for k in CLASSES])
    return out


@pytest.fixture(scope="module")
def class_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    from sklearn.metrics import log_loss as sk_log_loss

    from skewguard.baseline import BaselineOptions, PredictionKind, build_baseline

    train = generate_requests(20_000, seed=11, start=T0 - dt.timedelta(days=7), span=dt.timedelta(days=7))
    train["truth"] = _classes(len(train), (0.5, 0.3, 0.2), seed=12)
    train["predicted"] = _predict(train["truth"].to_numpy(), 0.8, seed=13)
    holdout = float(np.mean(train["truth"] == train["predicted"]))
    # The training holdout's log-loss, as if its predictions had been logged as probabilities too.
    listed = _probabilities(train["predicted"].to_numpy(), seed=14)
    holdout_loss = sk_log_loss(train["truth"].to_numpy(), listed, labels=list(CLASSES))
    baseline = build_baseline(
        CTR_FEATURES,
        lambda: iter([train]),
        model="ctr",
        prediction_column="predicted",
        prediction_kind=PredictionKind.CLASS,
        label_column="truth",
        options=BaselineOptions(window_size=1_500, calibration_draws=40),
        metrics={"accuracy": holdout, "log_loss": holdout_loss},
    )
    directory = tmp_path_factory.mktemp("classes")
    baseline.save(directory)
    return directory, holdout


def test_a_class_model_gets_accuracy_label_drift_and_a_labelled_shadow_verdict(
    kafka_broker: EmbeddedBroker, class_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    from dataclasses import replace

    from sklearn.metrics import log_loss as sk_log_loss

    from skewguard.baseline import Baseline

    directory, holdout = class_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        directory,
        f"sqlite:///{tmp_path / 'classes.db'}",
        partitions=1,
        labels={"horizon_s": 120.0, "min_pairs": 200},
    )
    baseline = Baseline.load(directory)
    n = 1_000
    # Window 0: the training mix, production as good as in training, a candidate that guesses.
    # Window 1: owls (class 2) went from 20 % to 50 %, production guesses, the candidate is always right.
    plans = [
        ((0.5, 0.3, 0.2), 0.8, 1 / 3),
        ((0.2, 0.3, 0.5), 1 / 3, 1.0),
    ]
    records: list[ServingRecord] = []
    labels: list[LabelRecord] = []
    expected: list[tuple[float, float]] = []
    agreements: list[float] = []
    losses: list[float] = []  # sklearn's log-loss of the predictions logged as probabilities
    for index, (shares, production_accuracy, candidate_accuracy) in enumerate(plans):
        frame = generate_requests(
            n, seed=20 + index, start=T0 + index * WINDOW, span=WINDOW - dt.timedelta(seconds=1)
        )
        frame["request_id"] = [f"c{index}-{i}" for i in range(n)]
        truth = _classes(n, shares, seed=30 + index)
        production = _predict(truth, production_accuracy, seed=40 + index)
        candidate = _predict(truth, candidate_accuracy, seed=50 + index)
        probabilities = _probabilities(production, seed=60 + index)
        logged = serving_records(frame, CTR_FEATURES, baseline.state, model="ctr", with_raw=False)
        for row, record in enumerate(logged):
            # Half the predictions are logged as class numbers, half as probability lists.
            prediction = int(production[row]) if row % 2 else probabilities[row]
            records.append(
                replace(record, prediction=prediction, shadow_predictions={"v2": str(candidate[row])})
            )
        labels += [
            LabelRecord(r.request_id, r.event_time + dt.timedelta(seconds=30), int(c))
            for r, c in zip(logged, truth, strict=True)
        ]
        listed = np.arange(n) % 2 == 0
        losses.append(sk_log_loss(truth[listed], np.asarray(probabilities)[listed], labels=list(CLASSES)))
        expected.append((float(np.mean(production == truth)), float(np.mean(candidate == truth))))
        agreements.append(float(np.mean(production == candidate)))
    daemon, store = _opened(settings)
    try:
        produce_labels(bootstrap, settings.topics.labels, labels[: n // 2])  # some labels come first
        produce(bootstrap, settings.topics.serving, records, batch=50)
        produce_labels(bootstrap, settings.topics.labels, labels[n // 2 :])
        closers = [replace(r, prediction=0) for r in closing_record(baseline, 9)]
        produce(bootstrap, settings.topics.serving, closers, batch=1)
        far = [LabelRecord(f"closer-{i}", T0 + dt.timedelta(minutes=20), 0) for i in range(5)]
        produce_labels(bootstrap, settings.topics.labels, far)
        step_until(daemon, lambda: daemon.counters.label_windows >= 2, timeout_s=90)
    finally:
        daemon.close()
    results = {w.result.key.start: w.result for w in store.windows(stage=Stage.LABELS, limit=50)}
    served = results_by_start(store, settings.group_id)
    store.close()
    assert daemon.counters.labels_joined == 2 * n
    # Serving stage, every window: how often the candidate names production's class.
    for index, start in enumerate(sorted(served)[:2]):
        [agreement] = [f for f in served[start].findings if f.check is Check.SHADOW]
        assert agreement.detail["agreement"] == pytest.approx(agreements[index], abs=1e-12)
        assert agreement.detail["compared"] == n and agreement.detail["missing"] == 0
        assert agreement.detail["correlation"] is None and "score correlation" not in agreement.reason
    for index, start in enumerate(sorted(results)[:2]):
        result = results[start]
        assert result.context["pairs"] == n
        findings = {(f.check, f.subject): f for f in result.findings}
        accuracy = findings[Check.PERFORMANCE, "accuracy"]
        shadow = findings[Check.SHADOW, "v2"]
        drift = findings[Check.LABEL_DRIFT, "label"]
        production_accuracy, candidate_accuracy = expected[index]
        assert accuracy.effect == pytest.approx(production_accuracy, abs=1e-12)
        assert accuracy.threshold == pytest.approx(holdout)
        # Log-loss over the half logged as probability lists (kept whole through the join and the store).
        loss = findings[Check.PERFORMANCE, "log_loss"]
        assert loss.detail["pairs"] == n // 2 and loss.effect == pytest.approx(losses[index], rel=1e-12)
        assert loss.flagged is (index == 1)  # window 1's guessing production is worse than training's
        assert shadow.effect == pytest.approx(candidate_accuracy - production_accuracy, abs=1e-12)
        if index == 0:
            assert not accuracy.flagged and not drift.flagged
            assert shadow.flagged  # the guessing candidate is worse with confidence
        else:
            assert accuracy.flagged and drift.flagged and "'2'" in drift.reason
            assert not shadow.flagged and shadow.effect > 0.5  # type: ignore[operator]


def _offline_daemon(directory: Path, tmp_path: Path, **overrides: Any) -> tuple[MonitorDaemon, Store]:
    """A daemon over a real SQLite store, never opened: its join is driven directly, no broker needed."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    settings = settings_for("127.0.0.1:1", directory, url, partitions=1, **overrides)
    store = Store(settings.store.url)
    return MonitorDaemon(settings, load_monitors(settings), store), store


def _offline_partition(
    directory: Path, tmp_path: Path, **overrides: Any
) -> tuple[MonitorDaemon, Store, OwnedPartition]:
    """An offline daemon and a fresh serving partition whose wall clock starts at T0 (a window start)."""
    from skewguard.windows import PartitionWindows

    daemon, store = _offline_daemon(directory, tmp_path, **overrides)
    return daemon, store, OwnedPartition(PartitionWindows(daemon.spec), 0, to_us(T0))


def _fold_labels_into(daemon: MonitorDaemon, part: OwnedPartition, labels: list[LabelRecord]) -> None:
    """Own ``part`` as serving partition 0; fold ``labels`` on labels partition 0, one per message."""
    daemon.owned[TopicPartition(daemon.topics.serving, 0)] = part
    labels_tp = TopicPartition(daemon.topics.labels, 0)
    daemon.label_parts.setdefault(labels_tp, LabelPartition(None, None, part.last_record_wall_us))
    for label in labels:
        offset = daemon.label_parts[labels_tp].next_offset or 0
        value = encode_labels([label])
        daemon._fold_labels(labels_tp, [RawMessage(labels_tp.topic, 0, offset, None, value, 0, [])])


def test_a_label_dated_far_ahead_of_the_clock_is_refused_not_made_the_watermark(
    labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """Taken, a label of year 2100 would make every later label late (the labels watermark never falls)."""
    from skewguard.daemon import FUTURE

    on_time = [LabelRecord(f"w0-{i}", T0 + dt.timedelta(seconds=i), 1) for i in range(3)]
    stream = [on_time[0], LabelRecord("ahead", T0.replace(year=2100), 0), *on_time[1:]]
    window = {"size_s": WINDOW.total_seconds(), "lateness_s": 5.0, "max_future_s": 0}
    (tmp_path / "off").mkdir()
    unchecked, store, part = _offline_partition(labelled_baseline[0], tmp_path / "off", window=window)
    _fold_labels_into(unchecked, part, stream)  # max_future_s = 0: the check is off, as documented
    assert unchecked.counters.late_labels == 2 and not unchecked.counters.dead_letters
    store.close()

    daemon, store, part = _offline_partition(labelled_baseline[0], tmp_path)
    _fold_labels_into(daemon, part, stream)
    assert daemon.counters.late_labels == 0 and daemon.counters.labels == 3
    assert set(part.pending) == {"w0-0", "w0-1", "w0-2"}
    assert daemon.counters.dead_letters == {FUTURE: 1}
    (letter,) = daemon._dead_letters
    assert letter.reason == FUTURE and "'ahead'" in letter.detail and "2100-06-01" in letter.detail
    assert letter.raw is not None and orjson.loads(letter.raw)["request_id"] == "ahead"
    store.close()


def test_a_score_label_that_is_no_number_is_refused_not_counted_as_a_negative(
    labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    from skewguard.baseline import PredictionKind
    from skewguard.labels import LabelTally, WaitingPrediction

    daemon, store, part = _offline_partition(labelled_baseline[0], tmp_path)
    labels = [LabelRecord("w0-0", T0, "n/a"), LabelRecord("w0-1", T0, "no"), LabelRecord("w0-2", T0, "YES")]
    _fold_labels_into(daemon, part, labels)
    assert {rid: early.label for rid, early in part.pending.items()} == {"w0-1": "no", "w0-2": "YES"}
    assert daemon.counters.labels == 2 and daemon.counters.dead_letters == {"wrong_type": 1}
    (letter,) = daemon._dead_letters
    assert "'w0-0'" in letter.detail and "'n/a'" in letter.detail and "numeric labels" in letter.detail
    # With a class model also configured such text passes the codec; for a score model's prediction it
    # is then counted unmatched at the join, never scored as 0.
    tally = LabelTally()
    waiting = WaitingPrediction("ctr", 0, 0.9, {}, to_us(T0) + 10**9)
    daemon._pair(tally, "w0-0", waiting, "n/a", to_us(T0), PredictionKind.SCORE)
    assert daemon.counters.unmatched_labels == 1 and not tally.ids
    store.close()


def test_with_no_labelled_model_a_text_label_is_not_refused_as_no_number(tmp_path: Path) -> None:
    """Only when every labelled model reads numbers is a text label refused; with none, nothing is."""
    baseline_dir = tmp_path / "unlabelled"
    build_ctr_baseline(baseline_dir)  # (its baseline has no label: nothing is joined)
    daemon, store, part = _offline_partition(baseline_dir, tmp_path)
    assert not daemon.labelled
    _fold_labels_into(daemon, part, [LabelRecord("w0-0", T0, "a class name")])
    assert not daemon.counters.dead_letters and daemon.counters.labels == 1
    store.close()


def test_checkpointed_join_state_of_before_class_joins_is_not_misread(
    class_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """Old checkpoints held early labels as numbers, and may name a model no longer configured."""
    from dataclasses import replace

    from skewguard.baseline import Baseline
    from skewguard.records import ServingBatch
    from skewguard.windows import PartitionWindows

    directory, _holdout = class_baseline
    daemon, store = _offline_daemon(directory, tmp_path)
    start_us = int(T0.timestamp() * 1e6)
    state = OwnedPartition(PartitionWindows(daemon.spec), 0, start_us).state()
    # As the previous release wrote them: early labels [number, event µs]; a prediction of model "gone".
    state["pending"] = {"w0-0": [1.0, start_us], "w0-1": [1.0, start_us, True]}
    state["awaiting"] = {"old-1": ["gone", start_us, 0.3, {}, start_us + 10**9]}
    part = OwnedPartition.restore(daemon.spec, 0, state, start_us, daemon.horizon_us)
    assert part.pending["w0-0"] == (1.0, start_us, False) and part.pending["w0-1"][2] is True
    records = [
        replace(r, prediction=1) for r in window(Baseline.load(directory).state, 0, 2, seed=5, good=True)[0]
    ]
    monitor = daemon.monitors["ctr"]
    key = ("ctr", start_us)
    daemon._await_labels(part, key, ServingBatch.from_records(records), monitor, {})
    # The label kept as a number cannot name a class: counted, not joined as class "1".
    assert daemon.counters.unmatched_labels == 1
    assert part.tallies[key].labels == ["1"] and part.tallies[key].ids == ["w0-1"]
    # A label for the prediction of a model that left the configuration is counted, not a crash.
    _fold_labels_into(daemon, part, [LabelRecord("old-1", T0, 1)])
    assert daemon.counters.unjoinable_labels == 1 and "old-1" not in part.awaiting
    store.close()


# --------------------------------------------------------------------------------------------------
# the join's state lives in store rows: across checkpoints, restarts and SIGKILLs


def _label_summary(store: Store, group: str) -> list[tuple[Any, ...]]:
    """What a group stored at the label stage, comparable across runs."""
    rows = []
    for stored in sorted(
        store.windows(group=group, stage=Stage.LABELS, limit=100), key=lambda w: w.result.key.start
    ):
        result = stored.result
        rows.append(
            (
                result.key.start,
                result.records,
                result.context["pairs"],
                result.context["beyond_horizon"],
                sorted((f.check.value, f.subject, f.flagged, None if f.effect is None else round(f.effect, 9))
                       for f in result.findings),
            )
        )  # fmt: skip
    return rows


def test_the_join_waits_in_the_store_across_checkpoints_and_a_restart(
    kafka_broker: EmbeddedBroker, labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    from skewguard.baseline import Baseline
    from skewguard.labels import EarlyLabel, WaitingPrediction

    directory, _auc = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        directory,
        f"sqlite:///{tmp_path / 'join.db'}",
        partitions=1,
        labels={"horizon_s": 120.0, "min_pairs": 200},
        checkpoint_interval_s=3600.0,  # checkpoints only where the test takes them
    )
    state = Baseline.load(directory).state
    (r0, l0), (r1, l1), (r2, l2) = (window(state, i, 600, 70 + 10 * i, good=True) for i in range(3))
    store = Store(settings.store.url)
    serving = TopicPartition(settings.topics.serving, 0)

    def daemon_for() -> MonitorDaemon:
        daemon = MonitorDaemon(settings, load_monitors(settings), store)
        daemon.open()
        return daemon

    first = daemon_for()
    try:
        produce(bootstrap, settings.topics.serving, r0 + r1, batch=20)
        step_until(first, lambda: first.counters.records == 1_200)  # ends with a checkpoint
        part = first.owned[serving]
        assert part.awaiting == {} and part.tallies[("ctr", to_us(T0))].ids == []
        waiting = store.waiting(first.group, 0, [r.request_id for r in r0 + r1])
        assert len(waiting) == 1_200 and all(isinstance(w, WaitingPrediction) for w in waiting.values())
        score = r0[0].prediction
        assert isinstance(score, float)
        deadline = to_us(T0 + WINDOW) + 120_000_000  # the window's end plus the horizon
        assert waiting[r0[0].request_id] == WaitingPrediction("ctr", to_us(T0), score, {}, deadline)
        with store.transaction() as tx:  # the checkpoint holds counts, not the waiting predictions
            saved = tx.load_checkpoints(first.group, [settings.topics.serving])[(serving.topic, 0)].state
        assert "awaiting" not in saved and [t["predicted"] for t in saved["tallies"]] == [600, 600]
    finally:
        first.close()

    second = daemon_for()  # restores the partition: the waiting predictions are only in the store
    try:
        # Labels of all three windows, in event-time order; window 2's come before its predictions.
        produce_labels(bootstrap, settings.topics.labels, l0 + l1 + l2)
        step_until(second, lambda: second.counters.labels == 1_800)
        assert second.counters.labels_joined == 1_200
        assert second.owned[serving].stored_labels == {
            label.request_id: to_us(label.event_time) for label in l2
        }
        early = store.waiting(second.group, 0, [label.request_id for label in l2])
        assert len(early) == 600 and all(isinstance(e, EarlyLabel) for e in early.values())
        assert store.waiting(second.group, 0, [r.request_id for r in r0 + r1]) == {}  # joined: deleted

        produce(bootstrap, settings.topics.serving, r2, batch=20)
        step_until(second, lambda: second.counters.records == 600)  # this daemon's own count
        assert second.counters.labels_joined == 1_800  # window 2 joined its stored early labels
        assert second.counters.unmatched_labels == 0
        assert store.waiting(second.group, 0, [label.request_id for label in l2]) == {}

        produce(bootstrap, settings.topics.serving, closing_record(Baseline.load(directory), 9), batch=1)
        far = [LabelRecord(f"closer-{i}", T0 + dt.timedelta(minutes=20), 0) for i in range(20)]
        produce_labels(bootstrap, settings.topics.labels, far)

        def finalised() -> bool:
            second.checkpoint()  # (this test's checkpoints are its own)
            return second.counters.label_windows >= 3

        step_until(second, finalised, timeout_s=90)
    finally:
        second.close()
    summary = _label_summary(store, settings.group_id)
    assert [row[2] for row in summary] == [600, 600, 600] and [row[1] for row in summary] == [600, 600, 600]
    with store.transaction() as tx:  # a finalised window's rows are gone
        joins = tx.joins(settings.group_id)
        assert all(joins.pairs(("ctr", to_us(T0 + i * WINDOW))).ids == [] for i in range(3))
    assert set(store.waiting(settings.group_id, 0, [f"closer-{i}" for i in range(20)])) == {
        f"closer-{i}" for i in range(20)
    }  # still waiting for predictions that could come
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkilled_daemon_joins_labels_as_an_uninterrupted_one(
    backend: str, kafka_broker: EmbeddedBroker, labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    import uuid

    from skewguard.baseline import Baseline

    directory, _auc = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    schema = f"sg_labels_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'crash.db'}" if backend == "sqlite" else POSTGRES_URL
    victim = settings_for(
        bootstrap,
        directory,
        url,
        partitions=3,
        store={"url": url} | ({"db_schema": schema} if backend == "postgresql" else {}),
        labels={"horizon_s": 120.0, "min_pairs": 200},
        checkpoint_interval_s=0.3,
        max_poll_records=200,
    )
    reference = victim.model_copy(update={"group_id": victim.group_id + "-ref"})
    state = Baseline.load(directory).state
    records, labels = [], []
    for i in range(3):
        served, labelled = window(state, i, 1_000, 90 + 10 * i, good=i != 1)
        records += served
        labels += labelled[50:]  # 50 predictions per window are never labelled
    # Labels of requests never served, and labels beyond the horizon of window 0's predictions.
    labels += [LabelRecord(f"stranger-{i}", T0 + dt.timedelta(seconds=40 + i), 1) for i in range(30)]
    labels += [
        dataclasses.replace(label, event_time=T0 + WINDOW + dt.timedelta(seconds=121 + i % 50))
        for i, label in enumerate(window(state, 0, 1_000, 90, good=True)[1][:40])
    ]  # window 0's unlabelled requests, labelled too late
    labels.sort(key=lambda label: label.event_time)
    produce(bootstrap, victim.topics.serving, records, batch=1)
    # Label envelopes (the demo's, LABELS_PER_MESSAGE each) against single-record serving messages: the
    # labels topic runs ahead of the serving log, so many labels come before their prediction and wait
    # in the store (through the kills) for it.
    producer = RawProducer(KafkaSettings.local(bootstrap))
    try:
        publish_labels(
            producer, victim.topics.labels, labels, len(producer.partitions_for(victim.topics.labels))
        )
    finally:
        producer.close(5)
    produce(bootstrap, victim.topics.serving, closing_record(Baseline.load(directory), 9), batch=1)
    far = [LabelRecord(f"closer-{i}", T0 + dt.timedelta(minutes=20), 0) for i in range(30)]
    produce_labels(bootstrap, victim.topics.labels, far)

    ref_store = Store(url, schema=schema if backend == "postgresql" else None)
    ref = MonitorDaemon(reference, load_monitors(reference), ref_store)
    ref.open()
    try:
        step_until(ref, lambda: ref.counters.label_windows >= 3, timeout_s=120)
    finally:
        ref.close()
    expected = _label_summary(ref_store, reference.group_id)
    assert [row[2:4] for row in expected] == [(950, 40), (950, 0), (950, 0)]
    assert ref.counters.labels_joined == 2_850

    run_killed(
        config_file(victim, tmp_path / "monitor.yaml"),
        tmp_path / "daemon.log",
        lambda: len(ref_store.windows(group=victim.group_id, stage=Stage.LABELS)) >= 3,
    )
    assert _label_summary(ref_store, victim.group_id) == expected
    if backend == "postgresql":
        ref_store.drop_all()
    ref_store.close()


def test_a_rolled_back_checkpoint_keeps_the_join_changes_for_the_next_one(
    kafka_broker: EmbeddedBroker,
    labelled_baseline: tuple[Path, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from skewguard.baseline import Baseline
    from skewguard.errors import StoreError

    directory, _auc = labelled_baseline
    settings = settings_for(
        kafka_broker.bootstrap_servers,
        directory,
        f"sqlite:///{tmp_path / 'rollback.db'}",
        partitions=1,
        checkpoint_interval_s=3600.0,
    )
    records, _labels = window(Baseline.load(directory).state, 0, 300, 40, good=True)
    daemon, store = _opened(settings)  # (creates the topics with one partition, before anything is produced)
    ids = [r.request_id for r in records]
    try:
        produce(kafka_broker.bootstrap_servers, settings.topics.serving, records, batch=20)
        deadline = time.monotonic() + 60
        while daemon.counters.records < 300 and time.monotonic() < deadline:
            daemon.step()  # (the checkpoint interval is an hour)
        part = daemon.owned[TopicPartition(settings.topics.serving, 0)]
        stored = len(store.waiting(daemon.group, 0, ids))  # the daemon's first step checkpoints at once
        assert len(part.awaiting) == 300 - stored > 0

        def fail(*_args: object) -> None:  # after the join rows are written, before the commit
            msg = "the database went away"
            raise StoreError(msg)

        monkeypatch.setattr(daemon, "_stored_partitions", fail)
        with pytest.raises(StoreError):
            daemon.checkpoint()
        assert len(store.waiting(daemon.group, 0, ids)) == stored  # rolled back ...
        assert len(part.awaiting) == 300 - stored  # ... and still in memory, not lost
        monkeypatch.undo()
        daemon.checkpoint()
        assert len(store.waiting(daemon.group, 0, ids)) == 300 and part.awaiting == {}
    finally:
        daemon.close()
        store.close()


def test_old_checkpoint_pairs_and_repeated_request_ids_are_stored_once(
    labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """An earlier version's checkpoint held its pairs; a repeated prediction replaces the stored one."""
    from skewguard.labels import EarlyLabel, LabelTally, WaitingPrediction
    from skewguard.windows import PartitionWindows

    directory, _auc = labelled_baseline
    daemon, store = _offline_daemon(directory, tmp_path)
    start = to_us(T0)
    old = LabelTally(predicted=3)
    old.add("a", 0.9, 1.0)
    old.add("b", 0.1, 0.0)
    state = OwnedPartition(PartitionWindows(daemon.spec), 0, start).state()
    state["tallies"] = [{"model": "ctr", "start": start, "tally": old.to_dict()}]
    part = OwnedPartition.restore(daemon.spec, 0, state, start, daemon.horizon_us)
    part.awaiting["r"] = WaitingPrediction("ctr", start, 0.2, {}, start + 10**9)  # the first prediction
    for _save in range(2):  # saved, then a checkpoint with nothing new
        with store.transaction() as tx:
            daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    with store.transaction() as tx:
        stored = tx.joins(daemon.group).pairs(("ctr", start))
    assert stored.ids == ["a", "b"] and part.tallies[("ctr", start)].predicted == 3
    assert isinstance(store.waiting(daemon.group, 0, ["r"])["r"], WaitingPrediction)

    # The request is predicted again (in memory now); two labels come: one joins, one is unmatched.
    part.awaiting["r"] = WaitingPrediction("ctr", start, 0.7, {}, start + 10**9)
    _fold_labels_into(daemon, part, [LabelRecord("r", T0 + dt.timedelta(seconds=5 + i), 1) for i in range(2)])
    assert part.tallies[("ctr", start)].predictions == [0.7]  # the repeated prediction's score
    with store.transaction() as tx:
        daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    # The replaced stored prediction is gone with the join; the second label waits as an early label.
    assert store.waiting(daemon.group, 0, ["r"]) == {"r": EarlyLabel(1, to_us(T0) + 6_000_000, True)}
    store.close()


def test_a_prediction_is_looked_up_only_when_its_early_label_is_stored(
    labelled_baseline: tuple[Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner knows which early labels are stored: other predictions cost no store query."""
    from skewguard.baseline import Baseline
    from skewguard.labels import EarlyLabel
    from skewguard.records import ServingBatch

    directory, _auc = labelled_baseline
    daemon, store, part = _offline_partition(directory, tmp_path)
    start = to_us(T0)
    _fold_labels_into(daemon, part, [LabelRecord(f"early-{i}", T0, 1) for i in range(3)])
    with store.transaction() as tx:
        evicted, stored = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    assert evicted == 0 and stored == dict.fromkeys(["early-0", "early-1", "early-2"], start)
    part.stored_labels = stored

    lookups: list[set[str]] = []
    real = store.waiting

    def waiting(group: str, partition: int, request_ids: Any) -> Any:
        lookups.append(set(request_ids))
        return real(group, partition, request_ids)

    monkeypatch.setattr(store, "waiting", waiting)
    records = window(Baseline.load(directory).state, 0, 4, seed=3, good=True)[0]
    others = ServingBatch.from_records(records)
    assert daemon._stored_early_labels(0, part, others) == {}
    assert lookups == []  # no early label of these requests is stored: no query
    mixed = ServingBatch.from_records([*records, dataclasses.replace(records[0], request_id="early-1")])
    assert daemon._stored_early_labels(0, part, mixed) == {"early-1": EarlyLabel(1, start, True)}
    assert lookups == [{"early-1"}]  # only the request whose label is stored

    # A joined label leaves the index; once the others' window is sealed, they are evicted.
    part.settled.add("early-1")
    with store.transaction() as tx:
        evicted, stored = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    assert (evicted, stored) == (0, {"early-0": start, "early-2": start})
    part.stored_labels = stored
    part.windows.advance(start + daemon.spec.size_us + daemon.spec.lateness_us)
    assert part.windows.watermark_us == start + daemon.spec.size_us
    with store.transaction() as tx:
        evicted, stored = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    assert (evicted, stored) == (2, {})
    assert real(daemon.group, 0, ["early-0", "early-1", "early-2"]) == {}
    store.close()


def test_a_repeated_label_never_replaces_the_first_whatever_the_arrival_order(
    labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """The first label of a request wins, as it does when its prediction is already waiting.

    Two labels arriving before their prediction made the last one win (in memory, and over a stored
    one), so a replay that interleaved the two topics differently stored different pairs.
    """
    from skewguard.baseline import Baseline
    from skewguard.records import ServingBatch

    directory, _auc = labelled_baseline
    daemon, store, part = _offline_partition(directory, tmp_path)
    records = window(Baseline.load(directory).state, 0, 2, seed=3, good=True)[0]
    in_memory, in_store = (r.request_id for r in records)
    at = T0 + dt.timedelta(seconds=50)
    _fold_labels_into(daemon, part, [LabelRecord(in_store, at, 0)])
    with store.transaction() as tx:  # a checkpoint stores that first label
        _evicted, part.stored_labels = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    _fold_labels_into(daemon, part, [LabelRecord(in_store, at, 1)])
    _fold_labels_into(daemon, part, [LabelRecord(in_memory, at, 0), LabelRecord(in_memory, at, 1)])
    assert daemon.counters.unmatched_labels == 2  # the repeats
    batch = ServingBatch.from_records(records)
    key = ("ctr", to_us(T0))
    early = daemon._stored_early_labels(0, part, batch)
    daemon._await_labels(part, key, batch, daemon.monitors["ctr"], early)
    tally = part.tallies[key]
    assert dict(zip(tally.ids, tally.labels, strict=True)) == {in_memory: 0.0, in_store: 0.0}
    store.close()


def test_an_early_label_waits_while_its_prediction_can_still_fall_into_an_open_window(
    labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """The watermark passing a label is not enough: a prediction just before it still joins an open window."""
    directory, _auc = labelled_baseline
    daemon, store, part = _offline_partition(directory, tmp_path)
    start = to_us(T0)  # a window start (T0 is aligned to the 60 s windows)
    labelled_at = start + 10_000_000
    _fold_labels_into(daemon, part, [LabelRecord("early", from_us(labelled_at), 1)])
    # Records up to 35 s into the window: the watermark (lateness 5 s) is 30 s in, past the label.
    part.windows.advance(start + 35_000_000)
    watermark = part.windows.watermark_us
    assert watermark is not None and labelled_at < watermark < start + daemon.spec.size_us
    # Its prediction (say at 5 s) would not be late: the window is open. So the label stays.
    daemon._evict_orphan_labels()
    assert "early" in part.pending and daemon.counters.unmatched_labels == 0
    with store.transaction() as tx:
        evicted, stored = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    assert (evicted, stored) == (0, {"early": labelled_at})
    part.stored_labels = stored
    # Once the label's window is sealed, no prediction of it can be folded any more: evicted.
    part.windows.advance(start + daemon.spec.size_us + daemon.spec.lateness_us)
    with store.transaction() as tx:
        evicted, stored = daemon._save_join(tx.joins(daemon.group), 0, part, part.detach_join())
    assert (evicted, stored) == (1, {})
    store.close()


def test_a_store_error_in_a_label_lookup_reads_the_poll_again(
    kafka_broker: EmbeddedBroker,
    labelled_baseline: tuple[Path, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consumer is past the poll when a lookup fails: every partition not folded is read again."""
    from skewguard.baseline import Baseline
    from skewguard.errors import StoreError

    directory, _auc = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        directory,
        f"sqlite:///{tmp_path / 'lookup.db'}",
        partitions=1,
        checkpoint_interval_s=3600.0,
    )
    state = Baseline.load(directory).state
    (r0, l0), (r1, _l1) = (window(state, i, 300, 50 + i, good=True) for i in range(2))
    daemon, store = _opened(settings)  # (creates the topics with one partition, before anything is produced)
    try:
        produce(bootstrap, settings.topics.serving, r0, batch=20)
        step_until(daemon, lambda: daemon.counters.records == 300)  # waiting in the store now
        produce_labels(bootstrap, settings.topics.labels, l0)
        produce(bootstrap, settings.topics.serving, r1, batch=20)
        real = store.waiting
        failures: list[int] = []

        def waiting(group: str, partition: int, request_ids: Any) -> Any:
            if not failures:
                failures.append(len(list(request_ids)))
                msg = "the database went away"
                raise StoreError(msg)
            return real(group, partition, request_ids)

        monkeypatch.setattr(store, "waiting", waiting)
        deadline = time.monotonic() + 60
        while daemon.counters.labels_joined < 300 or daemon.counters.records < 600:
            assert time.monotonic() < deadline, f"not joined within 60 s: {daemon.counters}"
            try:
                daemon.step()
            except StoreError:  # what run() retries after a pause
                continue
        assert len(failures) == 1 and failures[0] > 0
        # Nothing skipped, nothing counted twice.
        assert (daemon.counters.labels, daemon.counters.records) == (300, 600)
        assert daemon.counters.unmatched_labels == 0
    finally:
        daemon.close()
        store.close()


def test_a_labels_offset_waits_for_its_serving_partners_checkpoint(
    kafka_broker: EmbeddedBroker, labelled_baseline: tuple[Path, float], tmp_path: Path
) -> None:
    """What labels did lives in the serving partition's join rows: their offset is saved with them only.

    The serving partition's checkpoint is refused here as a stale owner's would be (the store holds a
    newer one); the labels partition must then keep its stored offset, in the store and in Kafka, or a
    restart would resume past labels whose joins were never stored.
    """
    from skewguard.baseline import Baseline
    from skewguard.store import Checkpoint

    directory, _auc = labelled_baseline
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap, directory, f"sqlite:///{tmp_path / 'hold.db'}", partitions=1, checkpoint_interval_s=3600.0
    )
    records, labels = window(Baseline.load(directory).state, 0, 200, 60, good=True)
    daemon, store = _opened(settings)  # (creates the topics with one partition, before anything is produced)
    serving = TopicPartition(settings.topics.serving, 0)
    labels_tp = TopicPartition(settings.topics.labels, 0)

    def stored_offsets() -> dict[tuple[str, int], int]:
        with store.transaction() as tx:
            found = tx.load_checkpoints(daemon.group, [serving.topic, labels_tp.topic])
        return {key: checkpoint.next_offset for key, checkpoint in found.items()}

    try:
        produce(bootstrap, settings.topics.serving, records, batch=20)
        step_until(daemon, lambda: daemon.counters.records == 200)  # ends with a checkpoint
        before = stored_offsets()
        consumer = daemon.consumer
        assert consumer is not None
        committed = consumer.committed(labels_tp)
        produce_labels(bootstrap, settings.topics.labels, labels)
        deadline = time.monotonic() + 60
        while daemon.counters.labels < 200:  # folded, not checkpointed (the interval is an hour)
            assert time.monotonic() < deadline, f"labels not folded within 60 s: {daemon.counters}"
            daemon.step()
        assert daemon.counters.labels_joined == 200
        with store.transaction() as tx:  # another owner has saved the serving partition further on
            newer = Checkpoint(serving.topic, 0, before[(serving.topic, 0)] + 1_000, {"windows": {}})
            assert tx.save_checkpoint(daemon.group, newer, now=dt.datetime.now(dt.UTC))
        daemon.checkpoint()
        after = stored_offsets()
        assert after[(serving.topic, 0)] == newer.next_offset  # refused: the newer one stays
        assert after.get((labels_tp.topic, 0)) == before.get((labels_tp.topic, 0))  # held back
        assert consumer.committed(labels_tp) == committed  # and not committed to Kafka either
        assert daemon.label_parts[labels_tp].next_offset == 200  # (folded: held in memory only)
    finally:
        daemon.close()
        store.close()
