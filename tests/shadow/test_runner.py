"""ShadowRunner: production answers unchanged, candidates off the request path, one record per request."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings
from skewguard.shadow import Scorer, ShadowRunner, batch_scorer
from tests.shadow.helpers import (
    PROMPT_S,
    BlockedCandidate,
    MemoryLog,
    candidate_score,
    event_time,
    features_for,
    make_logger,
    production_score,
    read_records,
)


def crashing(features: Mapping[str, Any]) -> float:
    msg = "candidate bug"
    raise RuntimeError(msg)


# ------------------------------------------------------------------------------- the request path


def test_production_responses_are_identical_with_shadow_on_and_off() -> None:
    off_log, on_log = MemoryLog(), MemoryLog()
    with (
        ShadowRunner(production_score, {}, off_log) as off,
        ShadowRunner(
            production_score,
            {"v2": candidate_score, "v3": crashing, "v4": batch_scorer(lambda rows: [0.5] * len(rows))},
            on_log,
            batch_size=8,
        ) as on,
    ):
        answers_off = [off.predict(f"r{i}", features_for(i)) for i in range(500)]
        answers_on = [on.predict(f"r{i}", features_for(i)) for i in range(500)]
        assert on.flush(10.0)
    expected = [production_score(features_for(i)) for i in range(500)]
    assert answers_off == expected
    assert answers_on == expected
    for log in (off_log, on_log):
        logged = log.by_request()
        assert len(log.calls) == len(logged) == 500
        assert [logged[f"r{i}"]["prediction"] for i in range(500)] == expected


def test_production_exception_propagates_unchanged_and_nothing_is_logged_for_it() -> None:
    def production(features: Mapping[str, Any]) -> float:
        if features["x"] == 0.5:
            msg = "production bug"
            raise KeyError(msg)
        return 0.1

    log = MemoryLog()
    with ShadowRunner(production, {"v2": candidate_score}, log) as runner:
        assert runner.predict("a", features_for(1)) == 0.1
        with pytest.raises(KeyError, match="production bug"):
            runner.predict("b", features_for(2))
        assert runner.predict("c", features_for(3)) == 0.1
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.requests, stats.production_errors, stats.logged) == (3, 1, 2)
    assert sorted(log.by_request()) == ["a", "c"]


def test_arguments_that_cannot_be_recorded_are_counted_and_production_still_answers() -> None:
    """After production answered, copying raw_inputs that are no mapping raised into the request path."""
    log = MemoryLog()
    with ShadowRunner(production_score, {"v2": candidate_score}, log) as runner:
        answer = runner.predict("a", features_for(1), raw_inputs=[("x", 1), 2])  # type: ignore[arg-type]
        assert answer == production_score(features_for(1))
        assert runner.predict("b", features_for(2)) == production_score(features_for(2))
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.requests, stats.production_errors, stats.logged, stats.log_refused) == (2, 0, 1, 1)
    assert sorted(log.by_request()) == ["b"]


def test_one_defaulted_feature_named_as_a_string_is_that_name_not_its_letters() -> None:
    log = MemoryLog()
    with ShadowRunner(production_score, {}, log) as runner:
        runner.predict("a", features_for(1), defaulted="plan")
        assert runner.flush(10.0)
    assert log.by_request()["a"]["defaulted"] == ["plan"]


def test_slow_candidate_with_tiny_queue_drops_and_counts_and_never_blocks() -> None:
    blocked = BlockedCandidate()
    log = MemoryLog()
    runner = ShadowRunner(production_score, {"slow": blocked}, log, queue_size=2, batch_size=1)
    try:
        runner.predict("first", features_for(0))
        assert blocked.entered.wait(PROMPT_S), "the worker never started on the first request"
        started = time.monotonic()
        answers = [runner.predict(f"r{i}", features_for(i)) for i in range(1, 201)]
        took = time.monotonic() - started
        # the candidate is stuck until released: had predict waited for it, this would take 30 s
        assert took < PROMPT_S
        assert answers == [production_score(features_for(i)) for i in range(1, 201)]
        stats = runner.stats()
        slow = stats.candidates["slow"]
        assert (slow.dropped, slow.scored, stats.queued) == (198, 0, 3)  # 1 held + 2 in the queue
        # dropped requests are logged at once, with production's prediction and no shadow predictions
        assert len(log.calls) == 198
        assert all(call["shadow_predictions"] == {} for call in log.calls)
        assert {call["request_id"] for call in log.calls} == {f"r{i}" for i in range(3, 201)}
        blocked.release.set()
        assert runner.flush(10.0)
        stats = runner.stats()
        assert (stats.candidates["slow"].scored, stats.logged, stats.queued) == (3, 201, 0)
        logged = log.by_request()
        assert {rid for rid, call in logged.items() if call["shadow_predictions"]} == {"first", "r1", "r2"}
        assert logged["r1"]["shadow_predictions"] == {"slow": 0.5}
    finally:
        blocked.release.set()
        runner.close(5.0)


def test_candidate_past_the_deadline_is_skipped_counted_expired_and_the_record_still_logged() -> None:
    blocked = BlockedCandidate()
    log = MemoryLog()
    runner = ShadowRunner(
        production_score,
        {"slow": blocked, "next": candidate_score},
        log,
        batch_size=8,
        batch_wait_ms=0,
        deadline_ms=50,
    )
    try:
        for i in range(5):
            runner.predict(f"r{i}", features_for(i), event_time=event_time(i))
        assert blocked.entered.wait(PROMPT_S)
        # Past their 50 ms deadline the records are logged while the candidate still hangs: a record
        # waits at most the deadline (it waited until the candidate returned, or until close).
        assert runner.flush(10.0)
        assert not blocked.release.is_set()
        blocked.release.set()
    finally:
        blocked.release.set()
        stats = runner.close(5.0)  # (its late answers belong to records already logged: not counted)
    slow, after = stats.candidates["slow"], stats.candidates["next"]
    assert (after.scored, after.expired) == (0, 5)
    assert (slow.scored, slow.expired) == (0, 5)
    assert stats.logged == 5
    logged = log.by_request()
    assert sorted(logged) == [f"r{i}" for i in range(5)]
    assert all(call["shadow_predictions"] == {} for call in logged.values())
    assert logged["r3"]["event_time"] == event_time(3)  # taken in predict, not when logged


def test_requests_queued_behind_stuck_workers_are_logged_at_their_deadline_not_at_close() -> None:
    # Every worker hangs in the candidate: the requests behind them in the queue waited for a free
    # worker (until close), logged long after their event time, late for the monitor's windows.
    blocked = BlockedCandidate()
    log = MemoryLog()
    runner = ShadowRunner(
        production_score, {"slow": blocked}, log, workers=1, batch_size=1, batch_wait_ms=0, deadline_ms=50
    )
    try:
        runner.predict("r0", features_for(0), event_time=event_time(0))
        assert blocked.entered.wait(PROMPT_S)
        for i in range(1, 10):
            runner.predict(f"r{i}", features_for(i), event_time=event_time(i))
        assert runner.flush(10.0)  # every record logged while the candidate still hangs
        assert not blocked.release.is_set()
        logged = log.by_request()
        assert sorted(logged) == sorted(f"r{i}" for i in range(10))
        stats = runner.stats()
        assert (stats.logged, stats.queued, stats.candidates["slow"].expired) == (10, 0, 10)
    finally:
        blocked.release.set()
        runner.close(5.0)
    assert blocked.calls == 1  # the queued requests were never handed to the stuck candidate
    assert runner.stats().logged == 10


def test_close_logs_what_a_stuck_candidate_holds_within_its_timeout() -> None:
    blocked = BlockedCandidate()
    log = MemoryLog()
    before = set(threading.enumerate())
    runner = ShadowRunner(production_score, {"stuck": blocked}, log, batch_size=1)
    workers = [t for t in threading.enumerate() if t not in before and t.name.startswith("skewguard-shadow")]
    assert len(workers) == 1
    try:
        for i in range(4):
            runner.predict(f"r{i}", features_for(i))
        assert blocked.entered.wait(PROMPT_S)
        started = time.monotonic()
        stats = runner.close(timeout_s=0.3)
        assert time.monotonic() - started < PROMPT_S
        assert (stats.logged, stats.queued) == (4, 0)
        assert stats.candidates["stuck"].expired == 4
        assert sorted(log.by_request()) == [f"r{i}" for i in range(4)]
        # after close production still answers, logged at once without shadow predictions
        assert runner.predict("late", features_for(9)) == production_score(features_for(9))
        assert log.by_request()["late"]["shadow_predictions"] == {}
    finally:
        blocked.release.set()
    workers[0].join(10.0)
    assert not workers[0].is_alive(), "the released worker did not stop"
    final = runner.stats()
    # the stuck call's late answer belongs to a record already logged: not counted as scored
    assert (final.candidates["stuck"].scored, final.candidates["stuck"].dropped) == (0, 1)
    assert (final.logged, final.requests) == (5, 5)
    assert runner.close() == final  # idempotent


# ------------------------------------------------------------------------------- candidates


def test_crashing_and_malformed_candidates_are_counted_and_never_reach_production_or_the_record() -> None:
    def nan_for_even(features: Mapping[str, Any]) -> float:
        return math.nan if features["flag"] else 0.75

    def short_batch(rows: Sequence[Mapping[str, Any]]) -> list[float]:
        return [0.5] * (len(rows) - 1)  # one prediction too few: the whole call is unusable

    log = MemoryLog()
    candidates: dict[str, Scorer] = {
        "crashy": crashing,
        "nan": nan_for_even,
        "short": batch_scorer(short_batch),
        "good": candidate_score,
    }
    with ShadowRunner(production_score, candidates, log, batch_size=16) as runner:
        answers = [runner.predict(f"r{i}", features_for(i)) for i in range(300)]
        assert runner.flush(10.0)
        stats = runner.stats()
    assert answers == [production_score(features_for(i)) for i in range(300)]
    counts = {v: (c.scored, c.errors) for v, c in stats.candidates.items()}
    assert counts == {"crashy": (0, 300), "nan": (150, 150), "short": (0, 300), "good": (300, 0)}
    assert "RuntimeError: candidate bug" in str(stats.candidates["crashy"].last_error)
    assert "finite" in str(stats.candidates["nan"].last_error)
    short = re.search(
        r"returned (\d+) predictions for (\d+) requests", str(stats.candidates["short"].last_error)
    )
    assert short is not None and int(short[1]) == int(short[2]) - 1
    logged = log.by_request()
    for i in range(300):
        expected = {"good": candidate_score(features_for(i))}
        if i % 2:
            expected["nan"] = 0.75
        assert logged[f"r{i}"]["shadow_predictions"] == expected


def test_candidate_outputs_are_converted_to_loggable_predictions_or_counted_as_errors() -> None:
    outputs: list[Any] = [
        np.float64(0.25),
        np.array([0.2, 0.8]),
        torch.tensor(0.5),
        "clicked",
        True,
        7,
        (0.1, 0.9),
        {"score": 0.5},
        [],
        [0.5, math.inf],
        object(),
    ]

    def candidate(features: Mapping[str, Any]) -> Any:
        return outputs[int(features["i"])]

    log = MemoryLog()
    with ShadowRunner(lambda f: 0.0, {"odd": candidate}, log) as runner:
        for i in range(len(outputs)):
            runner.predict(f"r{i}", {"i": i})
        assert runner.flush(10.0)
        stats = runner.stats()
    shadows = {rid: call["shadow_predictions"].get("odd") for rid, call in log.by_request().items()}
    assert shadows == {
        "r0": 0.25,
        "r1": [0.2, 0.8],
        "r2": 0.5,
        "r3": "clicked",
        "r4": True,
        "r5": 7,
        "r6": [0.1, 0.9],
        "r7": None,
        "r8": None,
        "r9": None,
        "r10": None,
    }
    assert type(shadows["r0"]) is float and type(shadows["r2"]) is float
    assert (stats.candidates["odd"].scored, stats.candidates["odd"].errors) == (7, 4)


def test_a_batch_output_no_float_can_hold_is_that_requests_error_not_the_batchs() -> None:
    """A probability list holding 10**400: OverflowError escaped the per-request check, and the rest of
    the batch (and every later candidate) was counted as expired instead."""
    batch_outputs = [[10**400, 0.5], 0.25]

    def score(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        return batch_outputs[: len(rows)]

    log = MemoryLog()
    runner = ShadowRunner(
        lambda f: 0.0,
        {"big": batch_scorer(score), "next": candidate_score},
        log,
        batch_size=2,
        batch_wait_ms=50,
    )
    with runner:
        runner.predict("r0", features_for(0))
        runner.predict("r1", features_for(1))
        assert runner.flush(10.0)
        stats = runner.stats()
    big, after = stats.candidates["big"], stats.candidates["next"]
    assert (big.scored, big.errors, big.expired) == (1, 1, 0) and "'r0'" in (big.last_error or "")
    assert (after.scored, after.expired) == (2, 0)


def test_candidates_see_a_read_only_copy_so_nobody_can_change_the_logged_features() -> None:
    def meddling(features: Mapping[str, Any]) -> float:
        features["x"] = 99.0  # type: ignore[index]
        return 0.5

    log = MemoryLog()
    with ShadowRunner(production_score, {"meddler": meddling, "good": candidate_score}, log) as runner:
        mine = features_for(4)
        raw = {"price": 3.5}
        runner.predict("r4", mine, raw_inputs=raw)
        mine["x"] = -1.0  # the caller reuses its dicts at once
        raw["price"] = -1.0
        assert runner.flush(10.0)
        stats = runner.stats()
    call = log.by_request()["r4"]
    assert call["features"] == features_for(4)
    assert call["raw_inputs"] == {"price": 3.5}
    assert call["shadow_predictions"] == {"good": candidate_score(features_for(4))}
    assert "TypeError" in str(stats.candidates["meddler"].last_error)


def test_concurrent_requests_from_many_threads_are_each_scored_and_logged_once() -> None:
    log = MemoryLog()
    scored_batches: list[int] = []

    def batched(rows: Sequence[Mapping[str, Any]]) -> list[float]:
        scored_batches.append(len(rows))
        return [candidate_score(row) for row in rows]

    with ShadowRunner(
        production_score, {"v2": batch_scorer(batched)}, log, workers=2, batch_size=16, queue_size=5_000
    ) as runner:

        def serve(thread: int) -> None:
            for i in range(thread * 300, (thread + 1) * 300):
                assert runner.predict(f"r{i}", features_for(i)) == production_score(features_for(i))

        threads = [threading.Thread(target=serve, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.requests, stats.logged, stats.log_refused, stats.queued) == (1200, 1200, 0, 0)
    assert (stats.candidates["v2"].scored, stats.candidates["v2"].dropped) == (1200, 0)
    logged = log.by_request()
    assert len(log.calls) == len(logged) == 1200
    assert all(
        logged[f"r{i}"]["shadow_predictions"] == {"v2": candidate_score(features_for(i))} for i in range(1200)
    )
    assert max(scored_batches) <= 16 and sum(scored_batches) == 1200
    assert stats.candidates["v2"].mean_latency_ms is not None


def test_a_refusing_logger_is_counted_and_never_raises() -> None:
    log = MemoryLog(accept=False)
    with ShadowRunner(production_score, {"v2": candidate_score}, log) as runner:
        assert runner.predict("a", features_for(1)) == production_score(features_for(1))
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.logged, stats.log_refused, stats.queued) == (0, 1, 0)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"workers": 0}, "workers"),
        ({"queue_size": 0}, "queue_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_wait_ms": -1.0}, "batch_wait_ms"),
        ({"deadline_ms": math.nan}, "deadline_ms"),
        ({"candidates": {"v2": 0.5}}, "candidates['v2']"),
        ({"candidates": {"": candidate_score}}, "version strings"),
        ({"production": "model.pt"}, "production"),
        ({"logger": object()}, "logger"),
    ],
)
def test_bad_arguments_are_config_errors_naming_the_argument(kwargs: dict[str, Any], named: str) -> None:
    arguments: dict[str, Any] = {"production": production_score, "candidates": {}, "logger": MemoryLog()}
    arguments.update(kwargs)
    production, candidates, logger = (arguments.pop(k) for k in ("production", "candidates", "logger"))
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        ShadowRunner(production, candidates, logger, **arguments)


# ------------------------------------------------------------------------------- the real serving log


@pytest.mark.kafka
def test_shadow_predictions_arrive_in_the_logged_records_by_request_id(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic()

    def label(features: Mapping[str, Any]) -> str:
        return "buyer" if features["plan"] == "pro" else "browser"

    with make_logger(settings, topic) as logger:
        candidates: dict[str, Scorer] = {
            "v2": batch_scorer(lambda rows: [candidate_score(r) for r in rows]),
            "v3": label,
        }
        with ShadowRunner(production_score, candidates, logger, batch_size=16) as runner:
            for i in range(400):
                runner.predict(
                    f"r{i}",
                    features_for(i),
                    raw_inputs={"source": "web", "i": i},
                    event_time=event_time(i),
                    model_version="prod-2" if i % 100 == 0 else None,
                    defaulted=["y"] if i % 50 == 0 else (),
                )
            assert runner.flush(10.0)
        assert logger.flush(20.0)
    records = read_records(settings, topic, 400)
    by_id = {record.request_id: record for record in records}
    assert len(records) == len(by_id) == 400, "exactly one record per request"
    for i in range(400):
        record = by_id[f"r{i}"]
        features = features_for(i)
        assert record.prediction == production_score(features)
        assert record.shadow_predictions == {"v2": candidate_score(features), "v3": label(features)}
        assert record.features == features
        assert record.raw_inputs == {"source": "web", "i": i}
        assert record.event_time == event_time(i)
        assert record.model_version == ("prod-2" if i % 100 == 0 else "prod-1")
        assert record.defaulted == (["y"] if i % 50 == 0 else [])


@pytest.mark.kafka
def test_a_crashing_candidate_leaves_production_records_intact_on_the_broker(
    kafka_broker: EmbeddedBroker, kafka_topic: Callable[..., str]
) -> None:
    settings = KafkaSettings.local(kafka_broker.bootstrap_servers)
    topic = kafka_topic()

    def nan_sometimes(features: Mapping[str, Any]) -> float:
        return math.nan if features["flag"] else 0.75

    with make_logger(settings, topic) as logger:
        with ShadowRunner(production_score, {"crashy": crashing, "nan": nan_sometimes}, logger) as runner:
            answers = [runner.predict(f"r{i}", features_for(i), event_time=event_time(i)) for i in range(200)]
            assert runner.flush(10.0)
            stats = runner.stats()
        assert logger.flush(20.0)
        logger_stats = logger.stats()
    assert answers == [production_score(features_for(i)) for i in range(200)]
    assert (stats.candidates["crashy"].errors, stats.candidates["nan"].errors) == (200, 100)
    # a NaN would be written as null and the codec would refuse the whole record: none was refused
    assert (logger_stats.sent, logger_stats.invalid) == (200, 0)
    by_id = {record.request_id: record for record in read_records(settings, topic, 200)}
    assert len(by_id) == 200
    for i in range(200):
        assert by_id[f"r{i}"].prediction == production_score(features_for(i))
        assert by_id[f"r{i}"].shadow_predictions == ({} if i % 2 == 0 else {"nan": 0.75})
