"""``skewguard shadow report``: should a shadow candidate replace production? PROMOTE / HOLD / REJECT."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from skewguard.commands.common import console, reports_errors

shadow_app = typer.Typer(help="Shadow candidates compared with production.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``shadow`` command group to the root app."""
    app.add_typer(shadow_app, name="shadow")


@shadow_app.command("report")
@reports_errors
def report(
    config: Path = typer.Option(..., "--config", help="The monitor config (its store holds the windows)."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: every configured model)."),
    windows: int = typer.Option(3, "--windows", min=1, help="Labelled windows a PROMOTE must hold for."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of the improvement and its interval."),
) -> None:
    """Print each candidate's verdict with its reason, from the windows the daemon stored."""
    from skewguard.report.shadow import plot_shadow
    from skewguard.results import Stage
    from skewguard.settings import load_settings
    from skewguard.shadow.compare import verdicts_from_results
    from skewguard.store import Store

    settings = load_settings(config)
    store = Store(settings.store.url, schema=settings.store.db_schema, create=False)
    names = [model] if model else [m.name for m in settings.models]
    table = Table(title="shadow candidates")
    for header in ("model", "candidate", "verdict", "labelled windows", "reason"):
        table.add_column(header)
    labelled_all = []
    for name in names:
        serving = [w.result for w in store.windows(group=settings.group_id, model=name, limit=200)]
        labelled = [
            w.result
            for w in store.windows(group=settings.group_id, model=name, stage=Stage.LABELS, limit=200)
        ]
        labelled_all += labelled
        for verdict in verdicts_from_results(serving, labelled, required_windows=windows):
            colour = {"PROMOTE": "green", "REJECT": "red"}.get(verdict.verdict.value, "yellow")
            table.add_row(
                name,
                verdict.version,
                f"[{colour}]{verdict.verdict.value}[/{colour}]",
                str(verdict.windows),
                verdict.reason,
            )
    console.print(table)
    if plot is not None:
        console.print(f"plot: {plot_shadow(labelled_all, plot)}")
    store.close()
