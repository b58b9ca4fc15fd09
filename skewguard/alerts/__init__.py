"""Alert delivery: the Kafka alerts topic and a webhook, off the daemon's poll loop."""

from __future__ import annotations

from skewguard.alerts.delivery import AlertDispatcher, Answer, Sink, WebhookSink, alert_payload

__all__ = ["AlertDispatcher", "Answer", "Sink", "WebhookSink", "alert_payload"]
