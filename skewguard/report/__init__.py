"""Human reports: Evidently's DataDrift HTML from profile samples, and a PNG of effects over windows.

Evidently and matplotlib are imported here and nowhere else; the benchmark times Evidently as a peer
through :func:`evidently_data_drift`.
"""

from __future__ import annotations

from skewguard.report._evidently import EvidentlyDrift
from skewguard.report._evidently import data_drift as evidently_data_drift
from skewguard.report.html import render_drift_html
from skewguard.report.plots import plot_effects

__all__ = ["EvidentlyDrift", "evidently_data_drift", "plot_effects", "render_drift_html"]
