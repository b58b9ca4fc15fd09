"""Operations surface of a running daemon: /metrics, /healthz, /status, and webhook alert delivery."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skewguard.alerts.delivery import AlertDispatcher, Answer, WebhookSink
from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon, load_monitors
from skewguard.demo.traffic import hour_in_utc_bug
from skewguard.io.broker import EmbeddedBroker
from skewguard.ops import metric_names
from skewguard.results import Check, Severity, WindowKey, WindowResult
from skewguard.store import NewAlert, Store
from tests.daemon.helpers import (
    T0,
    WINDOW,
    build_ctr_baseline,
    closing_record,
    produce,
    read_topic,
    settings_for,
    step_until,
    window_records,
)

pytestmark = pytest.mark.kafka


def strict_json(token: str) -> Any:
    """What a strict JSON parser does with Python's NaN / Infinity tokens: refuse them."""
    msg = f"not JSON: {token}"
    raise ValueError(msg)


class Receiver:
    """A local webhook endpoint that records what it is sent.

    It answers its first calls with ``statuses`` (by default one 503, to test retries), then 204.
    """

    def __init__(self, statuses: tuple[int, ...] = (503,)) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.calls += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.calls <= len(statuses):
                    status = statuses[receiver.calls - 1]
                    self.send_response(status)
                    if 300 <= status < 400:  # (followed, the POST would come back as a bodiless GET)
                        self.send_header("Location", receiver.url)
                else:
                    receiver.payloads.append(json.loads(body, parse_constant=strict_json))
                    self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:  # a followed redirect's GET: "200", though nothing was posted
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_the_webhook_posts_standard_json_even_for_non_finite_evidence() -> None:
    receiver = Receiver()
    try:
        sink = WebhookSink(receiver.url, sleep=lambda _s: None)
        payload = {
            "dedup_key": "k",
            "evidence": {"ci_low": float("nan"), "effect": np.float64(np.inf), "n": 3},
        }
        assert sink.send(payload) is Answer.DELIVERED
        assert receiver.payloads == [{"dedup_key": "k", "evidence": {"ci_low": None, "effect": None, "n": 3}}]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.mark.parametrize(
    ("statuses", "answer", "calls"),
    [
        ((429, 503), Answer.DELIVERED, 3),
        ((400,), Answer.REFUSED, 1),
        ((503,) * 4, Answer.FAILED, 4),
        ((404,) * 4, Answer.FAILED, 4),  # (a route missing during a deploy: kept for later)
        ((302, 308, 204), Answer.DELIVERED, 3),  # a redirect is never followed (a POST would lose its body)
    ],
)
def test_the_webhook_retries_what_may_pass_later_and_gives_up_on_a_refusal(
    statuses: tuple[int, ...], answer: Answer, calls: int
) -> None:
    receiver = Receiver(statuses)
    try:
        sink = WebhookSink(receiver.url, retries=3, sleep=lambda _s: None)
        assert sink.send({"dedup_key": "k"}) is answer
        assert receiver.calls == calls
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_the_dispatcher_settles_an_alert_only_when_no_sink_failed_and_never_after_giving_up() -> None:
    """Only then may its outbox row go: an alert not delivered now, or still queued, is sent again."""
    settled: list[int] = []
    answers: list[tuple[str, str]] = []

    def refusing(payload: dict[str, Any]) -> Answer:  # (a webhook's 4xx: sending again would not help)
        answers.append(("refusing", payload["dedup_key"]))
        return Answer.REFUSED

    def flaky(payload: dict[str, Any]) -> Answer:
        answers.append(("flaky", payload["dedup_key"]))
        return Answer.FAILED if payload["dedup_key"] == "b" else Answer.DELIVERED

    dispatcher = AlertDispatcher([refusing, flaky], on_settled=settled.append)
    dispatcher.start()
    dispatcher.submit({"dedup_key": "a"}, 7)
    dispatcher.submit({"dedup_key": "b"}, 8)  # the broker was down for this one: it stays in the outbox
    dispatcher.submit({"dedup_key": "c"})  # no outbox row to report
    dispatcher.close()
    # Each sink in submission order (each has its worker: their answers interleave)
    for sink in ("refusing", "flaky"):
        assert [key for name, key in answers if name == sink] == ["a", "b", "c"]
    assert settled == [7] and (dispatcher.delivered, dispatcher.failed) == (2, 4)

    release = threading.Event()
    stuck = AlertDispatcher([lambda _payload: release.wait(10)], on_settled=settled.append)
    stuck.start()
    [worker] = stuck._threads
    assert stuck.submit({"dedup_key": "d"}, 9)
    assert stuck.submit({"dedup_key": "e"}, 10)
    assert not stuck.submit({"dedup_key": "e"}, 10)  # (a sweep of the outbox meeting it in flight)
    stuck.close(timeout_s=0.2)  # gives up while "d" is still in its sink
    release.set()  # ... which then answers: the daemon's producer and store are closing by now
    worker.join(5)
    assert not worker.is_alive() and settled == [7]  # neither "d" nor the queued "e" settled


