"""``skewguard bench …``: measure skewguard against its peers on identical data, in one run."""

from __future__ import annotations

import json
from typing import Any

import typer

from skewguard.commands.common import EXIT_FINDING, console, reports_errors

bench_app = typer.Typer(
    help="Benchmarks: each prints a table, or one JSON line with --json.", no_args_is_help=True
)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON line instead of a table.")


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group to the root app."""
    app.add_typer(bench_app, name="bench")


def _emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(f"[bold]{title}[/bold]")
    for key, value in result.items():
        if not isinstance(value, list | dict):
            console.print(f"  {key:>24}: {value}")


@bench_app.command("drift")
@reports_errors
def drift(
    as_json: bool = JSON_OPTION,
    rows: int = typer.Option(100_000, "--rows", help="Rows in the reference and in the current frame."),
    features: int = typer.Option(50, "--features", help="Columns (70 % numeric, 30 % categorical)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
) -> None:
    """Drift detection vs Evidently's DataDriftPreset on the same frames: speed and correctness."""
    from skewguard.bench.drift import bench_drift

    _emit(bench_drift(rows=rows, features=features, seed=seed), as_json, "skewguard bench drift")


@bench_app.command("gate")
@reports_errors
def gate(
    as_json: bool = JSON_OPTION,
    threads: int = typer.Option(1, "--threads", help="torch threads (1 is fastest on a shared 2-core box)."),
) -> None:
    """Run the overfit gate on every zoo model: correct verdicts and seconds per model."""
    from skewguard.bench.gate import bench_gate

    result = bench_gate(threads=threads)
    _emit(result, as_json, "skewguard bench gate")
    if not as_json:
        for row in result["models"]:
            mark = "[green]ok[/green]" if row.get("correct", True) else "[red]WRONG[/red]"
            console.print(f"  {mark} {row['name']:<32} passed={row['passed']!s:<5} {row['seconds']:.2f}s")
    if result["correct_verdicts"] != result["total"]:
        raise typer.Exit(EXIT_FINDING)
