"""Deliver stored alerts to the alerts topic and a webhook, with retries, never blocking the poll loop.

Alerts are first recorded in the store, in the transaction that finalises their window (deduplicated
there by key), together with an outbox row; delivery happens after that commit, from a background
thread. A webhook that is down is retried with exponential backoff and, if it stays down, counted as
failed: the alert is still in the store and on the topic, and ``skewguard status`` shows it.

Delivery is at least once: the outbox row goes only when every sink has answered for the alert
(delivered, or failed after its retries). An alert a crash caught in memory, or one still queued when
:meth:`AlertDispatcher.close` gives up, keeps its row and is delivered again at the daemon's next start;
receivers tell a repeat by its ``dedup_key``.
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
from typing import Any

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


@dataclass
class WebhookSink:
    """POST each alert as JSON; retry on errors and 5xx with exponential backoff."""

    url: str
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def send(self, payload: dict[str, Any]) -> bool:
        """True when the endpoint accepted the alert (2xx) within the retries."""
        body = json_bytes(payload)
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # the endpoint rejects the payload: retrying will not help
                    log.warning("webhook refused alert %s: HTTP %s", payload.get("dedup_key"), exc.code)
                    return False
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                log.info("webhook attempt %d for %s failed: %s", attempt + 1, payload.get("dedup_key"), exc)
            if attempt < self.retries:
                self.sleep(self.backoff_s * 2**attempt)
        return False


@dataclass
class AlertDispatcher:
    """A background worker that hands alerts to the configured sinks in order."""

    sinks: list[Callable[[dict[str, Any]], bool]]
    #: Called (on the worker thread) with an alert's id once every sink has answered for it: the daemon
    #: then takes it out of the store's outbox. An error in it is logged; the alert is sent again later.
    on_tried: Callable[[int], None] | None = None
    delivered: int = 0
    failed: int = 0
    _queue: queue.Queue[tuple[dict[str, Any], int | None] | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="skewguard-alerts", daemon=True)
            self._thread.start()

    def submit(self, payload: dict[str, Any], alert_id: int | None = None) -> None:
        """Queue an alert for delivery; returns at once. ``alert_id`` is reported to ``on_tried``."""
        self._queue.put((payload, alert_id))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            payload, alert_id = item
            self._deliver(payload)
            if alert_id is not None and self.on_tried is not None:
                try:
                    self.on_tried(alert_id)
                except Exception:  # (a store error): the alert stays in the outbox, sent again at start
                    log.exception("alert %s delivered but still in the outbox", payload.get("dedup_key"))

    def _deliver(self, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                ok = sink(payload)
            except Exception:  # a sink bug must not kill delivery of the others
                log.exception("alert sink failed")
                ok = False
            if ok:
                self.delivered += 1
            else:
                self.failed += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop; what is left stays in the outbox."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None
