"""Deliver stored alerts to the alerts topic and a webhook, with retries, never blocking the poll loop.

Alerts are first recorded in the store, in the transaction that finalises their window (deduplicated
there by key), together with an outbox row; delivery happens after that commit, from one background
thread per sink. Each sink retries on its own (the webhook with exponential backoff; the topic waits for
the broker's acknowledgement) and answers DELIVERED, REFUSED or FAILED.

Delivery is at least once: the outbox row goes only when every sink has delivered the alert or
refused it for good (a webhook saying the payload itself is wrong). An alert a sink could not take now
(the broker or the webhook unreachable through its retries) keeps its row and is sent again, to the
sinks that failed it, by the daemon's periodic sweep of the outbox (``alerts.retry_interval_s``, until
``give_up_after_s``); one a crash caught in memory, or one still queued when
:meth:`AlertDispatcher.close` gives up, is sent to every sink by the next start. Receivers tell a
repeat by its ``dedup_key``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(slots=True)
class _Round:
    """One submission of an alert: the sinks still to answer it."""

    remaining: int


@dataclass(frozen=True, slots=True)
class _Job:
    """One alert for one sink's worker; ``settle_only``: every sink took it, only report it settled."""

    payload: dict[str, Any]
    alert_id: int | None
    settle_only: bool = False


class AlertDispatcher:
    """Background workers, one per sink, that hand alerts to their sink in submission order.

    One worker per sink, so a sink that hangs (a black-holed webhook: every attempt waits its timeout)
    delays only its own deliveries, never the others'. An alert is settled (``on_settled``, and its
    outbox row goes) once every sink has delivered it or refused it for good. The sinks that did are
    remembered, so an alert submitted again (the outbox sweep) goes only to the sinks that failed it:
    the alerts topic does not get a copy every sweep while the webhook is down. That memory lives in
    this process: after a restart an unsettled alert goes to every sink again (at least once).
    """

    def __init__(
        self,
        sinks: Sequence[Sink] | Mapping[str, Sink],
        *,
        on_settled: Callable[[int], None] | None = None,
        on_answer: Callable[[str, Answer], None] | None = None,
    ) -> None:
        """``sinks`` by name (a plain sequence is named ``sink0``, ``sink1``...).

        ``on_settled`` is called (on a worker thread, never the caller's) with an alert's id once every
        sink has delivered or refused it: the daemon then takes it out of the store's outbox; an error
        in it is logged and the alert is settled again at its next submission. ``on_answer`` is called
        with the sink's name and its answer for every delivery attempt (for metrics).
        """
        named = dict(sinks) if isinstance(sinks, Mapping) else {f"sink{i}": s for i, s in enumerate(sinks)}
        if not named:
            msg = "AlertDispatcher: expected at least one sink"
            raise ValueError(msg)
        self.sinks: dict[str, Sink] = named
        self.on_settled = on_settled
        self.on_answer = on_answer
        #: Answers given, over all sinks: delivered, or not (refused or failed).
        self.delivered = 0
        self.failed = 0
        self._queues: dict[str, queue.SimpleQueue[_Job | None]] = {
            name: queue.SimpleQueue() for name in named
        }
        self._threads: list[threading.Thread] = []
        #: Set when close() stopped waiting: the workers settle nothing more (the daemon's producer and
        #: store are closing under them) and leave what is queued in the outbox.
        self._abandoned = threading.Event()
        #: Outbox ids being delivered or settled (not done yet): not to be queued a second time.
        self._rounds: dict[int, _Round] = {}
        #: For outbox ids not settled yet: the sinks that delivered or refused them already.
        self._taken: dict[int, set[str]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the workers (idempotent)."""
        if self._threads:
            return
        for name in self.sinks:
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"skewguard-alerts-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, payload: dict[str, Any], alert_id: int | None = None) -> bool:
        """Queue an alert for the sinks that have not taken it yet; returns at once.

        ``alert_id`` (its outbox row) is reported to ``on_settled``. False (nothing queued) when the
        alert of that id is being delivered already.
        """
        targets = list(self.sinks)
        settle_only = False
        if alert_id is not None:
            with self._lock:
                if alert_id in self._rounds:
                    return False
                taken = self._taken.get(alert_id, set())
                targets = [name for name in targets if name not in taken]
                if not targets:  # every sink took it before; only its settling failed (a store error)
                    targets, settle_only = list(self.sinks)[:1], True  # (settled on a worker, not here)
                self._rounds[alert_id] = _Round(len(targets))
        for name in targets:
            self._queues[name].put(_Job(payload, alert_id, settle_only))
        return True

    def in_flight(self) -> set[int]:
        """Outbox ids queued, being delivered or being settled."""
        with self._lock:
            return set(self._rounds)

    def retain(self, alert_ids: Iterable[int]) -> None:
        """Forget which sinks took the alerts not among these (the outbox's ids, read by a sweep).

        An alert leaves the outbox also when it is given up on, or when another replica of the group
        settles it: this keeps the memory as small as the outbox.
        """
        keep = set(alert_ids)
        with self._lock:
            for alert_id in [i for i in self._taken if i not in keep and i not in self._rounds]:
                del self._taken[alert_id]

    def _run(self, name: str) -> None:
        sink, jobs = self.sinks[name], self._queues[name]
        while True:
            item = jobs.get()
            if item is None or self._abandoned.is_set():
                return
            payload, alert_id = item.payload, item.alert_id
            answer = None if item.settle_only else self._answer(name, sink, payload)
            if alert_id is None:
                continue
            with self._lock:
                if answer is not None and answer is not Answer.FAILED:
                    self._taken.setdefault(alert_id, set()).add(name)
                this = self._rounds[alert_id]
                this.remaining -= 1
                if this.remaining:
                    continue
                settled = len(self._taken.get(alert_id, ())) == len(self.sinks)
            # (not settled: its outbox row stays, and a later sweep or start sends it again)
            if settled and self._settle(payload, alert_id):
                with self._lock:
                    self._taken.pop(alert_id, None)
            with self._lock:  # done only now: a sweep meanwhile must not queue it again
                del self._rounds[alert_id]

    def _answer(self, name: str, sink: Sink, payload: dict[str, Any]) -> Answer:
        try:
            given = sink(payload)
        except Exception:  # a sink bug must not end its worker
            log.exception("alert sink %s failed", name)
            given = Answer.FAILED
        answer = given if isinstance(given, Answer) else Answer.DELIVERED if given else Answer.FAILED
        with self._lock:
            if answer is Answer.DELIVERED:
                self.delivered += 1
            else:
                self.failed += 1
        if self.on_answer is not None:
            try:
                self.on_answer(name, answer)
            except Exception:
                log.exception("alert answer hook failed")
        return answer

    def _settle(self, payload: dict[str, Any], alert_id: int) -> bool:
        """Report a settled alert; False when that failed (or close() gave up): it stays remembered."""
        if self._abandoned.is_set():
            return False
        if self.on_settled is not None:
            try:
                self.on_settled(alert_id)
            except Exception:  # (a store error): the alert stays in the outbox, settled at its next sweep
                log.exception("alert %s delivered but still in the outbox", payload.get("dedup_key"))
                return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop; what is left stays in the outbox."""
        if not self._threads:
            return
        for jobs in self._queues.values():
            jobs.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            self._abandoned.set()
            log.warning("alert delivery still busy at shutdown: the rest is delivered at the next start")
        self._threads = []
