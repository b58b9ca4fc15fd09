"""The prediction/label pairs of one window (or one partition's share of it), mergeable like a profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skewguard.records import LabelValue

_TRUE = frozenset({"1", "true", "yes", "click", "positive"})


def label_to_float(label: LabelValue) -> float | None:
    """A label as a number: booleans and "1"/"true"-like strings as 1/0, numbers as they are."""
    if isinstance(label, bool):
        return 1.0 if label else 0.0
    if isinstance(label, int | float):
        return float(label)
    if isinstance(label, str):
        text = label.strip().lower()
        try:
            return float(text)
        except ValueError:
            return 1.0 if text in _TRUE else 0.0
    return None


@dataclass
class LabelTally:
    """Joined (request id, prediction, label) triples plus the counts of what did not join."""

    ids: list[str] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    #: Predictions of this window (non-late) — labelled or not; the labelled share is reported.
    predicted: int = 0
    #: Labels that arrived after the horizon of their prediction's window.
    beyond_horizon: int = 0

    def add(self, request_id: str, prediction: float, label: float) -> None:
        """Record one joined pair."""
        self.ids.append(request_id)
        self.predictions.append(prediction)
        self.labels.append(label)

    def merge(self, other: LabelTally) -> LabelTally:
        """Both tallies; pairs are kept sorted by request id, so the merge order never matters."""
        triples = sorted(
            zip(
                self.ids + other.ids,
                self.predictions + other.predictions,
                self.labels + other.labels,
                strict=True,
            )
        )
        return LabelTally(
            ids=[t[0] for t in triples],
            predictions=[t[1] for t in triples],
            labels=[t[2] for t in triples],
            predicted=self.predicted + other.predicted,
            beyond_horizon=self.beyond_horizon + other.beyond_horizon,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ids": self.ids,
            "predictions": self.predictions,
            "labels": self.labels,
            "predicted": self.predicted,
            "beyond_horizon": self.beyond_horizon,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelTally:
        """Inverse of :meth:`to_dict`."""
        return cls(
            ids=[str(v) for v in data["ids"]],
            predictions=[float(v) for v in data["predictions"]],
            labels=[float(v) for v in data["labels"]],
            predicted=int(data["predicted"]),
            beyond_horizon=int(data["beyond_horizon"]),
        )
