"""Reading a loss curve: the early-exit monitor, and the overfit / failure-signature verdicts.

The monitor sees one loss per step and says as soon as the attempt's outcome is certain, so a
broken model costs a few dozen steps rather than the whole budget. Thresholds follow GATE_NOTES:
pass at ``L - F <= 1 % (L0 - F)``; NaN/Inf; below the floor; above ``1.5 (L0 - F)``; less than
10 % of the way down after 10 % of the budget; flat at a known bug's plateau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from skewguard.gate.checks import Finding
from skewguard.gate.report import (
    PASS_FRACTION,
    AttemptOutcome,
    CheckName,
    CheckResult,
    OverfitAttempt,
    Signature,
)

RISE_FACTOR = 1.5
NOT_LEARNING_FRACTION = 0.10
PLATEAU_TOLERANCE = 0.03
PLATEAU_FINAL_TOLERANCE = 0.05
PLATEAU_MAX_PROGRESS = 0.02

_CAUSES: dict[Signature, str] = {
    Signature.NON_FINITE: (
        "a numerically invalid operation (log or sqrt of a non-positive number, division by zero, an "
        "overflowing exp) or a learning rate far too high"
    ),
    Signature.BELOW_FLOOR: (
        "a loss that can fall below its minimum is being maximised (a flipped sign in the loss), or the "
        "declared loss floor is wrong"
    ),
    Signature.RISING: (
        "the optimizer is climbing the loss (a flipped sign in the loss or the gradients) or the learning "
        "rate is far too high"
    ),
    Signature.NOT_LEARNING: (
        "the gradients do not reach the weights that matter (detached graph, frozen or unregistered "
        "layers) or the learning rate is far too low"
    ),
    Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY: (
        "probabilities (a softmax output) are fed to a cross-entropy loss that expects logits; remove the "
        "softmax from the model or use NLLLoss on log_softmax"
    ),
    Signature.PLATEAU_BROADCAST_MSE: (
        "MSE is broadcasting predictions of shape (N, 1) against targets of shape (N,), comparing every "
        "prediction with every target; squeeze the output or unsqueeze the target"
    ),
}

_WORDS: dict[Signature, str] = {
    Signature.NON_FINITE: "loss became NaN/Inf",
    Signature.BELOW_FLOOR: "loss fell below its floor",
    Signature.RISING: "loss rose above 1.5x its initial distance to the floor",
    Signature.NOT_LEARNING: "loss dropped less than 10% of the way to the floor in 10% of the budget",
    Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY: "loss plateaued at log(1+(K-1)/e)",
    Signature.PLATEAU_BROADCAST_MSE: "loss plateaued at Var(y)",
}


def signature_cause(signature: Signature) -> str:
    """The likely bug behind a signature, in words."""
    return _CAUSES[signature]


def signature_words(signature: Signature) -> str:
    """What the curve did, in words."""
    return _WORDS[signature]


@dataclass
class CurveMonitor:
    """Watches one attempt's losses and reports a failure signature as soon as one is certain."""

    floor: float
    max_steps: int
    plateaus: Sequence[tuple[Signature, float]] = ()
    curve: list[float] = field(default_factory=list)

    @property
    def initial(self) -> float:
        """L0, the loss before the first update."""
        return self.curve[0]

    @property
    def gap(self) -> float:
        """L0 - F: how far the loss has to travel."""
        return self.initial - self.floor

    @property
    def threshold(self) -> float:
        """The loss at or below which the batch counts as memorised (prediction agreement aside)."""
        return self.floor + PASS_FRACTION * max(self.gap, 0.0) + 1e-7 * max(1.0, abs(self.floor))

    @property
    def below_floor_limit(self) -> float:
        """Losses under this are below the floor by more than rounding can explain."""
        return self.floor - (PASS_FRACTION * abs(self.gap) + 1e-6 * max(1.0, abs(self.floor)))

    @property
    def not_learning_step(self) -> int:
        """The step (10 % of the budget) at which too little progress means "not learning"."""
        return max(1, math.ceil(NOT_LEARNING_FRACTION * self.max_steps))

    @property
    def plateau_window(self) -> int:
        """How many steps of (almost) no progress make a plateau."""
        return max(10, math.ceil(0.1 * self.max_steps))

    @property
    def plateau_start(self) -> int:
        """No plateau verdict before this step: a correct model may pass through the value early."""
        return max(20, math.ceil(0.2 * self.max_steps))

    def met(self, value: float) -> bool:
        """Whether this loss is low enough to count as memorised."""
        return math.isfinite(value) and value <= self.threshold

    def observe(self, value: float) -> list[Signature]:
        """Record one loss; return the signatures that end the attempt (empty: keep going)."""
        self.curve.append(value)
        step = len(self.curve) - 1
        if not math.isfinite(value):
            return [Signature.NON_FINITE]
        if value < self.below_floor_limit:
            return [Signature.BELOW_FLOOR]
        gap = self.gap
        if gap <= 0 or self.met(value):
            return []
        if step >= 1 and value - self.floor > RISE_FACTOR * gap:
            return [Signature.RISING]
        found: list[Signature] = []
        if step == self.not_learning_step and self.initial - min(self.curve) < NOT_LEARNING_FRACTION * gap:
            found.extend(self.plateau_matches(value, PLATEAU_TOLERANCE))
            found.append(Signature.NOT_LEARNING)
            return found
        if step >= max(self.plateau_start, self.plateau_window):
            progress = self.curve[step - self.plateau_window] - value
            if progress < PLATEAU_MAX_PROGRESS * gap:
                found.extend(self.plateau_matches(value, PLATEAU_TOLERANCE))
        return found

    def plateau_matches(self, value: float, tolerance: float) -> list[Signature]:
        """Known plateaus this loss value sits on (within a relative tolerance)."""
        return [sig for sig, level in self.plateaus if abs(value - level) <= tolerance * abs(level)]

    def final_signatures(self) -> list[Signature]:
        """Signatures readable from where a curve that used up its budget ended."""
        if not self.curve or not math.isfinite(self.curve[-1]):
            return []
        return self.plateau_matches(self.curve[-1], PLATEAU_FINAL_TOLERANCE)


