"""Per-window model performance on label-joined traffic, with a bootstrap confidence interval.

A window's metric is compared with the training holdout's: it is flagged only when it is worse by more
than both samples' errors allow (the window's bootstrap interval on the worse side and the holdout's
standard error, in quadrature) and by more than a tolerance — a noisy small window, or a holdout's
lucky draw, is not a degraded model, and a significant but tiny gap is not worth a page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

from skewguard.baseline import PredictionKind
from skewguard.labels.join import LabelTally, Outcome, class_of, label_to_float
from skewguard.results import Check, Finding, Severity
from skewguard.stats import (
    CategoricalSketch,
    chi_square,
    paired_bootstrap_interval,
    paired_bootstrap_standard_error,
)

FloatArray = npt.NDArray[np.float64]
Metric = Callable[[FloatArray, FloatArray], float]
_EPS = 1e-15


def auc(scores: FloatArray, labels: FloatArray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic (ties count one half)."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(scores: FloatArray, labels: FloatArray) -> float:
    """Mean binary cross-entropy of the scores (clipped away from 0 and 1).

    Labels are read as AUC and accuracy read them, positive above 0.5: labels coded -1/+1 (or 0/5
    stars...) gave a negative, meaningless loss that was then compared with the holdout's.
    """
    p = np.clip(scores, _EPS, 1 - _EPS)
    positive = labels > 0.5
    return float(-np.mean(np.where(positive, np.log(p), np.log(1 - p))))


def accuracy(scores: FloatArray, labels: FloatArray) -> float:
    """Share of correct decisions at the 0.5 threshold."""
    return float(np.mean((scores >= 0.5) == (labels > 0.5)))


def rmse(values: FloatArray, labels: FloatArray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((values - labels) ** 2)))


def mae(values: FloatArray, labels: FloatArray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(values - labels)))


def class_accuracy(classes: FloatArray, labels: FloatArray) -> float:
    """Share of predicted classes equal to the label (both as codes: see :func:`outcome_arrays`)."""
    return float(np.mean(classes == labels))


def class_log_loss(true_class_probability: FloatArray, _labels: FloatArray) -> float:
    """Multi-class cross-entropy: the mean of -log(probability the prediction gave the true class).

    Takes :attr:`Outcomes.true_class_probability` (the labels are already in it), clipped away from 0
    as the binary log-loss is, so a true class given no probability costs -log(1e-15), not infinity.
    """
    return float(-np.mean(np.log(np.clip(true_class_probability, _EPS, 1.0))))


class MetricSpec(NamedTuple):
    """A window metric: how it is computed, which way is better, and what it reads."""

    function: Metric
    higher_is_better: bool
    #: Reads each pair's probability of the true class (a class model's probability lists) instead of
    #: the predictions: only pairs whose prediction was logged as probabilities count.
    on_class_probabilities: bool = False


#: Metrics per prediction kind. The first is the kind's main metric (what a shadow candidate is
#: compared on).
METRICS: dict[PredictionKind, dict[str, MetricSpec]] = {
    PredictionKind.SCORE: {
        "auc": MetricSpec(auc, True),
        "log_loss": MetricSpec(log_loss, False),
        "accuracy": MetricSpec(accuracy, True),
    },
    PredictionKind.VALUE: {"rmse": MetricSpec(rmse, False), "mae": MetricSpec(mae, False)},
    PredictionKind.CLASS: {
        "accuracy": MetricSpec(class_accuracy, True),
        "log_loss": MetricSpec(class_log_loss, False, on_class_probabilities=True),
    },
}


class Outcomes(NamedTuple):
    """A tally's pairs as float arrays, aligned by pair (NaN = missing)."""

    predictions: FloatArray
    labels: FloatArray
    #: Each shadow candidate's predictions for the same requests.
    candidates: dict[str, FloatArray]
    #: The probability the prediction gave the label's class, for a class model's predictions logged as
    #: probabilities (see :func:`true_class_probability`); NaN for every other pair.
    true_class_probability: FloatArray


def _class_index(label: Outcome) -> int | None:
    """The index of the class ``label`` names in a probability list (class ``"k"``: the ``k``-th)."""
    if isinstance(label, str) and label.isascii() and label.isdigit() and label == str(int(label)):
        return int(label)
    return None


