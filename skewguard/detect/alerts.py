"""From flags to alerts: a flag must persist (k of the last m windows) unless it is severe.

One noisy window should not page anyone, and at BH level alpha roughly one window in 1/alpha carries
a chance flag somewhere; requiring the same feature to flag again within a few windows makes a false
alert need two rare events in a row. A severe flag (effect several times the threshold) skips the wait.
An alert is raised when a feature *enters* the alerting state; the feature leaves it once none of its
last m windows is flagged, and may then alert again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from skewguard.detect.policy import DriftPolicy
from skewguard.detect.verdict import FeatureVerdict, WindowVerdict
from skewguard.errors import DataError


@dataclass(frozen=True, slots=True)
class Alert:
    """A feature entered the alerting state at window ``window`` (0-based count of updates)."""

    feature: str
    window: int
    severe: bool
    flags: int
    of_windows: int
    verdict: FeatureVerdict

    @property
    def reason(self) -> str:
        """One human sentence: why the alert fired, then the verdict's own reason."""
        why = (
            "severe drift"
            if self.severe
            else f"flagged in {self.flags} of the last {self.of_windows} windows"
        )
        return f"ALERT {self.feature} ({why}): {self.verdict.reason}"


class AlertTracker:
    """Persistence over a sequence of window verdicts (feed them in window order)."""

    def __init__(self, policy: DriftPolicy | None = None) -> None:
        self.policy = policy or DriftPolicy()
        self.windows_seen = 0
        self._history: dict[str, deque[bool]] = {}
        self._active: set[str] = set()

    @property
    def active(self) -> frozenset[str]:
        """Features currently in the alerting state."""
        return frozenset(self._active)

    def update(self, verdict: WindowVerdict) -> list[Alert]:
        """Record one window; return the alerts it raises (usually none)."""
        k, m = self.policy.persistence_k, self.policy.persistence_m
        window = self.windows_seen
        self.windows_seen += 1
        alerts: list[Alert] = []
        for feature in verdict.features:
            history = self._history.setdefault(feature.name, deque(maxlen=m))
            history.append(feature.drifted)
            flags = sum(history)
            if feature.name in self._active:
                if flags == 0:
                    self._active.discard(feature.name)
                continue
            if feature.severe or (feature.drifted and flags >= k):
                self._active.add(feature.name)
                alerts.append(Alert(feature.name, window, feature.severe, flags, len(history), feature))
        return alerts

    def state_dict(self) -> dict[str, Any]:
        """The tracker's state, JSON-ready, so a restarted daemon resumes with the same memory."""
        return {
            "windows_seen": self.windows_seen,
            "history": {name: list(h) for name, h in self._history.items()},
            "active": sorted(self._active),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (policy unchanged)."""
        try:
            m = self.policy.persistence_m
            self.windows_seen = int(state["windows_seen"])
            self._history = {
                str(name): deque((bool(f) for f in flags), maxlen=m)
                for name, flags in state["history"].items()
            }
            self._active = {str(name) for name in state["active"]}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"malformed alert-tracker state: {exc!r}"
            raise DataError(msg) from exc
