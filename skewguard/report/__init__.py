"""Human reports: Evidently's DataDrift HTML from profile samples, and a PNG of effects over windows.

Evidently and matplotlib are imported here and nowhere else (the benchmark borrows
:func:`skewguard.report._evidently.data_drift` to time Evidently as a peer).
"""

from __future__ import annotations

from skewguard.report.html import render_drift_html
from skewguard.report.plots import plot_effects

__all__ = ["plot_effects", "render_drift_html"]
