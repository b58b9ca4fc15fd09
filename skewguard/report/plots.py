"""PNG of per-feature effect sizes over a run of windows.

Effects of different methods live on different scales, so each is plotted as *effect / threshold*:
the line at 1 is the threshold for every feature, and a marker shows where a feature was flagged
(its effect was over the line AND its test survived Benjamini–Hochberg). Features that never flag are
drawn faint, so the few that matter stand out even with fifty columns.

Two sources draw the same picture: :func:`plot_effects` takes in-memory verdicts (batch comparisons),
:func:`plot_findings` takes the window results the monitor stored (which keep findings, not verdicts).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skewguard.detect import WindowVerdict
from skewguard.errors import DataError
from skewguard.results import Check, Finding, WindowResult

#: The findings that compare a window with the training baseline: what the effects PNG draws by default.
DRIFT_CHECKS: tuple[Check, ...] = (Check.DRIFT, Check.PREDICTION_DRIFT)


@dataclass(frozen=True, slots=True)
class EffectHistory:
    """Per-subject *effect / threshold* over a run of windows, oldest first, and where each flagged.

    A ratio is NaN where the window has no such finding or no finite positive threshold (a subject
    with no values in that window), so gaps show as gaps instead of as zeros.
    """

    starts: tuple[dt.datetime, ...]
    ratios: dict[str, tuple[float, ...]]
    flagged: dict[str, tuple[int, ...]]


def _ratio(effect: float | None, threshold: float | None) -> float:
    if effect is None or threshold is None or not (threshold > 0 and math.isfinite(threshold)):
        return math.nan
    return effect / threshold


def _label(finding: Finding) -> str:
    if finding.check is Check.DRIFT:
        return finding.subject
    return f"{finding.check.value}:{finding.subject}"


def effect_history(results: Sequence[WindowResult], checks: Sequence[Check] = DRIFT_CHECKS) -> EffectHistory:
    """Collect the ``checks`` findings of one model's stored windows into per-subject ratio series.

    Windows are put in time order whatever order they come in (the store returns newest first). The
    series are labelled by subject for feature drift and ``check:subject`` for the other checks, so
    the prediction's drift cannot be confused with a feature's.
    """
    if not results:
        msg = "the effects plot needs at least one window"
        raise DataError(msg)
    models = sorted({r.key.model for r in results})
    if len(models) > 1:
        msg = f"the effects plot draws one model's windows, got windows of {models}"
        raise DataError(msg)
    ordered = sorted(results, key=lambda r: r.key.start)
    wanted = set(checks)
    labels: dict[str, None] = {}
    per_window: list[dict[str, Finding]] = []
    for result in ordered:
        found = {}
        for finding in result.findings:
            if finding.check in wanted:
                label = _label(finding)
                found[label] = finding
                labels.setdefault(label, None)
        per_window.append(found)
    if not labels:
        names = ", ".join(c.value for c in checks)
        msg = f"none of the {len(ordered)} window(s) of model {models[0]!r} holds a {names} finding"
        raise DataError(msg)
    ratios: dict[str, tuple[float, ...]] = {}
    flagged: dict[str, tuple[int, ...]] = {}
    for label in labels:
        row = [found.get(label) for found in per_window]
        ratios[label] = tuple(math.nan if f is None else _ratio(f.effect, f.threshold) for f in row)
        flagged[label] = tuple(i for i, f in enumerate(row) if f is not None and f.flagged)
    return EffectHistory(starts=tuple(r.key.start for r in ordered), ratios=ratios, flagged=flagged)


def plot_findings(
    results: Sequence[WindowResult],
    path: str | Path,
    *,
    checks: Sequence[Check] = DRIFT_CHECKS,
    title: str | None = None,
) -> Path:
    """Write the PNG of per-subject effect / threshold over stored windows (x axis: window start, UTC).

    The monitor stores ``Finding``s, not verdicts, so this is the effects plot drawn from the store.
    """
    history = effect_history(results, checks)
    model = results[0].key.model
    return _draw(
        list(history.starts),
        history.ratios,
        history.flagged,
        path,
        xlabel="window start (UTC)",
        title=title or f"{model}: drift effect over {len(history.starts)} windows (markers: flagged)",
    )


def plot_effects(verdicts: Sequence[WindowVerdict], path: str | Path, *, title: str | None = None) -> Path:
    """Write the PNG to ``path``: one line per feature, effect / threshold against window index."""
    if not verdicts:
        msg = "plot_effects needs at least one window verdict"
        raise DataError(msg)
    names = [f.name for f in verdicts[0].features]
    series: dict[str, list[float]] = {name: [] for name in names}
    flagged: dict[str, list[int]] = {name: [] for name in names}
    for index, verdict in enumerate(verdicts):
        by_name = {f.name: f for f in verdict.features}
        for name in names:
            feature = by_name.get(name)
            series[name].append(math.nan if feature is None else _ratio(feature.effect, feature.threshold))
            if feature is not None and feature.drifted:
                flagged[name].append(index)
    return _draw(
        list(range(len(verdicts))),
        series,
        flagged,
        path,
        xlabel="window",
        title=title or f"Per-feature drift effect over {len(verdicts)} windows (markers: flagged)",
    )


def _draw(
    x: Sequence[Any],
    series: Mapping[str, Sequence[float]],
    flagged: Mapping[str, Sequence[int]],
    path: str | Path,
    *,
    xlabel: str,
    title: str,
) -> Path:
    figure = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    # A single window is a single point: without a marker its line would be invisible.
    marker = "o" if len(x) == 1 else None
    for name, values in series.items():
        points = [(x[i], values[i]) for i in flagged.get(name, ()) if math.isfinite(values[i])]
        if flagged.get(name):
            (line,) = axes.plot(x, values, linewidth=1.6, label=name, marker=marker, markersize=3)
            if points:
                fx, fy = zip(*points, strict=True)
                axes.scatter(fx, fy, color=line.get_color(), marker="o", s=28, zorder=3)
        else:
            axes.plot(x, values, color="0.75", linewidth=0.8, marker=marker, markersize=3)
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1.0, label="threshold")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("effect / threshold")
    axes.set_title(title)
    if x and isinstance(x[0], dt.datetime):
        figure.autofmt_xdate()  # matplotlib's date axis (UTC by default); slanted, so stamps never overlap
    if any(max((v for v in values if math.isfinite(v)), default=0.0) > 20 for values in series.values()):
        axes.set_yscale("symlog", linthresh=1.0)
    axes.legend(loc="upper left", fontsize="small", ncols=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
