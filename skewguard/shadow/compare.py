"""Shadow candidates compared with production on the same requests, window by window.

Serving stage (every window): how often the candidate agrees with production (the same side of 0.5 for
scores, the same class for class models), how well the scores correlate and their mean absolute
difference (scores and values), how far apart the two prediction distributions are (Jensen–Shannon
distance over the baseline's prediction bins), and how often the candidate's prediction is missing
(dropped by a full shadow queue, or the candidate crashed).

Labels stage (once the window's labels are in): both models' metric on the *same* labelled requests, and
a paired bootstrap confidence interval of the difference. The promotion verdict over recent windows
(PROMOTE / HOLD / REJECT) is derived from those stored findings, so it is the same whichever daemon
finalised which window.

All sums here merge exactly across partitions (counts, sums of products, histograms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from skewguard.baseline import PredictionKind
from skewguard.labels.performance import METRICS
from skewguard.results import Check, Finding, Severity, WindowResult
from skewguard.stats import js_distance, paired_bootstrap_interval
from skewguard.windows import ShadowTally

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ShadowOptions:
    """When a candidate's behaviour counts against it."""

    max_missing_rate: float = 0.05
    """More candidate predictions missing than this share (queue drops, crashes) is a finding."""
    resamples: int = 400
    confidence: float = 0.95
    min_pairs: int = 100
    seed: int = 0


def serving_findings(version: str, tally: ShadowTally, options: ShadowOptions) -> list[Finding]:
    """Agreement and divergence of one candidate in one window."""
    total = tally.compared + tally.missing
    missing_rate = tally.missing / total if total else 0.0
    agreement = tally.agree / tally.compared if tally.compared else math.nan
    mean_abs = tally.sabs / tally.compared if tally.compared else math.nan
    divergence = (
        js_distance(np.asarray(tally.production_hist), np.asarray(tally.candidate_hist))
        if tally.compared
        else math.nan
    )
    correlation = tally.correlation
    if tally.classes:  # no scores to correlate or subtract
        mean_abs = correlation = math.nan
    flagged = missing_rate > options.max_missing_rate
    scores = (
        "" if tally.classes else f", score correlation {correlation:.3f}, mean |difference| {mean_abs:.4f}"
    )
    reason = (
        f"candidate {version}: agrees with production on {agreement:.1%} of {tally.compared:,} requests"
        f"{scores}, prediction-distribution JS distance {divergence:.4f}; {missing_rate:.1%} of its "
        "predictions missing"
        + (f" (above the {options.max_missing_rate:.0%} limit: it drops or crashes)" if flagged else "")
    )
    return [
        Finding(
            Check.SHADOW,
            version,
            flagged,
            effect=None if math.isnan(divergence) else float(divergence),
            method="agreement",
            reason=reason,
            severity=Severity.WARNING if flagged else Severity.INFO,
            detail={
                "stage": "serving",
                "compared": tally.compared,
                "missing": tally.missing,
                "missing_rate": missing_rate,
                "agreement": None if math.isnan(agreement) else agreement,
                "correlation": None if math.isnan(correlation) else correlation,
                "mean_abs_difference": None if math.isnan(mean_abs) else mean_abs,
            },
        )
    ]