def test_an_alert_sent_again_goes_only_to_the_sinks_that_failed_it() -> None:
    """The alerts topic must not get a copy at every outbox sweep while the webhook is down."""
    settled: list[int] = []
    calls: list[tuple[str, str]] = []
    webhook_up = threading.Event()

    def topic(payload: dict[str, Any]) -> Answer:
        calls.append(("topic", payload["dedup_key"]))
        return Answer.DELIVERED

    def webhook(payload: dict[str, Any]) -> Answer:
        calls.append(("webhook", payload["dedup_key"]))
        return Answer.DELIVERED if webhook_up.is_set() else Answer.FAILED

    answers: list[tuple[str, Answer]] = []
    dispatcher = AlertDispatcher(
        {"topic": topic, "webhook": webhook},
        on_settled=settled.append,
        on_answer=lambda sink, answer: answers.append((sink, answer)),
    )
    dispatcher.start()
    try:
        assert dispatcher.submit({"dedup_key": "a"}, 1)
        wait_until(lambda: not dispatcher.in_flight())
        assert settled == [] and sorted(calls) == [("topic", "a"), ("webhook", "a")]
        assert dispatcher.submit({"dedup_key": "a"}, 1)  # a sweep, the webhook still down
        wait_until(lambda: not dispatcher.in_flight())
        webhook_up.set()
        assert dispatcher.submit({"dedup_key": "a"}, 1)  # the next sweep
        wait_until(lambda: not dispatcher.in_flight() and settled == [1])
        assert sorted(calls) == [("topic", "a"), *[("webhook", "a")] * 3]
        delivered, failed = Answer.DELIVERED, Answer.FAILED
        expected = [("topic", delivered), ("webhook", failed), ("webhook", failed), ("webhook", delivered)]
        assert sorted(answers, key=str) == sorted(expected, key=str)
        # Out of the outbox (given up on, or settled by another replica): forgotten at the next sweep.
        webhook_up.clear()
        assert dispatcher.submit({"dedup_key": "z"}, 2)
        assert dispatcher.submit({"dedup_key": "y"}, 3)
        wait_until(lambda: not dispatcher.in_flight())
        dispatcher.retain({3})  # the outbox's ids
        assert dispatcher.submit({"dedup_key": "y"}, 3)
        wait_until(lambda: not dispatcher.in_flight())
        assert calls.count(("topic", "y")) == 1  # still remembered
        assert dispatcher.submit({"dedup_key": "z"}, 2)
        wait_until(lambda: not dispatcher.in_flight())
        assert calls.count(("topic", "z")) == 2 and settled == [1]
        webhook_up.set()
        # Settled: remembered no more, so an alert of that id (a new outbox row) goes everywhere again.
        assert dispatcher.submit({"dedup_key": "b"}, 1)
        wait_until(lambda: not dispatcher.in_flight() and settled == [1, 1])
        assert calls.count(("topic", "b")) == calls.count(("webhook", "b")) == 1
    finally:
        dispatcher.close()


def test_a_settled_alert_is_reported_once_off_the_callers_thread_and_again_if_reporting_failed() -> None:
    """Settling (the store's outbox delete) runs on a worker; the alert is in flight until it is done."""
    reported: list[tuple[int, str]] = []
    sent: list[str] = []
    store_down, release = threading.Event(), threading.Event()
    store_down.set()

    def settle(alert_id: int) -> None:
        release.wait(10)
        if store_down.is_set():
            msg = "store unavailable"
            raise RuntimeError(msg)
        reported.append((alert_id, threading.current_thread().name))

    def topic(payload: dict[str, Any]) -> Answer:
        sent.append(payload["dedup_key"])
        return Answer.DELIVERED

    dispatcher = AlertDispatcher({"topic": topic}, on_settled=settle)
    dispatcher.start()
    try:
        assert dispatcher.submit({"dedup_key": "a"}, 5)
        wait_until(lambda: sent == ["a"])
        assert not dispatcher.submit({"dedup_key": "a"}, 5)  # delivered, still being settled: in flight
        release.set()
        wait_until(lambda: not dispatcher.in_flight())
        assert reported == []  # the store refused: its outbox row stays
        store_down.clear()
        assert dispatcher.submit({"dedup_key": "a"}, 5)  # the next sweep settles it, sending nothing
        wait_until(lambda: not dispatcher.in_flight())
        assert sent == ["a"] and reported == [(5, "skewguard-alerts-topic")]
    finally:
        release.set()
        dispatcher.close()


