"""``skewguard monitor`` (the streaming daemon) and ``skewguard status`` (what it has found)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import typer
from rich.table import Table

from skewguard.commands.common import console, reports_errors
from skewguard.errors import ConfigError

CONFIG_OPTION = typer.Option(
    ..., "--config", help="Monitor config file (TOML or YAML); env SKEWGUARD_* overrides."
)


def register(app: typer.Typer) -> None:
    """Add ``monitor`` and ``status`` to the root app."""
    app.command()(monitor)
    app.command()(status)


@reports_errors
def monitor(
    config: Path = CONFIG_OPTION,
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level."),
) -> None:
    """Run the streaming monitor daemon until SIGTERM/SIGINT (then checkpoint, commit and exit).

    Serves /metrics, /healthz and /status on the configured HTTP port. Exit 0 after a clean stop, 2 on
    configuration errors (the message names the key), 3 when the broker or the store cannot be reached
    at start (an outage later is ridden out, not an exit).
    """
    from skewguard.daemon import MonitorDaemon, load_monitors
    from skewguard.settings import load_settings
    from skewguard.store import Store

    levels = logging.getLevelNamesMapping()
    if log_level.upper() not in levels:
        names = ", ".join(sorted(levels, key=levels.__getitem__))
        msg = f"--log-level: expected one of {names}, got {log_level!r}"
        raise ConfigError(msg)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(config)
    store = Store(settings.store.url, schema=settings.store.db_schema)
    daemon = MonitorDaemon(settings, load_monitors(settings), store)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("skewguard").info("signal %s: checkpointing and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon.open(serve_http=True)
    if daemon.ops is not None:
        logging.getLogger("skewguard").info("ops endpoint on port %d", daemon.ops.port)
    try:
        daemon.run(stop)
    finally:
        daemon.close()
        store.close()


@reports_errors
def status(
    config: Path = CONFIG_OPTION,
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    limit: int = typer.Option(10, "--limit", min=1, help="How many latest windows to show."),
    alerts_shown: int = typer.Option(
        20, "--alerts", min=1, help="How many open alerts to show, newest first (the rest are counted)."
    ),
) -> None:
    """Print the latest windows and the open alerts from the results store.

    Exit 0 when printed, 2 on configuration errors (a store file that does not exist included), 3 when
    the store cannot be read.
    """
    from skewguard.settings import load_settings
    from skewguard.store import Store

    settings = load_settings(config)
    store = Store(settings.store.url, schema=settings.store.db_schema, create=False)
    windows = Table(title="latest windows")
    for header in ("model", "window (UTC)", "records", "late", "flagged"):
        windows.add_column(header)
    for stored in store.windows(group=settings.group_id, model=model, limit=limit):
        result = stored.result
        flagged = ", ".join(f"{f.check.value}:{f.subject}" for f in result.flagged) or "-"
        span = f"{result.key.start:%Y-%m-%d %H:%M}–{result.key.end:%H:%M}"
        if result.key.index is not None:  # a count window: its number, then the span of its records
            span = f"#{result.key.index} {span}"
        windows.add_row(result.key.model, span, f"{result.records:,}", str(result.late_records), flagged)
    console.print(windows)
    shown = store.alerts(model=model, group=settings.group_id, open_only=True, limit=alerts_shown)
    total = store.open_alert_count(settings.group_id, model) if len(shown) == alerts_shown else len(shown)
    alerts = Table(title=f"open alerts ({total:,})")
    for header in ("model", "check", "subject", "severity", "window", "message"):
        alerts.add_column(header)
    for alert in shown:
        alerts.add_row(
            alert.model,
            alert.check.value,
            alert.subject,
            alert.severity.value,
            f"{alert.window_start:%m-%d %H:%M}",
            alert.message,
        )
    console.print(alerts)
    if total > len(shown):
        hidden = total - len(shown)
        noun = "alert" if hidden == 1 else "alerts"
        console.print(f"{hidden:,} older open {noun} not shown (--alerts {total} shows every one)")
    store.close()