def true_class_probability(prediction: Outcome, label: Outcome) -> float:
    """The share of its probability a class prediction gave the label's class; NaN when unjudgeable.

    The list is normalised to sum to 1 (as a rounded softmax may not quite). NaN, so the pair is left
    out of the log-loss, for a prediction not logged as probabilities, a list that is not probabilities
    (a negative entry, or nothing above 0: logits, say), and a label that is no class index (``"cat"``
    against a list: the two name classes differently, which says nothing about the model). An index
    beyond the list is a class the model gave nothing: 0.
    """
    if not isinstance(prediction, tuple):
        return math.nan
    total = math.fsum(prediction)
    index = _class_index(label)
    if index is None or total <= 0 or min(prediction) < 0:
        return math.nan
    return prediction[index] / total if index < len(prediction) else 0.0


def outcome_arrays(tally: LabelTally) -> Outcomes:
    """Predictions, labels and each shadow candidate's predictions as float arrays (NaN = missing).

    Numbers stay numbers. Class names become codes of one vocabulary shared by all three, so every
    metric and bootstrap works on floats alike and equal classes have equal codes; class probabilities
    count as the class they name (:func:`~skewguard.labels.join.class_of`).
    """
    codes: dict[str, int] = {}

    def code(value: Outcome) -> float:
        if isinstance(value, tuple):
            value = class_of(value)
        return codes.setdefault(value, len(codes)) if isinstance(value, str) else value

    def floats(values: list[Outcome]) -> FloatArray:
        return np.asarray([code(v) for v in values], dtype=np.float64)

    return Outcomes(
        floats(tally.predictions),
        floats(tally.labels),
        {version: floats(values) for version, values in tally.candidates.items()},
        np.asarray(
            [true_class_probability(p, y) for p, y in zip(tally.predictions, tally.labels, strict=True)],
            dtype=np.float64,
        ),
    )


@dataclass(frozen=True)
class PerformanceOptions:
    """How label-joined windows are judged."""

    min_pairs: int = 100
    """Fewer joined pairs than this: metrics are reported, never flagged."""
    tolerance: float = 0.02
    """A gap to the holdout metric smaller than this is never flagged."""
    resamples: int = 400
    confidence: float = 0.99
    """Per metric; at least 97 % for a score model's three metrics together (Bonferroni; two metrics
    for value and class models), so a clean window is rarely flagged just because one of several tested
    metrics landed in its tail."""
    label_shift_tolerance: float = 0.02
    """Label drift: the positive rate (binary) or some class's share (class model) must move by at least
    this much (and be significant)."""
    alpha: float = 0.01
    seed: int = 0


