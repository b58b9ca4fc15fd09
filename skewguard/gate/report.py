"""The gate's vocabulary and its result: check names, signatures, attempts and the ``GateReport``.

This module does not import torch, so a stored report can be read, rendered and plotted by tools
that never train anything (the CLI, a dashboard). The report is a pydantic model because it has
to survive a JSON round trip byte-for-byte, including NaN/Inf in a loss curve (a diverging run is
exactly the case someone wants to look at later), hence ``ser_json_inf_nan="constants"``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from skewguard.errors import GateError

# The overfit pass criterion, L - F <= PASS_FRACTION * (L0 - F); lives here so plots can draw it.
PASS_FRACTION = 0.01


class Task(StrEnum):
    """What the targets are, which decides how "the prediction agrees with the target" is judged."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    SEQUENCE = "sequence"


class Outputs(StrEnum):
    """What the model's outputs are to its loss; AUTO reads it from the loss (see ``infer_layout``)."""

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    LOG_PROBABILITIES = "log_probabilities"
    #: The outputs approximate the targets themselves (MSE / L1 / Huber fitted to 0/1 or one-hot targets).
    VALUES = "values"


class CheckName(StrEnum):
    """Stable names of the gate's checks; CLIs, dashboards and tests refer to checks by these."""

    INVENTORY = "inventory"
    INIT_LOSS = "init_loss"
    OVERFIT = "overfit"
    FAILURE_SIGNATURES = "failure_signatures"
    GRADIENT_FLOW = "gradient_flow"
    BATCH_INDEPENDENCE = "batch_independence"
    CAUSAL_DEPENDENCY = "causal_dependency"
    GRADIENT_FRESHNESS = "gradient_freshness"
    DETERMINISM = "determinism"


class Signature(StrEnum):
    """Early-failure signatures of a loss curve, each pointing at a family of bugs."""

    NON_FINITE = "non_finite"
    BELOW_FLOOR = "below_floor"
    RISING = "rising"
    NOT_LEARNING = "not_learning"
    PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY = "plateau_probabilities_to_cross_entropy"
    PLATEAU_BROADCAST_MSE = "plateau_broadcast_mse"


class AttemptOutcome(StrEnum):
    """How one overfit attempt (one learning rate of the ladder) ended."""

    MEMORISED = "memorised"
    SIGNATURE = "signature"
    BUDGET_EXHAUSTED = "budget_exhausted"


class CheckStatus(StrEnum):
    """Three-valued status for display: a skipped check is neither a pass nor a failure."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class CheckResult(BaseModel):
    """One check's outcome; ``skipped`` checks carry their reason in ``detail`` and are not passes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: CheckName
    passed: bool
    detail: str
    skipped: bool = False

    @property
    def status(self) -> CheckStatus:
        """Passed / failed / skipped, for tables and summaries."""
        if self.skipped:
            return CheckStatus.SKIPPED
        return CheckStatus.PASSED if self.passed else CheckStatus.FAILED

    @classmethod
    def skip(cls, name: CheckName, reason: str) -> CheckResult:
        """A check that did not run; ``passed`` is False so nobody can mistake it for a pass."""
        return cls(name=name, passed=False, detail=reason, skipped=True)


class OverfitAttempt(BaseModel):
    """One run of the overfit loop at one learning rate, kept so the ladder can be audited."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    lr: float
    steps: int
    outcome: AttemptOutcome
    signatures: list[Signature] = Field(default_factory=list)
    initial_loss: float
    final_loss: float
    agreement: float | None = None
    loss_curve: list[float] = Field(default_factory=list)


class GateReport(BaseModel):
    """Everything the gate found: one verdict, each check separately, and a diagnosis in words."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    passed: bool
    checks: list[CheckResult]
    diagnosis: str
    loss_curve: list[float]
    steps: int
    seconds: float
    task: Task
    loss_floor: float
    attempts: list[OverfitAttempt] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckResult]:
        """The checks that ran and failed (skipped checks are listed separately)."""
        return [c for c in self.checks if not c.passed and not c.skipped]

    @property
    def skipped_checks(self) -> list[CheckResult]:
        """The checks that did not run, each with its reason."""
        return [c for c in self.checks if c.skipped]

    def check(self, name: CheckName | str) -> CheckResult:
        """The result of one check by name; raises GateError if the report has no such check."""
        wanted = CheckName(name)
        for result in self.checks:
            if result.name == wanted:
                return result
        msg = f"report has no check named {wanted.value!r}"
        raise GateError(msg)

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to JSON (NaN/Infinity written as JS constants so a diverged curve survives)."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> GateReport:
        """Parse a report written by :meth:`to_json`."""
        return cls.model_validate_json(text)

    def plot(self, path: str | Path) -> Path:
        """Write the loss curves of every attempt (and the floor / pass threshold) as a PNG.

        Uses matplotlib's object API with the Agg canvas directly, so it never touches pyplot's
        global backend state and works on a headless machine.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out = Path(path)
        if out.suffix.lower() != ".png":
            msg = f"plot path {out.name!r}: expected a file name ending in .png"
            raise GateError(msg)
        figure = Figure(figsize=(7.0, 4.0), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        curves = [a.loss_curve for a in self.attempts] or [self.loss_curve]
        labels = [f"lr={a.lr:.3g} ({a.outcome.value})" for a in self.attempts] or ["loss"]
        finite_all: list[float] = []
        for curve, label in zip(curves, labels, strict=True):
            finite = [v if math.isfinite(v) else math.nan for v in curve]
            finite_all.extend(v for v in finite if math.isfinite(v))
            axes.plot(range(len(finite)), finite, label=label, linewidth=1.2)
        axes.axhline(self.loss_floor, color="grey", linestyle="--", linewidth=0.8, label="loss floor")
        initial = self.attempts[0].initial_loss if self.attempts else math.nan
        if math.isfinite(initial) and initial > self.loss_floor:
            threshold = self.loss_floor + PASS_FRACTION * (initial - self.loss_floor)
            axes.axhline(threshold, color="green", linestyle=":", linewidth=0.8, label="pass threshold")
        if finite_all and min(finite_all) > 0 and self.loss_floor >= 0:
            axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel("loss on the cached batch")
        verdict = "PASSED" if self.passed else "FAILED: " + ", ".join(c.name for c in self.failed_checks)
        axes.set_title(f"overfit-batch gate ({self.task.value}) {verdict}", fontsize=9)
        axes.legend(fontsize=8)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="png")
        return out