def test_a_hanging_sink_does_not_hold_up_the_others() -> None:
    """A black-holed webhook (each attempt waits out its timeout) must not delay the alerts topic."""
    release = threading.Event()
    published: list[str] = []

    def topic(payload: dict[str, Any]) -> Answer:
        published.append(payload["dedup_key"])
        return Answer.DELIVERED

    dispatcher = AlertDispatcher({"topic": topic, "webhook": lambda _payload: release.wait(10)})
    dispatcher.start()
    try:
        for key in "abc":
            dispatcher.submit({"dedup_key": key})
        wait_until(lambda: len(published) == 3)
        assert published == ["a", "b", "c"] and not release.is_set()
    finally:
        release.set()
        dispatcher.close()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_an_alert_a_sink_could_not_take_is_sent_again_by_the_outbox_sweep(
    baseline_dir: Path, tmp_path: Path
) -> None:
    """Not only at the next start: every alerts.retry_interval_s, once the alert is that old."""
    now = [1_800_000_000.0]
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    alerts = {"retry_interval_s": 60.0, "give_up_after_s": 3600.0}
    settings = settings_for("127.0.0.1:1", baseline_dir, url, alerts=alerts)
    store = Store(url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store, clock=lambda: now[0])  # never opened
    group = settings.group_id
    raised = dt.datetime.fromtimestamp(now[0], dt.UTC)
    with store.transaction() as tx:
        key = WindowKey("ctr", T0, T0 + WINDOW)
        window_id = tx.finalise_window(group, WindowResult(key, 10), now=raised)
        assert window_id is not None
        alert = NewAlert("g/ctr/drift/x/0", "ctr", Check.DRIFT, "x", Severity.WARNING, "x drifted", {})
        alert_id = tx.add_alert(window_id, alert, now=raised)
        assert alert_id is not None
        tx.hold_for_delivery(group, alert_id, now=raised)
    answers, sent = [Answer.FAILED, Answer.DELIVERED, Answer.FAILED, Answer.FAILED], []

    def broker_down_once(payload: dict[str, Any]) -> Answer:
        sent.append(payload["dedup_key"])
        return answers.pop(0)

    daemon.dispatcher = AlertDispatcher([broker_down_once], on_settled=daemon._alert_settled)
    daemon.dispatcher.start()
    try:

        def delivered(count: int) -> None:
            deadline = time.monotonic() + 10
            while (len(sent) < count or daemon.dispatcher.in_flight()) and time.monotonic() < deadline:  # type: ignore[union-attr]
                time.sleep(0.01)

        daemon._last_alert_sweep = now[0]
        assert daemon._resend_undelivered(None) == 1  # as at a start: the broker is down, the row stays
        delivered(1)
        assert [u.id for u in store.undelivered(group)] == [alert_id]
        now[0] += 30.0
        daemon._sweep_outbox_if_due()  # not due yet
        now[0] += 31.0
        daemon._sweep_outbox_if_due()  # due, and the alert is older than the interval
        delivered(2)
        assert sent == [alert.dedup_key] * 2 and store.undelivered(group) == []
        # One the sinks never take is given up on once it is give_up_after_s old (it stays an alert).
        with store.transaction() as tx:
            stuck = tx.add_alert(window_id, replace(alert, dedup_key="stuck"), now=raised)
            assert stuck is not None
            tx.hold_for_delivery(group, stuck, now=raised)
        now[0] += 60.0
        daemon._sweep_outbox_if_due()
        delivered(3)
        assert [u.id for u in store.undelivered(group)] == [stuck]
        now[0] = raised.timestamp() + 3601.0
        daemon._sweep_outbox_if_due()
        assert store.undelivered(group) == [] and len(sent) == 3
        assert len(store.alerts(open_only=False)) == 2  # given up on: out of the outbox, still an alert
    finally:
        daemon.dispatcher.close()
        store.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_an_alert_a_crash_kept_from_delivery_is_delivered_at_the_next_start(
    kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """At least once: the alert is committed with its outbox row; the next run delivers what is left."""
    baseline_dir = tmp_path / "baseline"
    build_ctr_baseline(baseline_dir)
    baseline = Baseline.load(baseline_dir)
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(bootstrap, baseline_dir, f"sqlite:///{tmp_path / 'outbox.db'}")
    store = Store(settings.store.url)
    first = MonitorDaemon(settings, load_monitors(settings), store)
    first.open()
    receiver = Receiver()
    try:
        assert first.dispatcher is not None
        first.dispatcher.submit = lambda *_args: True  # type: ignore[method-assign]  # lost, as in a SIGKILL
        bug_rows = np.random.default_rng(1).random(800) < 0.5
        records = window_records(baseline, 0, 800, seed=7, bug=hour_in_utc_bug, bug_rows=bug_rows)
        produce(bootstrap, settings.topics.serving, records)
        produce(bootstrap, settings.topics.serving, closing_record(baseline, 5), batch=1)
        step_until(first, lambda: first.counters.windows >= 1)
        first.close()
        [held] = store.undelivered(settings.group_id)
        assert (held.alert.check.value, held.alert.subject) == ("skew", "hour_of_day_local")

        hooked = settings.model_copy(
            update={"alerts": settings.alerts.model_copy(update={"webhook_url": receiver.url})}
        )
        second = MonitorDaemon(hooked, load_monitors(hooked), store)
        second.open()  # delivers the held alert, to the topic and the webhook
        deadline = time.monotonic() + 20
        while store.undelivered(settings.group_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        second.close()
        assert store.undelivered(settings.group_id) == []
        assert [p["dedup_key"] for p in receiver.payloads] == [held.alert.dedup_key]
        on_topic = [
            json.loads(m.value or b"") for m in read_topic(bootstrap, settings.topics.alerts, settings)
        ]
        assert [p["dedup_key"] for p in on_topic] == [held.alert.dedup_key]
        assert on_topic[0]["evidence"]["mismatched"] == held.alert.evidence["mismatched"] > 0
    finally:
        store.close()
        receiver.server.shutdown()
        receiver.server.server_close()


def test_metrics_health_status_and_webhook(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    baseline_dir = tmp_path / "baseline"
    build_ctr_baseline(baseline_dir)
    baseline = Baseline.load(baseline_dir)
    receiver = Receiver()
    settings = settings_for(
        kafka_broker.bootstrap_servers,
        baseline_dir,
        f"sqlite:///{tmp_path / 'ops.db'}",
        alerts={"webhook_url": receiver.url, "webhook_retries": 3},
    )
    store = Store(settings.store.url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store)
    daemon.open(serve_http=True)
    try:
        assert daemon.ops is not None
        base = f"http://127.0.0.1:{daemon.ops.port}"
        bug_rows = np.random.default_rng(1).random(800) < 0.5
        records = window_records(baseline, 0, 800, seed=7, bug=hour_in_utc_bug, bug_rows=bug_rows)
        produce(kafka_broker.bootstrap_servers, settings.topics.serving, records)
        produce(kafka_broker.bootstrap_servers, settings.topics.serving, closing_record(baseline, 5), batch=1)
        step_until(daemon, lambda: daemon.counters.windows >= 1)
        deadline = time.monotonic() + 15
        while not receiver.payloads and time.monotonic() < deadline:
            time.sleep(0.2)

        status, body = get(f"{base}/metrics")
        text = body.decode()
        assert status == 200
        assert 'skewguard_records_total{model="ctr"} 8' in text  # 800 (+ closers) folded
        assert 'skewguard_skew_mismatch_rate{feature="hour_of_day_local",model="ctr"}' in text
        assert "skewguard_windows_finalised_total" in text
        assert 'skewguard_alert_deliveries_total{answer="delivered",sink="webhook"} 1.0' in text
        # (the webhook's first 503 was retried inside the sink: one answer, delivered)
        assert 'skewguard_alert_deliveries_total{answer="failed",sink="webhook"}' not in text
        assert 'skewguard_alert_deliveries_total{answer="delivered",sink="topic"} 1.0' in text
        assert {"skewguard_records_total", "skewguard_effect_size"} <= metric_names(daemon.metrics)

        status, body = get(f"{base}/healthz")
        assert status == 200 and body.startswith(b"ok")
        status, body = get(f"{base}/status")
        document = json.loads(body)
        assert document["models"]["ctr"]["records"] == 800
        assert document["open_alerts"] == len(store.alerts(open_only=True)) >= 1  # (the skew alert)
        assert {"check": "skew", "subject": "hour_of_day_local"}.items() <= document["models"]["ctr"][
            "flagged"
        ][0].items()
        assert get(f"{base}/nope")[0] == 404

        assert receiver.calls >= 2  # one refused attempt, then the retry
        payload = receiver.payloads[0]
        assert (payload["check"], payload["subject"], payload["severity"]) == (
            "skew",
            "hour_of_day_local",
            "critical",
        )
        assert payload["evidence"]["mismatched"] > 0
        assert payload["evidence"]["examples"]
    finally:
        daemon.close()
        store.close()
        receiver.server.shutdown()
        receiver.server.server_close()