def holdout_metrics(
    kind: PredictionKind,
    predictions: FloatArray,
    labels: FloatArray,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """A model's metrics on its holdout pairs and their standard errors, as a baseline records them.

    The standard error is the holdout metric's own sampling error: a holdout of a few hundred rows knows
    its AUC only to a few hundredths, and a window judged against it as if it were exact is flagged for
    the holdout's luck. It is scipy's paired bootstrap (predictions and labels resampled together);
    200 resamples, since a standard error, unlike a percentile interval's tails, settles with that many.

    Computed by the very functions windows are judged with (one definition of each metric). Metrics that
    need class probabilities (a class model's log-loss) are left out: the predictions here are values,
    scores or class codes. A metric undefined on the holdout (an AUC of one class) is left out of both;
    one whose standard error is undefined (under 2 pairs, or the metric undefined on over a tenth of
    the resamples: see :func:`~skewguard.stats.paired_bootstrap_standard_error`) keeps its value
    without an error (judged as exact).
    """
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    inputs = (np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    if inputs[0].shape != inputs[1].shape or inputs[0].ndim != 1:
        msg = f"holdout metrics need as many predictions as labels: {inputs[0].shape} vs {inputs[1].shape}"
        raise ValueError(msg)
    for name, spec in METRICS[kind].items():
        if spec.on_class_probabilities or not len(inputs[0]):
            continue
        value = spec.function(*inputs)
        if not math.isfinite(value):
            continue
        values[name] = value
        error = (
            paired_bootstrap_standard_error(spec.function, inputs, resamples=resamples, seed=seed)
            if len(inputs[0]) >= 2
            else math.nan
        )
        if math.isfinite(error):
            errors[name] = error
    return values, errors


def evaluate_window(
    tally: LabelTally,
    kind: PredictionKind,
    holdout: Mapping[str, float],
    options: PerformanceOptions,
    baseline_labels: CategoricalSketch | None = None,
    *,
    outcomes: Outcomes | None = None,
    holdout_errors: Mapping[str, float] | None = None,
) -> list[Finding]:
    """Performance findings (one per metric) and, for classifiers, a label-drift finding.

    ``baseline_labels`` is the training label profile: binary scores are tested on the positive rate,
    class models on the share of every class. ``outcomes``: :func:`outcome_arrays` of ``tally`` when the
    caller has them already (it compares the shadow candidates on the same arrays). A class model's
    log-loss is judged on the pairs whose prediction was logged as probabilities, and left out when
    none was (a class name says nothing of its confidence). ``holdout_errors``: the standard error of
    each holdout metric (a metric without one is taken as exact).
    """
    errors = holdout_errors or {}
    arrays = outcome_arrays(tally) if outcomes is None else outcomes
    labels = arrays.labels
    n = len(labels)
    findings: list[Finding] = []
    for name, spec in METRICS[kind].items():
        inputs, pairs = (arrays.predictions, labels), "labelled predictions"
        if spec.on_class_probabilities:
            usable = ~np.isnan(arrays.true_class_probability)
            if not usable.any() and name not in holdout:
                continue  # no probabilities logged, none expected: a class-name model has no log-loss
            inputs = (arrays.true_class_probability[usable], labels[usable])
            pairs = "labelled predictions logged as class probabilities"
        share = len(inputs[0]) / tally.predicted if tally.predicted else 0.0
        reference = holdout.get(name)
        error = errors.get(name, 0.0)
        findings.append(_metric_finding(name, spec, inputs, pairs, tally, share, reference, error, options))
    if baseline_labels is not None and n >= options.min_pairs:
        if kind is PredictionKind.SCORE:
            findings.append(_label_drift(labels, baseline_labels, options))
        elif kind is PredictionKind.CLASS:
            findings.append(_class_drift([str(label) for label in tally.labels], baseline_labels, options))
    return findings


def _metric_finding(
    name: str,
    spec: MetricSpec,
    inputs: tuple[FloatArray, FloatArray],
    pairs: str,
    tally: LabelTally,
    labelled_share: float,
    reference: float | None,
    reference_error: float,
    options: PerformanceOptions,
) -> Finding:
    """One metric of a window on its pairs, with its bootstrap CI, against the holdout's.

    ``inputs`` are the pairs (``pairs`` says what they are, for the reason); ``labelled_share`` is the
    share of the window's predictions among them.

    Flagged when the window is worse than the holdout by more than both samples' errors allow: the
    window's own margin on the worse side (its interval's bound minus its value) and the holdout's
    (``reference_error`` times the normal quantile of the same confidence), added in quadrature as two
    independent errors are. With an exact holdout (no error) this is "the holdout lies outside the
    window's interval on the worse side".
    """
    n = len(inputs[0])
    value = spec.function(*inputs) if n else math.nan
    detail: dict[str, object] = {
        "pairs": n,
        "predicted": tally.predicted,
        "labelled_share": labelled_share,
        "beyond_horizon": tally.beyond_horizon,
        "holdout": reference,
        "holdout_standard_error": reference_error,
    }

    def not_judged(reason: str) -> Finding:
        effect = value if math.isfinite(value) else None
        reason += "; not judged"
        return Finding(
            Check.PERFORMANCE,
            name,
            False,
            effect=effect,
            threshold=reference,
            method="bootstrap",
            reason=reason,
            detail=detail,
        )

    if n < options.min_pairs:
        return not_judged(f"{name}: only {n} {pairs} (need {options.min_pairs})")
    if not math.isfinite(value):  # (an AUC of pairs of one class)
        return not_judged(f"{name}: undefined on these {n:,} {pairs}")
    low, high = paired_bootstrap_interval(
        spec.function, inputs, resamples=options.resamples, confidence=options.confidence, seed=options.seed
    )
    if not math.isfinite(low):  # (an AUC of a window with a handful of one class: most draws lack it)
        return not_judged(
            f"{name} {value:.4f} on {n:,} {pairs}: undefined on most bootstrap resamples (too few of one "
            "class), so no interval"
        )
    detail |= {"ci_low": low, "ci_high": high, "confidence": options.confidence}
    degraded = False
    if reference is not None:
        gap = reference - value if spec.higher_is_better else value - reference
        own = max(high - value if spec.higher_is_better else value - low, 0.0)
        z = float(stats.norm.ppf(0.5 + options.confidence / 2))
        margin = math.hypot(own, z * reference_error)
        detail["margin"] = margin
        degraded = gap > margin and gap > options.tolerance
    versus = "" if reference is None else f" vs holdout {reference:.4f}"
    if reference is not None and reference_error > 0:
        versus += f" (SE {reference_error:.4f})"
    verdict = "degraded" if degraded else "within expectations"
    return Finding(
        Check.PERFORMANCE,
        name,
        degraded,
        effect=value,
        threshold=reference,
        method="bootstrap",
        reason=(
            f"{name} {value:.4f} ({options.confidence * 100:g}% CI {low:.4f}–{high:.4f}, "
            f"{n:,} {pairs}){versus}: {verdict}"
        ),
        severity=Severity.WARNING if degraded else Severity.INFO,
        detail=detail,
    )


def _class_drift(classes: list[str], baseline: CategoricalSketch, options: PerformanceOptions) -> Finding:
    """Label drift of a class model: the window's class shares against training's (chi-square).

    Classes are binned as the baseline's label profile bins them (top classes, OTHER, UNSEEN), so a
    class training never had is a shift too. The effect is the largest move of one class's share.
    """
    layout = baseline.layout
    codes = layout.encode(np.asarray(classes, dtype=object)).codes
    window = np.bincount(codes[codes < layout.n_bins], minlength=layout.n_bins).astype(np.float64)
    reference = np.asarray(baseline.counts, dtype=np.float64)[: layout.n_bins]
    p_value = chi_square(reference, window).p_value
    before = reference / max(reference.sum(), 1.0)
    after = window / max(window.sum(), 1.0)
    shifts = np.abs(after - before)
    moved = int(np.argmax(shifts))
    name = layout.bin_labels()[moved]
    return _drift_finding(
        float(shifts[moved]),
        p_value,
        options,
        f"label class shares moved by up to {shifts[moved]:.3f} (class {name!r}: {before[moved]:.3f} in "
        f"training → {after[moved]:.3f} in this window, p={p_value:.2g})",
        {"classes": layout.bin_labels(), "training_shares": before.tolist(), "window_shares": after.tolist()},
    )


def _label_drift(labels: FloatArray, baseline: CategoricalSketch, options: PerformanceOptions) -> Finding:
    """Label drift of a binary model: the window's positive rate against training's (chi-square).

    Training's positives are the label categories a window's label would count as positive
    (:func:`label_to_float` above 0.5: ``1``, ``"true"``, ``"yes"``...), so both rates count alike.
    """
    counts = np.asarray(baseline.counts, dtype=np.float64)
    positive_bins = [
        i for i, label in enumerate(baseline.layout.vocabulary) if (label_to_float(label) or 0.0) > 0.5
    ]
    reference_positive = float(counts[positive_bins].sum())
    reference_total = float(counts.sum())
    window_positive = float((labels > 0.5).sum())
    window_total = float(len(labels))
    p_value = chi_square(
        [reference_total - reference_positive, reference_positive],
        [window_total - window_positive, window_positive],
    ).p_value
    before = reference_positive / reference_total if reference_total else math.nan
    after = window_positive / window_total if window_total else math.nan
    return _drift_finding(
        abs(after - before),
        p_value,
        options,
        f"positive label rate {before:.3f} in training → {after:.3f} in this window (p={p_value:.2g})",
        {"reference_rate": before, "window_rate": after},
    )


def _drift_finding(
    shift: float, p_value: float, options: PerformanceOptions, reason: str, detail: dict[str, object]
) -> Finding:
    """Flagged when significant and the shift reaches ``label_shift_tolerance``."""
    flagged = p_value < options.alpha and shift >= options.label_shift_tolerance
    return Finding(
        Check.LABEL_DRIFT,
        "label",
        flagged,
        effect=shift,
        threshold=options.label_shift_tolerance,
        p_value=p_value,
        method="chi_square",
        reason=reason + (": label drift" if flagged else ""),
        severity=Severity.WARNING if flagged else Severity.INFO,
        detail=detail,
    )
