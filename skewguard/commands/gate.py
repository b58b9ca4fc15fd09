"""``skewguard gate``: run the overfit-batch gate from a config file, for pipelines driven from a shell."""

from __future__ import annotations

from pathlib import Path

import typer

from skewguard.commands.common import EXIT_FINDING, EXIT_OK, console, reports_errors
from skewguard.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("gate")(gate)


@reports_errors
def gate(
    config: Path = typer.Option(
        ..., "--config", help="Gate config (TOML/YAML) naming the model factory, the batch and the loss."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the report as JSON to this file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the loss curves as a PNG to this file."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads (1 suits a shared machine)."),
) -> None:
    """Prove in seconds that a model can memorise one batch and that gradients flow where they must.

    Prints one row per check and a diagnosis. Exit 0 when the gate passes, 1 when it fails (a model
    or loss that raises on the batch fails it), 2 on a configuration error.
    """
    if plot is not None and plot.suffix.lower() != ".png":
        msg = f"--plot {plot.name!r}: expected a file name ending in .png"
        raise ConfigError(msg)
    # Imported here: the gate brings in torch, which no other command needs. The gate's runner sets
    # the thread count, so this module never imports torch itself (DESIGN: torch only in gate/).
    from skewguard.gate import render_report_table, run_gate_from_config

    report = run_gate_from_config(config, threads=threads)
    console.print(render_report_table(report))
    console.print(f"[bold]diagnosis:[/bold] {report.diagnosis}", highlight=False, soft_wrap=True)
    try:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report.to_json(), encoding="utf-8")
            console.print(f"report → {out}", highlight=False)
        if plot is not None:
            report.plot(plot)
            console.print(f"loss curves → {plot}", highlight=False)
    except OSError as exc:
        msg = f"cannot write the gate report: {exc}"
        raise ConfigError(msg) from exc
    raise typer.Exit(EXIT_OK if report.passed else EXIT_FINDING)
