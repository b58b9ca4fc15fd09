"""The overfit-batch gate: prove in seconds that a model can learn one batch, before the real run.

Importing this package imports torch. ``OverfitGate(...).check(...)`` returns a ``GateReport``;
``run_gate_from_config(path)`` does the same from a TOML/YAML file; ``render_report_table`` turns a
report into a rich table. The zoo of buggy and correct models lives in ``skewguard.gate.zoo``.
"""

from __future__ import annotations

from skewguard.gate.checks import smoothed_cross_entropy_floor
from skewguard.gate.config import GateConfig, load_gate_config, run_gate_from_config
from skewguard.gate.gate import GateOptions, OptimizerFactory, OverfitGate, TrainStep
from skewguard.gate.render import render_report_table
from skewguard.gate.report import (
    AttemptOutcome,
    CheckName,
    CheckResult,
    CheckStatus,
    GateReport,
    Outputs,
    OverfitAttempt,
    Signature,
    Task,
)

__all__ = [
    "AttemptOutcome",
    "CheckName",
    "CheckResult",
    "CheckStatus",
    "GateConfig",
    "GateOptions",
    "GateReport",
    "OptimizerFactory",
    "Outputs",
    "OverfitAttempt",
    "OverfitGate",
    "Signature",
    "Task",
    "TrainStep",
    "load_gate_config",
    "render_report_table",
    "run_gate_from_config",
    "smoothed_cross_entropy_floor",
]
