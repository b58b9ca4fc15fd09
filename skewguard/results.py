"""What a finished window says: the result types every analysis produces and every adapter consumes.

Each analysis (drift vs baseline, span drift, prediction drift, implementation skew, defaults, label-joined
performance, shadow comparison) reduces to a list of ``Finding``s: one statistic about one subject, with
its threshold, whether it flagged, and a sentence a person can act on. The store persists them, the
alerting turns flagged ones into alerts, ``/metrics`` exports them and ``skewguard status`` prints them;
none of those needs to know which analysis produced a finding.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class Check(StrEnum):
    """The analysis a finding comes from."""

    DRIFT = "drift"
    """A feature's window distribution vs the training baseline."""
    SPAN_DRIFT = "span_drift"
    """A feature's window distribution vs the previous window."""
    PREDICTION_DRIFT = "prediction_drift"
    """The model's prediction distribution vs its training baseline."""
    SKEW = "skew"
    """Implementation skew: logged features differ from features recomputed from raw inputs."""
    UNKNOWN_STATE = "unknown_state"
    """Records stamped with a FeatureState hash the baseline does not know."""
    DEFAULTS = "defaults"
    """Share of requests whose feature fell back to its declared default."""
    PERFORMANCE = "performance"
    """Label-joined model metric vs the training holdout."""
    LABEL_DRIFT = "label_drift"
    """The label distribution vs training."""
    SHADOW = "shadow"
    """A shadow candidate compared with production."""


class Severity(StrEnum):
    """How loudly a flagged finding should be raised."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Finding:
    """One statistic of one subject (a feature, a model version, the prediction) in one window.

    Kept whether or not it flagged: a drift that stays below threshold for weeks is itself information,
    and a threshold can only be tuned against the values it did not alert on.
    """

    check: Check
    subject: str
    flagged: bool
    effect: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    method: str = ""
    reason: str = ""
    severity: Severity = Severity.INFO
    detail: dict[str, Any] = field(default_factory=dict)


class Stage(StrEnum):
    """The two judgements of a window: at its close, and once its labels have had time to arrive."""

    SERVING = "serving"
    """Drift, skew, defaults, shadow: judged when the window closes."""
    LABELS = "labels"
    """Label-joined performance and label drift: judged when the label horizon has passed too."""


@dataclass(frozen=True, slots=True)
class WindowKey:
    """Identifies one window of one model's traffic; unique in the store (finalised exactly once)."""

    model: str
    start: dt.datetime
    end: dt.datetime
    #: A count window's number (its identity; ``start``/``end`` are then the span of its records).
    #: None for an event-time window, identified by its bounds.
    index: int | None = None

    def __post_init__(self) -> None:
        if self.index is not None and self.index < 0:
            msg = f"a count window's number must not be negative, got {self.index}"
            raise ValueError(msg)
        if self.start.tzinfo is None or self.end.tzinfo is None:
            msg = f"window bounds must be timezone-aware, got {self.start!r}..{self.end!r}"
            raise ValueError(msg)
        if self.end <= self.start:
            msg = f"window end {self.end.isoformat()} must be after its start {self.start.isoformat()}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Everything judged about one closed window."""

    key: WindowKey
    records: int
    late_records: int = 0
    findings: tuple[Finding, ...] = ()
    #: Free-form context (partitions merged, model versions seen, …), stored as JSON.
    context: dict[str, Any] = field(default_factory=dict)
    stage: Stage = Stage.SERVING

    @property
    def flagged(self) -> tuple[Finding, ...]:
        """The findings that crossed their thresholds."""
        return tuple(f for f in self.findings if f.flagged)


def json_bytes(value: Any) -> bytes:
    """Standard JSON of results — findings' details, alerts, the daemon's status — with NaN as null.

    Statistics can be NaN or infinite (an AUC of one class, a threshold with nothing to compare).
    Python's writer emits ``NaN``/``Infinity``, which is no JSON: PostgreSQL refused it in a JSON
    column (failing the checkpoint at every retry) and strict webhook receivers refuse it too. orjson
    writes non-finite numbers as null; numpy scalars and non-string keys are written as JSON, any other
    object as its ``str``.
    """
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
