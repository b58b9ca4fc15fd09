"""Deliver stored alerts to the alerts topic and a webhook, with retries, never blocking the poll loop.

Alerts are first recorded in the store, in the transaction that finalises their window (deduplicated
there by key), together with an outbox row; delivery happens after that commit, from a background
thread. Each sink retries on its own (the webhook with exponential backoff; the topic waits for the
broker's acknowledgement) and answers DELIVERED, REFUSED or FAILED.

Delivery is at least once: the outbox row goes only when every sink has delivered the alert or
refused it for good (a webhook saying the payload itself is wrong). An alert a sink could not take now
(the broker or the webhook unreachable through its retries) keeps its row and is sent again by the
daemon's periodic sweep of the outbox (``alerts.retry_interval_s``, until ``give_up_after_s``); one a
crash caught in memory, or one still queued when :meth:`AlertDispatcher.close` gives up, is sent by
the next start. Receivers tell a repeat by its ``dedup_key``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from skewguard.results import WindowKey, json_bytes
from skewguard.store import NewAlert

log = logging.getLogger(__name__)


def alert_payload(alert: NewAlert, key: WindowKey) -> dict[str, Any]:
    """The JSON an alert is delivered as: what, where, when, and the evidence behind it."""
    return {
        "dedup_key": alert.dedup_key,
        "model": alert.model,
        "check": alert.check.value,
        "subject": alert.subject,
        "severity": alert.severity.value,
        "message": alert.message,
        "window_start": key.start.isoformat(),
        "window_end": key.end.isoformat(),
        "window_index": key.index,
        "evidence": alert.evidence,
    }


class Answer(Enum):
    """What a sink did with one alert."""

    DELIVERED = "delivered"
    #: The receiver rejects this payload for good (HTTP 400, 422...): sending it again would not help.
    REFUSED = "refused"
    #: Not delivered now (unreachable, timed out, 5xx through every retry): to be sent again.
    FAILED = "failed"


#: A sink: one alert's payload in, its answer out (True / False read as DELIVERED / FAILED).
Sink = Callable[[dict[str, Any]], Answer | bool]
#: HTTP statuses that refuse this payload for good: sending it again would not help. Every other
#: non-2xx is tried again (retries, then the outbox): 401/403/404 are often a token or a route being
#: rotated, 408/429 and 5xx say "not now", and a 3xx is never followed (urllib would re-send a POST as
#: a bodiless GET, whose 200 would count as delivered).
_REFUSED_HTTP: Final = frozenset({400, 405, 409, 410, 413, 415, 422})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # the 3xx is raised as an HTTPError instead


_OPENER: Final = urllib.request.build_opener(_NoRedirects)


@dataclass
class WebhookSink:
    """POST each alert as JSON; retry with exponential backoff on anything but a 2xx or a refusal."""

    url: str
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def send(self, payload: dict[str, Any]) -> Answer:
        """DELIVERED on a 2xx within the retries, REFUSED on a status refusing the payload, else FAILED."""
        body, key = json_bytes(payload), payload.get("dedup_key")
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return Answer.DELIVERED
            except urllib.error.HTTPError as exc:
                if exc.code in _REFUSED_HTTP:
                    log.warning("webhook refused alert %s: HTTP %s", key, exc.code)
                    return Answer.REFUSED
                log.info("webhook attempt %d for %s: HTTP %s", attempt + 1, key, exc.code)
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                log.info("webhook attempt %d for %s failed: %s", attempt + 1, key, exc)
            if attempt < self.retries:
                self.sleep(self.backoff_s * 2**attempt)
        return Answer.FAILED


@dataclass
class AlertDispatcher:
    """A background worker that hands alerts to the configured sinks in order."""

    sinks: list[Sink]
    #: Called (on the worker thread) with an alert's id once every sink has delivered or refused it: the
    #: daemon then takes it out of the store's outbox. An error in it is logged; the alert is sent again.
    on_settled: Callable[[int], None] | None = None
    delivered: int = 0
    failed: int = 0
    _queue: queue.Queue[tuple[dict[str, Any], int | None] | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None
    #: Set when close() stopped waiting: the worker settles nothing more (the daemon's producer and
    #: store are closing under it) and leaves what is queued in the outbox.
    _abandoned: threading.Event = field(default_factory=threading.Event)
    #: Outbox ids queued or being delivered: a sweep of the outbox must not queue them a second time.
    _in_flight: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="skewguard-alerts", daemon=True)
            self._thread.start()

    def submit(self, payload: dict[str, Any], alert_id: int | None = None) -> bool:
        """Queue an alert for delivery; returns at once. ``alert_id`` is reported to ``on_settled``.

        False (nothing queued) when the alert of that outbox id is queued or being delivered already.
        """
        if alert_id is not None:
            with self._lock:
                if alert_id in self._in_flight:
                    return False
                self._in_flight.add(alert_id)
        self._queue.put((payload, alert_id))
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._abandoned.is_set():
                return
            payload, alert_id = item
            try:
                self._settle(payload, alert_id, self._deliver(payload))
            finally:
                if alert_id is not None:
                    with self._lock:
                        self._in_flight.discard(alert_id)

    def _settle(self, payload: dict[str, Any], alert_id: int | None, settled: bool) -> None:
        if not settled or alert_id is None or self.on_settled is None or self._abandoned.is_set():
            return  # (not settled: its outbox row stays, and a later sweep or start sends it again)
        try:
            self.on_settled(alert_id)
        except Exception:  # (a store error): the alert stays in the outbox, sent again later
            log.exception("alert %s delivered but still in the outbox", payload.get("dedup_key"))

    def _deliver(self, payload: dict[str, Any]) -> bool:
        """Hand the alert to every sink; True when none of them failed (delivered, or refused for good)."""
        settled = True
        for sink in self.sinks:
            try:
                answer = sink(payload)
            except Exception:  # a sink bug must not kill delivery of the others
                log.exception("alert sink failed")
                answer = Answer.FAILED
            if answer is Answer.DELIVERED or (not isinstance(answer, Answer) and bool(answer)):
                self.delivered += 1
                continue
            self.failed += 1
            settled = settled and answer is Answer.REFUSED
        return settled

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop; what is left stays in the outbox."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._abandoned.set()
                log.warning("alert delivery still busy at shutdown: the rest is delivered at the next start")
            self._thread = None
