"""The demo's script: which problem is injected into which window of simulated serving traffic.

A window is one simulated day of event time. Shorter windows would be faster to explain but dishonest
to judge: the model's score depends on the user's local hour (evening clicks), so a one-minute window's
predictions really do differ from a training set that spans whole weeks (measured: prediction drift
flagged at 04-08 and 20-22 UTC with 60 s windows), and the demo would either flag clean traffic or have
to pick a flattering hour. A whole day carries every hour, as training did; the seasonal features
themselves (local hour and weekday) stay out of the drift checks, as a production config would have it.

Phases, in order, each a few windows: clean traffic; a "hotfixed" serving replica that computes the
local hour in UTC; a gradual shift of the category mix; a click-history feature store that times out
(its features fall back to their declared defaults); a retrained candidate, under-trained by a config
left at one epoch, scoring the traffic in shadow mode. Each problem names the check that must catch it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from skewguard.demo.traffic import CATEGORIES, TrafficShape
from skewguard.errors import ConfigError
from skewguard.results import Check

#: Start of the first serving window; training traffic covers the two weeks before it.
SERVING_START = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
#: One window per simulated day (see the module docstring for why not shorter).
WINDOW = dt.timedelta(days=1)
TRAINING_SPAN = dt.timedelta(days=14)
#: Seasonal features: replayed for skew, never drift-checked.
SEASONAL_FEATURES = ("hour_of_day_local", "day_of_week_local")
#: Categories whose popularity grows during the drift phase (the long tail of the Zipf mix).
DRIFTING_FROM = 12


class Phase(StrEnum):
    """What is wrong with a window's traffic."""

    CLEAN = "clean"
    TIMEZONE = "timezone"
    CATEGORY_DRIFT = "category_drift"
    TIMEOUT = "timeout"
    SHADOW = "shadow"


@dataclass(frozen=True)
class Expectation:
    """The problem a phase injects and the check (on which subjects) that must catch it."""

    problem: str
    check: Check
    subjects: tuple[str, ...]


#: The phases whose problem and check are fixed; clean windows must stay unflagged.
EXPECTATIONS: dict[Phase, Expectation] = {
    Phase.TIMEZONE: Expectation(
        "hotfixed serving replica computes hour_of_day_local in UTC", Check.SKEW, ("hour_of_day_local",)
    ),
    Phase.CATEGORY_DRIFT: Expectation("gradual shift of the item category mix", Check.DRIFT, ("category",)),
    Phase.TIMEOUT: Expectation(
        "click-history feature store times out (defaults served)",
        Check.DEFAULTS,
        ("clicks_7d", "clicks_24h"),
    ),
}


#: The injected problem of the shadow phase: the candidate the second retraining run produced.
SHADOW_PROBLEM = "shadow candidate {version} under-trained (a config left at max_epochs = 1)"


def expectations(candidate: str) -> dict[Phase, Expectation]:
    """What each injected phase is and what must detect it, ``candidate`` being the shadow's version."""
    return {
        **EXPECTATIONS,
        Phase.SHADOW: Expectation(SHADOW_PROBLEM.format(version=candidate), Check.SHADOW, (candidate,)),
    }


