"""``skewguard retrain``: the retraining pipeline, one progress bar per stage.

Exit 0 when a model version directory was produced; 1 when a stage stopped the run (raw data
violations, a failed overfit gate, a candidate worse than production when that is required, a
diverged run); 2 on configuration or unusable-data errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from skewguard.commands.common import EXIT_FINDING, console, reports_errors

if TYPE_CHECKING:
    from skewguard.pipeline import HoldoutComparison, RetrainResult, RetrainStopped, Stage
    from skewguard.validation import ValidationReport


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("retrain")(retrain)


class _StageBars:
    """The pipeline's progress sink drawn as one rich bar per stage, a summary line as each ends."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[Stage, TaskID] = {}

    def start(self, stage: Stage, total: int | None) -> None:
        self.tasks[stage] = self.bars.add_task(stage.value, total=total)

    def advance(self, stage: Stage, amount: int = 1) -> None:
        self.bars.advance(self.tasks[stage], amount)

    def finish(self, stage: Stage, summary: str) -> None:
        task = self.tasks[stage]
        done = max(int(self.bars.tasks[task].completed), 1)
        # A stage that ended early (early stopping) or had no known total is shown as complete.
        self.bars.update(task, total=done, completed=done)
        self.bars.console.print(f"[green]✓[/green] {stage.value}: {summary}", highlight=False, soft_wrap=True)


def _comparison_table(comparison: HoldoutComparison) -> Table:
    table = Table(title=f"holdout ({comparison.candidate.rows} rows)")
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    production = comparison.production
    if production is not None:
        table.add_column(f"production {comparison.production_version}", justify="right")
    for name in ("auc", "log_loss", "accuracy", "positive_rate", "mean_score"):
        row = [name, f"{getattr(comparison.candidate, name):.4f}"]
        if production is not None:
            row.append(f"{getattr(production, name):.4f}")
        table.add_row(*row)
    return table


def _violations_table(report: ValidationReport) -> Table:
    table = Table(title=f"{len(report.violations)} violation(s) in the raw training data ({report.suite})")
    for header in ("column", "expectation", "rows", "examples"):
        table.add_column(header)
    for violation in report.violations:
        count = "" if violation.unexpected_count is None else str(violation.unexpected_count)
        examples = ", ".join(repr(v) for v in violation.examples)
        table.add_row(Text(violation.column), Text(violation.detail), count, Text(examples))
    return table


def _report_stop(stopped: RetrainStopped) -> None:
    from skewguard.gate import render_report_table
    from skewguard.pipeline import GateStopped, HoldoutStopped, ValidationStopped

    if isinstance(stopped, GateStopped):
        console.print(render_report_table(stopped.report))
        console.print(f"[bold]diagnosis:[/bold] {stopped.report.diagnosis}", highlight=False, soft_wrap=True)
    elif isinstance(stopped, ValidationStopped):
        console.print(_violations_table(stopped.report))
    elif isinstance(stopped, HoldoutStopped):
        console.print(_comparison_table(stopped.comparison))
    console.print(
        f"[red]stopped:[/red] {stopped}; no model directory was written", highlight=False, soft_wrap=True
    )


def _report_result(result: RetrainResult) -> None:
    console.print(_comparison_table(result.comparison))
    training = result.training
    console.print(
        f"[green]{result.model_name} {result.version}[/green] registered as [bold]{result.status.value}"
        f"[/bold]: best epoch {training.best_epoch} of {training.epochs_run} ({training.stop_reason.value}), "
        f"gate passed in {result.gate.seconds:.2f} s → {result.directory}",
        highlight=False,
        soft_wrap=True,
    )


@reports_errors
def retrain(
    config: Path = typer.Option(..., "--config", help="Retraining config (TOML/YAML)."),
    models_dir: Path | None = typer.Option(
        None, "--models-dir", help="Write model versions here instead of the config's models_dir."
    ),
) -> None:
    """Retrain: validate raw data, fit features, run the overfit gate, train, evaluate, register.

    Writes a versioned model directory and registers it as a shadow candidate (the first version
    ever becomes production). Exit 0 with a model directory, 1 when a stage stopped the run, 2 on
    configuration errors.
    """
    from skewguard.pipeline import RetrainConfig, RetrainStopped
    from skewguard.pipeline import retrain as run_pipeline

    loaded = RetrainConfig.from_file(config)
    if models_dir is not None:
        loaded = loaded.model_copy(update={"models_dir": models_dir.resolve()})
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        try:
            result = run_pipeline(loaded, progress=_StageBars(bars))
        except RetrainStopped as stopped:
            bars.stop()
            _report_stop(stopped)
            raise typer.Exit(EXIT_FINDING) from None
    _report_result(result)
