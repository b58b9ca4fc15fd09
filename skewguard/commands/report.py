"""``skewguard report``: a person's view of what the monitor stored, as files to open or attach.

Two files per run: Evidently's DataDrift HTML of one stored window against the model's training
baseline (drawn from both profiles' reservoir samples, the only rows a monitor keeps), and a PNG of
every feature's *effect / threshold* over the stored windows that end with it. The verdicts on the
page are Evidently's own on the samples; skewguard's verdict is the one in the PNG and in the store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from skewguard.commands.common import console, reports_errors
from skewguard.errors import ConfigError, DataError

if TYPE_CHECKING:
    from skewguard.settings import ModelConfig, MonitorSettings
    from skewguard.store import Store, StoredWindow

#: ``--window`` value selecting the most recent stored window.
LATEST = "latest"

# A SQLite URL naming a file: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite+driver:///…``.


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What one ``skewguard report`` run wrote, and about which windows."""

    html: Path
    png: Path
    window: StoredWindow
    plotted: int


def parse_window(text: str) -> dt.datetime | None:
    """``latest`` → ``None``; otherwise an ISO-8601 window start, which must carry its timezone."""
    if text.strip().lower() == LATEST:
        return None
    try:
        start = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        example = "2026-06-01T12:00:00+00:00"
        msg = f"--window must be 'latest' or an ISO-8601 window start such as {example}, got {text!r}"
        raise ConfigError(msg) from None
    if start.tzinfo is None:
        msg = f"--window {text!r} has no timezone; windows are stored in UTC, e.g. {text}+00:00"
        raise ConfigError(msg)
    return start.astimezone(dt.UTC)


def choose_model(settings: MonitorSettings, name: str | None) -> ModelConfig:
    """The configured model named ``name``, or the only one when no name is given."""
    names = [m.name for m in settings.models]
    if name is None:
        if len(settings.models) == 1:
            return settings.models[0]
        msg = f"the config monitors {len(names)} models {names}; choose one with --model"
        raise ConfigError(msg)
    for model in settings.models:
        if model.name == name:
            return model
    msg = f"--model {name!r} is not in the config; it monitors {names}"
    raise ConfigError(msg)


def find_windows(
    store: Store, group: str, model: str, start: dt.datetime | None, last: int
) -> list[StoredWindow]:
    """The chosen window and up to ``last - 1`` stored windows before it, newest first.

    The store lists windows newest first with a limit, so a window given by its start is searched in
    growing pages; the search stops once a page reaches windows that end before that start, since no
    later page can hold it.
    """
    limit = max(last, 32)
    while True:
        windows = store.windows(group=group, model=model, limit=limit)
        if not windows:
            msg = f"the store holds no finalised window of model {model!r} (consumer group {group!r}) yet"
            raise DataError(msg)
        if start is None:
            return windows[:last]
        for position, stored in enumerate(windows):
            if stored.result.key.start == start:
                return windows[position : position + last]
        exhausted = len(windows) < limit or windows[-1].result.key.end <= start
        if exhausted:
            newest = ", ".join(w.result.key.start.isoformat() for w in windows[:3])
            msg = (
                f"no stored window of model {model!r} starts at {start.isoformat()}; "
                f"the latest start at {newest}"
            )
            raise DataError(msg)
        limit *= 4


def write_report(
    settings: MonitorSettings,
    out: Path,
    *,
    model: str | None = None,
    window: str = LATEST,
    last: int = 24,
) -> ReportFiles:
    """Write the drift HTML of one stored window and the effects PNG of the windows ending with it."""
    from skewguard.baseline import Baseline
    from skewguard.report import plot_findings, render_drift_html
    from skewguard.stats import ColumnRole, Profile
    from skewguard.store import Store

    if last < 1:
        msg = f"--last must be at least 1 window, got {last}"
        raise ConfigError(msg)
    start = parse_window(window)
    chosen = choose_model(settings, model)
    baseline = Baseline.load(chosen.baseline)
    store = Store(settings.store.url, schema=settings.store.db_schema, create=False)
    try:
        windows = find_windows(store, settings.group_id, chosen.name, start, last)
        target = windows[0]
        state = store.window_profile(target.id)
    finally:
        store.close()
    key = target.result.key
    if state is None:
        msg = f"window {key.start.isoformat()} of model {chosen.name!r} was stored without its profile"
        raise DataError(msg)
    profile = Profile.from_dict(state)
    if not baseline.profile.layout.same_columns(profile.layout):
        msg = (
            f"window {key.start.isoformat()} of model {chosen.name!r} was profiled against another "
            f"baseline than {str(chosen.baseline)!r} (its bins or categories differ)"
        )
        raise DataError(msg)
    stamp = f"{key.start:%Y%m%dT%H%M%SZ}"
    # The page shows what the monitor drift-checks: not the seasonal features it leaves out by design,
    # and not the label, which serving windows do not carry (it arrives later, on its own topic).
    columns = [
        spec.name
        for spec in baseline.profile.layout.specs
        if spec.role is not ColumnRole.LABEL and spec.name not in chosen.drift_exclude
    ]
    try:
        # The PNG first: it is cheap, and it refuses windows without drift findings before Evidently runs.
        png = plot_findings([w.result for w in windows], out / f"{chosen.name}-{stamp}-effects.png")
        html = render_drift_html(
            baseline.profile, profile, out / f"{chosen.name}-{stamp}-drift.html", columns=columns
        )
    except OSError as exc:
        msg = f"cannot write the report into --out {str(out)!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    return ReportFiles(html=html, png=png, window=target, plotted=len(windows))


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command()(report)


@reports_errors
def report(
    config: Path = typer.Option(
        ..., "--config", help="Monitor config file (TOML or YAML); env SKEWGUARD_* overrides."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write the HTML and PNG into."),
    model: str | None = typer.Option(
        None, "--model", help="Model to report on (default: the config's only model)."
    ),
    window: str = typer.Option(
        LATEST, "--window", help="'latest', or the ISO-8601 start of a stored window (with timezone)."
    ),
    last: int = typer.Option(
        24, "--last", help="Windows in the effects plot: the chosen one and those stored before it."
    ),
) -> None:
    """Write a drift report of one stored window: Evidently HTML vs the baseline, and an effects PNG.

    Reads the results store the monitor writes to; exit 2 when the store holds no such window.
    """
    from skewguard.settings import load_settings

    files = write_report(load_settings(config), out, model=model, window=window, last=last)
    result = files.window.result
    flagged = [f"{f.check.value}:{f.subject}" for f in result.flagged]
    console.print(
        f"window {result.key.start.isoformat()} – {result.key.end.isoformat()} of model "
        f"[bold]{result.key.model}[/bold]: {result.records:,} records, "
        f"{len(flagged)} flagged{': ' + ', '.join(flagged) if flagged else ''}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"drift report (HTML): {files.html}", highlight=False, soft_wrap=True)
    console.print(
        f"effects over {files.plotted} window(s) (PNG): {files.png}", highlight=False, soft_wrap=True
    )
