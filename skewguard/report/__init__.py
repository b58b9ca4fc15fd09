"""Human reports: Evidently's DataDrift HTML from profile samples, and a PNG of effects over windows.

The PNG is drawn from in-memory verdicts (batch comparisons) or from the window results the monitor
stored (which keep findings, not verdicts).

Evidently and matplotlib are imported here and nowhere else; the benchmark times Evidently as a peer
through :func:`evidently_data_drift`.
"""

from __future__ import annotations

from skewguard.report._evidently import EvidentlyDrift
from skewguard.report._evidently import data_drift as evidently_data_drift
from skewguard.report.html import render_drift_html
from skewguard.report.plots import DRIFT_CHECKS, EffectHistory, effect_history, plot_effects, plot_findings

__all__ = [
    "DRIFT_CHECKS",
    "EffectHistory",
    "EvidentlyDrift",
    "effect_history",
    "evidently_data_drift",
    "plot_effects",
    "plot_findings",
    "render_drift_html",
]
