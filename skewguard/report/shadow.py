"""PNG of each shadow candidate's metric difference to production, with its interval, over windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from skewguard.results import Check, WindowResult


def plot_shadow(labelled: Sequence[WindowResult], path: Path) -> Path:
    """Plot improvement (candidate − production, in the better direction) with its CI per window."""
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    for result in sorted(labelled, key=lambda r: r.key.start):
        for finding in result.findings:
            if finding.check is Check.SHADOW and finding.effect is not None and "ci_low" in finding.detail:
                series.setdefault(finding.subject, []).append(
                    (
                        result.key.start.timestamp(),
                        float(finding.effect),
                        float(finding.detail["ci_low"]),
                        float(finding.detail["ci_high"]),
                    )
                )
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for version, points in sorted(series.items()):
        xs = [p[0] for p in points]
        axes.plot(xs, [p[1] for p in points], marker="o", label=version)
        axes.fill_between(xs, [p[2] for p in points], [p[3] for p in points], alpha=0.2)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("window start (epoch s)")
    axes.set_ylabel("metric improvement over production")
    axes.set_title("shadow candidates vs production (95% paired bootstrap interval)")
    if series:
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