def labelled_findings(
    version: str,
    production: FloatArray,
    candidate: FloatArray,
    labels: FloatArray,
    kind: PredictionKind,
    options: ShadowOptions,
) -> list[Finding]:
    """Both models' main metric on the same labelled requests, and a paired CI of the difference."""
    name, spec = next(iter(METRICS[kind].items()))
    metric, higher_is_better = spec.function, spec.higher_is_better
    usable = ~np.isnan(candidate) & ~np.isnan(production)
    x, y, z = production[usable], candidate[usable], labels[usable]
    n = len(x)
    if n < options.min_pairs:
        return [
            Finding(
                Check.SHADOW,
                version,
                False,
                method=f"paired_bootstrap_{name}",
                reason=f"candidate {version}: only {n} labelled requests with both predictions; not judged",
                detail={"stage": "labels", "pairs": n, "metric": name},
            )
        ]
    prod_value, cand_value = metric(x, z), metric(y, z)
    sign = 1.0 if higher_is_better else -1.0

    def improvement(xs: FloatArray, ys: FloatArray, zs: FloatArray) -> float:
        return sign * (metric(ys, zs) - metric(xs, zs))

    low, high = paired_bootstrap_interval(
        improvement, (x, y, z), resamples=options.resamples, confidence=options.confidence, seed=options.seed
    )
    gain = sign * (cand_value - prod_value)
    better, worse = low > 0, high < 0
    verdict = (
        "better with confidence" if better else "worse with confidence" if worse else "no clear difference"
    )
    return [
        Finding(
            Check.SHADOW,
            version,
            worse,
            effect=gain,
            threshold=0.0,
            method=f"paired_bootstrap_{name}",
            reason=(
                f"candidate {version}: {name} {cand_value:.4f} vs production {prod_value:.4f} on the same "
                f"{n:,} labelled requests; improvement {gain:+.4f} "
                f"({options.confidence * 100:g}% CI {low:+.4f} to {high:+.4f}): {verdict}"
            ),
            severity=Severity.WARNING if worse else Severity.INFO,
            detail={
                "stage": "labels",
                "metric": name,
                "pairs": n,
                "production": prod_value,
                "candidate": cand_value,
                "ci_low": low,
                "ci_high": high,
                "better": better,
            },
        )
    ]


class Promotion(StrEnum):
    """What to do with a shadow candidate."""

    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    REJECT = "REJECT"


@dataclass(frozen=True)
class CandidateVerdict:
    """The promotion verdict of one candidate, with its reason in words."""

    version: str
    verdict: Promotion
    reason: str
    windows: int


def promotion_verdict(
    version: str,
    labelled: Sequence[Finding],
    serving: Sequence[Finding],
    *,
    required_windows: int = 3,
) -> CandidateVerdict:
    """PROMOTE / HOLD / REJECT from the newest-first labelled and serving findings of one candidate.

    REJECT when any recent labelled window shows it worse with confidence, or it drops/crashes above
    the limit; PROMOTE when each of the last ``required_windows`` labelled windows shows it better with
    confidence; otherwise HOLD (not enough evidence yet).
    """
    judged = [f for f in labelled if f.detail.get("pairs", 0) and "ci_low" in f.detail][:required_windows]
    failing = [f for f in serving[:required_windows] if f.flagged]
    if failing:
        return CandidateVerdict(version, Promotion.REJECT, failing[0].reason, len(judged))
    worse = [f for f in judged if f.flagged]
    if worse:
        return CandidateVerdict(version, Promotion.REJECT, worse[0].reason, len(judged))
    if len(judged) >= required_windows and all(f.detail.get("better") for f in judged):
        reason = (
            f"better than production with confidence in each of the last {required_windows} labelled windows"
        )
        return CandidateVerdict(version, Promotion.PROMOTE, reason, len(judged))
    reason = (
        f"{len(judged)} of {required_windows} labelled windows judged"
        if len(judged) < required_windows
        else "no confident improvement in every recent window"
    )
    return CandidateVerdict(version, Promotion.HOLD, reason, len(judged))


def verdicts_from_results(
    serving: Sequence[WindowResult], labelled: Sequence[WindowResult], *, required_windows: int = 3
) -> list[CandidateVerdict]:
    """One verdict per candidate seen in the stored windows (each sequence newest first)."""

    def by_version(results: Sequence[WindowResult]) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for result in results:
            for finding in result.findings:
                if finding.check is Check.SHADOW:
                    out.setdefault(finding.subject, []).append(finding)
        return out

    served, judged = by_version(serving), by_version(labelled)
    return [
        promotion_verdict(
            version, judged.get(version, []), served.get(version, []), required_windows=required_windows
        )
        for version in sorted(set(served) | set(judged))
    ]