@dataclass(frozen=True)
class DemoSizes:
    """How much traffic the demo generates; ``QUICK`` for the test-suite, ``FULL`` for ``make demo``."""

    training_rows: int
    window_records: int
    clean_windows: int
    timezone_windows: int
    drift_windows: int
    timeout_windows: int
    shadow_windows: int
    #: Share of requests served by the hotfixed replica during the timezone phase.
    hotfix_share: float = 0.5
    #: Share of click-history lookups that miss their deadline during the timeout phase.
    timeout_share: float = 0.5
    #: Popularity multiplier of the tail categories reached in the last drift window.
    final_drift_multiplier: float = 6.0

    def __post_init__(self) -> None:
        for name in ("training_rows", "window_records", "clean_windows"):
            if getattr(self, name) < 1:
                msg = f"demo size {name}: expected at least 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        for name in ("timezone_windows", "drift_windows", "timeout_windows", "shadow_windows"):
            if getattr(self, name) < 1:
                msg = f"demo size {name}: every problem needs at least one window, got {getattr(self, name)}"
                raise ConfigError(msg)
        for name in ("hotfix_share", "timeout_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                msg = f"demo size {name}: expected a share in (0, 1], got {getattr(self, name)}"
                raise ConfigError(msg)
        if self.final_drift_multiplier <= 1.0:
            msg = f"demo size final_drift_multiplier: expected > 1, got {self.final_drift_multiplier}"
            raise ConfigError(msg)

    @property
    def windows(self) -> int:
        """Serving windows in the whole run."""
        return (
            self.clean_windows
            + self.timezone_windows
            + self.drift_windows
            + self.timeout_windows
            + self.shadow_windows
        )


QUICK = DemoSizes(
    training_rows=16_000, window_records=1_000, clean_windows=2, timezone_windows=1, drift_windows=3,
    timeout_windows=2, shadow_windows=1,
)  # fmt: skip
FULL = DemoSizes(
    training_rows=40_000, window_records=2_500, clean_windows=3, timezone_windows=2, drift_windows=3,
    timeout_windows=2, shadow_windows=2,
)  # fmt: skip


@dataclass(frozen=True)
class WindowPlan:
    """One serving window: its phase, its traffic shape and the share of faulty requests in it."""

    index: int
    phase: Phase
    start: dt.datetime
    seed: int
    shape: TrafficShape = field(default_factory=TrafficShape)
    hotfix_share: float = 0.0
    timeout_share: float = 0.0
    note: str = ""

    @property
    def end(self) -> dt.datetime:
        """Exclusive end of the window's event time."""
        return self.start + WINDOW


def drifted_category_weights(multiplier: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Zipf popularity (the training mix) with the tail categories made ``multiplier`` times as popular."""
    weights: np.ndarray[Any, np.dtype[np.float64]] = 1.0 / np.arange(1, len(CATEGORIES) + 1, dtype=float)
    weights[DRIFTING_FROM:] *= multiplier
    return weights


def plan_windows(sizes: DemoSizes, *, seed: int = 0) -> list[WindowPlan]:
    """The windows of a run, in event-time order, with their phases and faults."""
    plans: list[WindowPlan] = []

    def add(phase: Phase, **kwargs: Any) -> None:
        index = len(plans)
        plans.append(
            WindowPlan(index, phase, SERVING_START + index * WINDOW, seed=seed * 1000 + 100 + index, **kwargs)
        )

    for _ in range(sizes.clean_windows):
        add(Phase.CLEAN, note="clean traffic")
    for _ in range(sizes.timezone_windows):
        add(
            Phase.TIMEZONE,
            hotfix_share=sizes.hotfix_share,
            note=f"{sizes.hotfix_share:.0%} of requests served by the hotfixed replica (hour in UTC)",
        )
    for step in range(1, sizes.drift_windows + 1):
        # Accelerating growth: the first drift window is a barely visible change, the last a large one.
        multiplier = sizes.final_drift_multiplier ** ((step / sizes.drift_windows) ** 2)
        add(
            Phase.CATEGORY_DRIFT,
            shape=TrafficShape(category_weights=drifted_category_weights(multiplier)),
            note=f"tail categories {multiplier:.1f}x as popular as in training",
        )
    for _ in range(sizes.timeout_windows):
        add(
            Phase.TIMEOUT,
            timeout_share=sizes.timeout_share,
            note=f"{sizes.timeout_share:.0%} of click-history lookups time out",
        )
    for _ in range(sizes.shadow_windows):
        add(Phase.SHADOW, note="a retrained candidate scores every request in shadow, off the request path")
    return plans
