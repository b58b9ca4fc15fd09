"""The pipeline's stages, its progress interface and the ways a run stops on purpose.

A stopped run is not a crash: raw data that violates its suite, a model that fails the overfit gate,
or a candidate worse than production are findings. Each is its own exception carrying the evidence
(violations, the gate report, the comparison), so a CLI can print a table and exit 1 while a
configuration mistake stays a ``ConfigError`` (exit 2).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from skewguard.errors import SkewguardError, ValidationFailed

if TYPE_CHECKING:
    from skewguard.gate import GateReport
    from skewguard.pipeline.metrics import HoldoutComparison
    from skewguard.validation import ValidationReport


class Stage(StrEnum):
    """The stages in the order they run."""

    LOAD = "load"
    VALIDATE = "validate"
    FEATURES = "features"
    GATE = "gate"
    TRAIN = "train"
    EVALUATE = "evaluate"
    ARTIFACTS = "artifacts"
    REGISTER = "register"


class RetrainProgress(Protocol):
    """Receives progress per stage (a rich progress bar in the CLI; nothing in the API by default)."""

    def start(self, stage: Stage, total: int | None) -> None:
        """A stage began; ``total`` units of work when known (rows, epochs), else None."""

    def advance(self, stage: Stage, amount: int = 1) -> None:
        """``amount`` units of the stage's work are done."""

    def finish(self, stage: Stage, summary: str) -> None:
        """The stage completed; ``summary`` is one line for the log."""


class SilentProgress:
    """The default progress sink: reports nothing."""

    def start(self, stage: Stage, total: int | None) -> None:
        """Ignore."""

    def advance(self, stage: Stage, amount: int = 1) -> None:
        """Ignore."""

    def finish(self, stage: Stage, summary: str) -> None:
        """Ignore."""


class RetrainStopped(SkewguardError):
    """A stage found a reason not to produce a model; no model directory was written."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(f"retraining stopped at stage {stage.value!r}: {message}")
        self.stage = stage


class ValidationStopped(RetrainStopped, ValidationFailed):
    """The raw training data violated the feature suite (or the label is unusable)."""

    def __init__(self, report: ValidationReport) -> None:
        columns = sorted({v.column for v in report.violations})
        super().__init__(
            Stage.VALIDATE,
            f"{len(report.violations)} violation(s) of {report.suite} in column(s) {', '.join(columns)}",
        )
        self.report = report


class GateStopped(RetrainStopped):
    """The model failed the overfit-batch gate; ``report`` holds the checks and the diagnosis."""

    def __init__(self, report: GateReport) -> None:
        failed = ", ".join(c.name.value for c in report.failed_checks)
        super().__init__(Stage.GATE, f"the model failed the overfit-batch gate (failed: {failed})")
        self.report = report


class HoldoutStopped(RetrainStopped):
    """The candidate is worse than production on the holdout and the config requires it not to be."""

    def __init__(self, comparison: HoldoutComparison) -> None:
        production = comparison.production
        metric = comparison.metric
        text = (
            f"candidate {metric.value} {comparison.candidate.value(metric):.5f} is worse than production "
            f"{comparison.production_version} {production.value(metric):.5f} on the holdout"
            if production is not None
            else "candidate is worse than production"
        )
        super().__init__(Stage.EVALUATE, f"{text} (evaluation.require_better = true)")
        self.comparison = comparison
