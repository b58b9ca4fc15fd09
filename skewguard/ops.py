"""The daemon's operations surface: Prometheus metrics and the /metrics, /healthz, /status endpoints.

Metric names are part of the public interface (the Grafana dashboard in ``deploy/`` queries them, and a
test checks every query against ``METRIC_NAMES``), so they are declared here, once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from skewguard.results import Check, WindowResult, json_bytes


class Metrics:
    """Every metric the daemon exports, in a registry of its own (tests run several daemons)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "skewguard_records", "Serving records folded into windows", ["model"], registry=r
        )
        self.late_records = Counter(
            "skewguard_late_records", "Records that arrived after their window closed", ["model"], registry=r
        )
        self.dead_letters = Counter(
            "skewguard_dead_letters",
            "Input refused and sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.windows = Counter(
            "skewguard_windows_finalised", "Windows judged and stored", ["model"], registry=r
        )
        self.alerts = Counter("skewguard_alerts", "Alerts raised", ["model", "check"], registry=r)
        self.effect = Gauge(
            "skewguard_effect_size",
            "Effect size of the latest window, per check and subject",
            ["model", "check", "subject"],
            registry=r,
        )
        self.threshold = Gauge(
            "skewguard_effect_threshold",
            "Threshold the effect size is compared with, per check and subject",
            ["model", "check", "subject"],
            registry=r,
        )
        self.flagged = Gauge(
            "skewguard_flagged",
            "1 when the latest window flagged this check and subject",
            ["model", "check", "subject"],
            registry=r,
        )
        self.skew_mismatch = Gauge(
            "skewguard_skew_mismatch_rate",
            "Share of replayed requests whose logged feature differs from the replay",
            ["model", "feature"],
            registry=r,
        )
        self.lag = Gauge(
            "skewguard_consumer_lag", "Messages not yet read", ["topic", "partition"], registry=r
        )
        self.last_window_end = Gauge(
            "skewguard_last_window_end_seconds",
            "End of the latest finalised window (epoch s)",
            ["model"],
            registry=r,
        )
        self.labels_joined = Counter(
            "skewguard_labels_joined", "Labels joined to their predictions", ["model"], registry=r
        )
        self.alert_answers = Counter(
            "skewguard_alert_deliveries",
            "Alert delivery attempts by sink and answer (delivered, refused for good, failed for now)",
            ["sink", "answer"],
            registry=r,
        )
        self.checkpoints = Counter("skewguard_checkpoints", "Checkpoint transactions committed", registry=r)
        self.broker_errors = Counter(
            "skewguard_broker_errors", "Broker calls that failed (polls, offset commits)", registry=r
        )
        self.busy_seconds = Counter(
            "skewguard_busy_seconds",
            "Time spent per phase of the poll loop: poll, fold (decode included), checkpoint, finalise",
            ["phase"],
            registry=r,
        )

    def alert_answered(self, sink: str, answer: Enum) -> None:
        """Count one sink's answer to one alert (called from the alert workers: counters are thread-safe)."""
        self.alert_answers.labels(sink, str(answer.value)).inc()

    def observe_window(self, result: WindowResult) -> None:
        """Publish a finalised window's findings as gauges."""
        model = result.key.model
        self.windows.labels(model).inc()
        self.last_window_end.labels(model).set(result.key.end.timestamp())
        for finding in result.findings:
            labels = (model, finding.check.value, finding.subject)
            if finding.effect is not None:
                self.effect.labels(*labels).set(finding.effect)
            if finding.threshold is not None:
                self.threshold.labels(*labels).set(finding.threshold)
            self.flagged.labels(*labels).set(1.0 if finding.flagged else 0.0)
            if finding.check is Check.SKEW and finding.effect is not None:
                self.skew_mismatch.labels(model, finding.subject).set(finding.effect)

    def observe_labelled_window(self, result: WindowResult) -> None:
        """Publish a label-stage window's findings (its window was already counted when it closed)."""
        model = result.key.model
        for finding in result.findings:
            labels = (model, finding.check.value, finding.subject)
            if finding.effect is not None:
                self.effect.labels(*labels).set(finding.effect)
            if finding.threshold is not None:
                self.threshold.labels(*labels).set(finding.threshold)
            self.flagged.labels(*labels).set(1.0 if finding.flagged else 0.0)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's lag series when it moves to another daemon (its value would go stale)."""
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


def metric_names(metrics: Metrics) -> set[str]:
    """Every sample name the registry can export (``_total`` etc. included), for dashboard checks."""
    names: set[str] = set()
    for collector in metrics.registry.collect():
        names.add(collector.name)
        kind = collector.type
        if kind == "counter":
            names |= {f"{collector.name}_total", f"{collector.name}_created"}
    return names


class OpsServer:
    """A small threaded HTTP server for /metrics, /healthz and /status."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        healthy: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, ops.metrics.render())
                elif path == "/healthz":
                    ok, reason = healthy()
                    self._send(200 if ok else 503, "text/plain", reason.encode())
                elif path == "/status":
                    self._send(200, "application/json", json_bytes(status()))
                else:
                    self._send(404, "text/plain", b"not found: try /metrics, /healthz or /status")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would flood the daemon's log

        self.metrics = metrics
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="skewguard-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