def _attempt_words(attempt: OverfitAttempt, threshold: float) -> str:
    best = min((v for v in attempt.loss_curve if math.isfinite(v)), default=math.nan)
    if attempt.outcome is AttemptOutcome.SIGNATURE:
        what = "; ".join(signature_words(s) for s in attempt.signatures)
        ended = f"stopped after {attempt.steps} steps ({what})"
    else:
        ended = f"budget of {attempt.steps} steps used up"
        if attempt.signatures:
            ended += " (" + "; ".join(signature_words(s) for s in attempt.signatures) + ")"
    agreement = "" if attempt.agreement is None else f", agreement {attempt.agreement:.4g}"
    needed = f" (needed <= {threshold:.4g})" if math.isfinite(threshold) else ""
    return f"lr {attempt.lr:.3g}: {ended}, best loss {best:.4g}{needed}{agreement}"


def check_overfit(
    attempts: Sequence[OverfitAttempt],
    *,
    batch_size: int,
    floor: float,
    threshold: float,
    required_agreement: float,
    floor_note: str,
) -> Finding:
    """Memorised = loss within 1 % of the floor AND predictions agree with targets, at some LR."""
    memorised = [a for a in attempts if a.outcome is AttemptOutcome.MEMORISED]
    note = f" ({floor_note})" if floor_note else ""
    if memorised:
        win = memorised[0]
        detail = (
            f"memorised {batch_size} examples in {win.steps} steps at lr {win.lr:.3g}: "
            f"loss {win.final_loss:.4g} "
            f"<= {threshold:.4g} (floor {floor:.4g}{note}), agreement {win.agreement:.4g} "
            f">= {required_agreement:g}"
        )
        earlier = [a for a in attempts if a is not win]
        if earlier:
            detail += "; earlier: " + "; ".join(_attempt_words(a, threshold) for a in earlier)
        return Finding(CheckResult(name=CheckName.OVERFIT, passed=True, detail=detail))
    detail = f"could not memorise {batch_size} examples (floor {floor:.4g}{note}): " + "; ".join(
        _attempt_words(a, threshold) for a in attempts
    )
    signatures = {s for a in attempts for s in a.signatures}
    if Signature.BELOW_FLOOR in signatures:
        cause = "the loss went below its floor, which no correct loss can do: " + signature_cause(
            Signature.BELOW_FLOOR
        )
    elif signatures:
        cause = "the curve shows known failure signatures (see failure_signatures)"
    else:
        lows = [a for a in attempts if math.isfinite(a.final_loss) and a.final_loss <= threshold]
        if lows:
            cause = (
                "the loss got low but the predictions still disagree with the targets: the loss does not "
                "measure what the predictions are judged by (wrong target alignment, wrong class axis)"
            )
        else:
            cause = (
                "the model cannot fit even one batch with any learning rate of the ladder: too little "
                "capacity, an information bottleneck, or a broken loss/optimizer"
            )
    return Finding(CheckResult(name=CheckName.OVERFIT, passed=False, detail=detail), cause)


def check_failure_signatures(
    attempts: Sequence[OverfitAttempt],
    *,
    overfit_passed: bool,
    plateau_levels: Sequence[tuple[Signature, float]],
    evidence: Sequence[str],
) -> Finding:
    """Named early-failure signatures; LR-only symptoms are tolerated when another LR memorised."""
    if not attempts:
        return Finding(CheckResult.skip(CheckName.FAILURE_SIGNATURES, "no overfit attempt was run"))
    seen: dict[Signature, list[OverfitAttempt]] = {}
    for attempt in attempts:
        for signature in attempt.signatures:
            seen.setdefault(signature, []).append(attempt)
    always_bad = {Signature.NON_FINITE, Signature.BELOW_FLOOR}
    failing = [s for s in seen if s in always_bad or not overfit_passed]
    levels = dict(plateau_levels)

    def describe(signature: Signature) -> str:
        where = ", ".join(f"lr {a.lr:.3g} (step {a.steps})" for a in seen[signature])
        text = signature_words(signature)
        if signature in levels:
            text += f" = {levels[signature]:.4g}"
        return f"{text} at {where}"

    if not failing:
        if seen:
            detail = "only learning-rate effects at other rungs of the ladder: " + "; ".join(
                describe(s) for s in seen
            )
        else:
            detail = "no NaN/Inf, no rise, no stall, no known plateau"
        return Finding(CheckResult(name=CheckName.FAILURE_SIGNATURES, passed=True, detail=detail))
    detail = "; ".join(describe(s) for s in failing)
    if evidence:
        detail += "; evidence: " + "; ".join(evidence)
    specific = [s for s in failing if s is not Signature.NOT_LEARNING] or failing
    cause = "; ".join(f"{signature_words(s)}: {signature_cause(s)}" for s in specific)
    return Finding(CheckResult(name=CheckName.FAILURE_SIGNATURES, passed=False, detail=detail), cause)
