"""The prediction/label pairs of one window (or one partition's share of it), mergeable like a profile."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

from skewguard.baseline import PredictionKind
from skewguard.errors import DataError
from skewguard.records import LabelValue, Prediction
from skewguard.stats import category_text

#: A class model's prediction logged as class probabilities: the class named ``"k"`` has the ``k``-th.
ClassProbabilities: TypeAlias = tuple[float, ...]

#: A prediction or label as the join keeps it: a number (a score, a value), a class name (CLASS), or a
#: class model's probabilities (kept whole, so the window's log-loss can read the true class's share).
Outcome: TypeAlias = float | str | ClassProbabilities

#: The words a text label may use for a binary outcome (besides numbers such as "1" and "0.0").
LABEL_WORDS: Final = {
    1.0: frozenset({"true", "yes", "click", "positive"}),
    0.0: frozenset({"false", "no", "noclick", "no_click", "negative"}),
}
#: The same words, listed for error messages.
LABEL_WORDS_TEXT: Final = ", ".join(sorted(word for words in LABEL_WORDS.values() for word in words))


def label_to_float(label: LabelValue) -> float | None:
    """A label as a number: booleans and :data:`LABEL_WORDS` as 1/0, finite numbers (or numeric text).

    None for anything else: a label such as "n/a", "unknown" or "nan" says nothing of the outcome, and
    read as 0 (or NaN, which compares as 0) it would count as a negative.
    """
    if isinstance(label, bool):
        return 1.0 if label else 0.0
    if isinstance(label, int | float):
        return _finite(float(label))
    if isinstance(label, str):
        text = label.strip().lower()
        try:
            return _finite(float(text))
        except ValueError:
            return next((value for value, words in LABEL_WORDS.items() if text in words), None)
    return None


def _finite(value: float) -> float | None:
    """NaN or infinity says nothing of an outcome ("nan" compares as a negative in AUC and accuracy)."""
    return value if math.isfinite(value) else None


def label_outcome(label: LabelValue, kind: PredictionKind) -> Outcome:
    """A label in the form its model's predictions are compared with.

    A class model's label is a class name, spelled as the baseline's profile spells categories (``2``,
    ``2.0`` and ``"2"`` are the class ``"2"``; ``True`` is ``"true"``), so it compares equal to the
    prediction of the same class; a score or value model's label is a number (:func:`label_to_float`).
    """
    if kind is PredictionKind.CLASS:
        return category_text(label)
    value = label_to_float(label)
    if value is None:
        msg = f"label {label!r}: expected a number, a boolean or one of {LABEL_WORDS_TEXT}"
        raise DataError(msg)
    return value


def class_of(probabilities: Sequence[float]) -> str:
    """The class a probability list names: the index of its largest entry (the first of equal ones).

    The one rule for class probabilities: class ``"k"`` is the ``k``-th entry, so a label ``k`` (or
    ``"k"``) is the class of a list whose maximum is at ``k``.
    """
    return str(max(range(len(probabilities)), key=probabilities.__getitem__))


def joined_predictions(
    logged: Sequence[Prediction], values: Sequence[Any], kind: PredictionKind
) -> list[Outcome | None]:
    """What the join keeps of each logged prediction, given its profile value (``values``).

    The profile value (a score, a value, a class name; None or NaN when unusable) except for a class
    model's probability list, which is kept whole: its class is the argmax, as the profile value says,
    and the label's class reads its probability for the log-loss.
    """
    if kind is not PredictionKind.CLASS:
        return list(values)
    return [
        tuple(float(p) for p in prediction) if isinstance(prediction, list) and prediction else value
        for prediction, value in zip(logged, values, strict=True)
    ]


class WaitingPrediction(NamedTuple):
    """A prediction waiting for its label: its window, what it (and each shadow) predicted, its deadline."""

    model: str
    #: The prediction's window: its start (event-time windows, µs) or its number (count windows).
    window: int
    prediction: Outcome
    candidates: dict[str, Outcome]
    #: Label event times from here on are beyond the horizon (the pair is counted, not scored).
    deadline_us: int


class EarlyLabel(NamedTuple):
    """A label that came before its prediction, kept as logged until its model says how to read it."""

    label: LabelValue
    event_us: int
    #: False for a label restored from a checkpoint written before labels were kept as logged (it holds
    #: the label as a number already, which cannot name a class).
    as_logged: bool


def _missing(value: Outcome) -> bool:
    return isinstance(value, float) and math.isnan(value)


def outcome_from_json(value: Any) -> Outcome:
    """A checkpointed prediction or label as the join keeps it (JSON writes NaN as null).

    A class name stays text, class probabilities (a JSON list) become a tuple, the rest a number.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return tuple(float(p) for p in value)
    return math.nan if value is None else float(value)


