"""PNG of per-feature effect sizes over a run of windows.

Effects of different methods live on different scales, so each is plotted as *effect / threshold*:
the line at 1 is the threshold for every feature, and a marker shows where a feature was flagged
(its effect was over the line AND its test survived Benjamini–Hochberg). Features that never flag are
drawn faint, so the few that matter stand out even with fifty columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skewguard.detect import WindowVerdict
from skewguard.errors import DataError


def plot_effects(verdicts: Sequence[WindowVerdict], path: str | Path, *, title: str | None = None) -> Path:
    """Write the PNG to ``path``: one line per feature, effect / threshold against window index."""
    if not verdicts:
        msg = "plot_effects needs at least one window verdict"
        raise DataError(msg)
    names = [f.name for f in verdicts[0].features]
    series: dict[str, list[float]] = {name: [] for name in names}
    flagged: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for index, verdict in enumerate(verdicts):
        by_name = {f.name: f for f in verdict.features}
        for name in names:
            feature = by_name.get(name)
            ratio = math.nan
            if feature is not None and feature.threshold > 0 and math.isfinite(feature.threshold):
                ratio = feature.effect / feature.threshold
            series[name].append(ratio)
            if feature is not None and feature.drifted:
                flagged[name].append((index, ratio))

    figure = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    x = list(range(len(verdicts)))
    for name in names:
        if flagged[name]:
            (line,) = axes.plot(x, series[name], linewidth=1.6, label=name)
            fx, fy = zip(*flagged[name], strict=True)
            axes.scatter(fx, fy, color=line.get_color(), marker="o", s=28, zorder=3)
        else:
            axes.plot(x, series[name], color="0.75", linewidth=0.8)
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1.0, label="threshold")
    axes.set_xlabel("window")
    axes.set_ylabel("effect / threshold")
    axes.set_title(title or f"Per-feature drift effect over {len(verdicts)} windows (markers: flagged)")
    if any(
        values and max((v for v in values if math.isfinite(v)), default=0.0) > 20
        for values in series.values()
    ):
        axes.set_yscale("symlog", linthresh=1.0)
    axes.legend(loc="upper left", fontsize="small", ncols=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