def candidates_from_json(candidates: Mapping[str, Any]) -> dict[str, Outcome]:
    """Checkpointed or stored shadow candidates' predictions by version (:func:`outcome_from_json`)."""
    return {str(version): outcome_from_json(value) for version, value in candidates.items()}


@dataclass
class LabelTally:
    """Joined (request id, prediction, label) triples plus the counts of what did not join.

    Predictions and labels are numbers for score and value models; for class models labels are class
    names, and predictions class names or (logged as probabilities) :data:`ClassProbabilities`.
    """

    ids: list[str] = field(default_factory=list)
    predictions: list[Outcome] = field(default_factory=list)
    labels: list[Outcome] = field(default_factory=list)
    #: Predictions of this window (non-late) — labelled or not; the labelled share is reported.
    predicted: int = 0
    #: Labels that arrived after the horizon of their prediction's window.
    beyond_horizon: int = 0
    #: Shadow candidates' predictions for the same requests, aligned with ``ids`` (NaN where missing).
    candidates: dict[str, list[Outcome]] = field(default_factory=dict)

    def add(
        self,
        request_id: str,
        prediction: Outcome,
        label: Outcome,
        candidates: dict[str, Outcome] | None = None,
    ) -> None:
        """Record one joined pair (and what each shadow candidate predicted for it)."""
        for version in candidates or {}:
            if version not in self.candidates:
                self.candidates[version] = [math.nan] * len(self.ids)
        for version, values in self.candidates.items():
            values.append((candidates or {}).get(version, math.nan))
        self.ids.append(request_id)
        self.predictions.append(prediction)
        self.labels.append(label)

    def rows(self) -> Iterator[tuple[str, Outcome, Outcome, dict[str, Outcome]]]:
        """Each joined pair: request id, prediction, label and the candidates that predicted it."""
        versions = list(self.candidates.items())
        for position, (request_id, prediction, label) in enumerate(
            zip(self.ids, self.predictions, self.labels, strict=True)
        ):
            present = {v: xs[position] for v, xs in versions if not _missing(xs[position])}
            yield request_id, prediction, label, present

    def take_pairs(self) -> LabelTally:
        """Move the pairs out (to be stored elsewhere) into a tally of their own; the counts stay here."""
        pairs = LabelTally(
            ids=self.ids, predictions=self.predictions, labels=self.labels, candidates=self.candidates
        )
        self.ids, self.predictions, self.labels, self.candidates = [], [], [], {}
        return pairs

    def put_back(self, pairs: LabelTally) -> None:
        """Undo :meth:`take_pairs` (nothing was added since): the pairs were not stored after all."""
        self.ids, self.predictions, self.labels, self.candidates = (
            pairs.ids,
            pairs.predictions,
            pairs.labels,
            pairs.candidates,
        )

    def merge(self, other: LabelTally) -> LabelTally:
        """Both tallies; pairs are kept sorted by request id, so the merge order never matters."""
        versions = sorted(set(self.candidates) | set(other.candidates))

        def column(tally: LabelTally, version: str) -> list[Outcome]:
            return tally.candidates.get(version, [math.nan] * len(tally.ids))

        rows = sorted(
            zip(
                self.ids + other.ids,
                self.predictions + other.predictions,
                self.labels + other.labels,
                *[column(self, v) + column(other, v) for v in versions],
                strict=True,
            ),
            # A request id twice (a retried request joined twice) ties: the rest of the row breaks it.
            key=lambda row: (row[0], repr(row[1:])),
        )
        return LabelTally(
            ids=[r[0] for r in rows],
            predictions=[r[1] for r in rows],
            labels=[r[2] for r in rows],
            predicted=self.predicted + other.predicted,
            beyond_horizon=self.beyond_horizon + other.beyond_horizon,
            candidates={v: [r[3 + i] for r in rows] for i, v in enumerate(versions)},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ids": self.ids,
            "predictions": self.predictions,
            "labels": self.labels,
            "predicted": self.predicted,
            "beyond_horizon": self.beyond_horizon,
            "candidates": {v: [None if _missing(x) else x for x in xs] for v, xs in self.candidates.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelTally:
        """Inverse of :meth:`to_dict`."""
        return cls(
            ids=[str(v) for v in data["ids"]],
            predictions=[outcome_from_json(v) for v in data["predictions"]],
            labels=[outcome_from_json(v) for v in data["labels"]],
            predicted=int(data["predicted"]),
            beyond_horizon=int(data["beyond_horizon"]),
            candidates={
                str(v): [outcome_from_json(x) for x in xs] for v, xs in data.get("candidates", {}).items()
            },
        )
