"""``skewguard demo``: the whole story in one command, with progress bars and a final verdict table.

The orchestration lives in :mod:`skewguard.demo.run`; this module draws its progress and its result.
Exit 0 when every injected problem was detected by the right check and nothing clean was flagged,
1 when the demo ran but the story did not hold (or a part broke on the way), 2 on usage errors, 3 when
the embedded broker or the store could not be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from skewguard.commands.common import EXIT_FINDING, console, reports_errors

if TYPE_CHECKING:
    from skewguard.demo.run import DemoResult


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("demo")(demo)


class _Bars:
    """The demo's progress drawn with rich: one bar per key, narration printed above the bars."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def task(self, key: str, description: str, total: float | None) -> None:
        if key in self.tasks:
            self.bars.reset(self.tasks[key], total=total, description=description)
        else:
            self.tasks[key] = self.bars.add_task(description, total=total)

    def update(
        self, key: str, *, advance: float = 0, completed: float | None = None, description: str | None = None
    ) -> None:
        task = self.tasks[key]
        if completed is not None:
            self.bars.update(task, completed=completed)
        if advance:
            self.bars.advance(task, advance)
        if description is not None:
            self.bars.update(task, description=description)

    def note(self, message: str) -> None:
        self.bars.console.print(message, highlight=False, soft_wrap=True, markup=False)


def _table(result: DemoResult) -> Table:
    table = Table(title="what was injected, and what caught it", show_lines=False)
    for header in ("injected problem", "injected", "detected", "by check", "alert"):
        table.add_column(header, overflow="fold")
    for row in result.rows:
        detected = Text(row.detected_at, style="green" if row.detected else "bold red")
        table.add_row(Text(row.problem), row.injected_at, detected, Text(row.check), row.alert_at)
    names = ", ".join(f"w{i}" for i in result.outcome.clean_windows)
    if result.outcome.clean_flags:
        flags = "; ".join(
            f"w{f.window} {f.stage.value} {f.check}:{f.subject}" for f in result.outcome.clean_flags
        )
        table.add_row(Text("nothing clean flagged"), names, Text("FAILED", style="bold red"), Text(flags), "")
    else:
        verdict = Text("no flag, no alert", style="green")
        table.add_row(Text("nothing clean flagged"), names, verdict, "every check, serving + labels", "")
    return table


def _evidence(result: DemoResult) -> None:
    """The stored reason behind each detection, and what else flagged in those windows."""
    for row in result.rows:
        if not row.evidence:
            continue
        console.print(
            Text.assemble((f"{row.check}: ", "bold"), row.evidence), highlight=False, soft_wrap=True
        )
        if row.also_flagged:
            also = ", ".join(row.also_flagged)
            console.print(f"  also flagged in those windows: {also}", highlight=False, soft_wrap=True)


@reports_errors
def demo(
    quick: bool = typer.Option(
        False, "--quick", help="Smaller numbers: the same story in well under a minute."
    ),
    out: Path = typer.Option(
        Path("skewguard-demo"), "--out", help="Directory for the store, model, reports and summary.json."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every generated request, label and model."),
) -> None:
    """Run the end-to-end demo: broker, retraining with the gate, monitor daemon, injected problems.

    Writes the results store, the model directory, an Evidently drift report, PNG effect plots and
    summary.json under --out, and ends with a table of what was injected and what detected it.
    Exit 0 when every injected problem was detected by the right check and nothing clean was flagged,
    1 when the story did not hold (or a part broke on the way), 2 on usage errors, 3 when the embedded
    broker or the store could not be used.
    """
    from skewguard.demo.run import DemoOptions, run_demo
    from skewguard.demo.scenario import FULL, QUICK

    options = DemoOptions(out=out, sizes=QUICK if quick else FULL, seed=seed)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        result = run_demo(options, _Bars(bars))
    console.print(_table(result))
    _evidence(result)
    if result.outcome.missing:
        console.print(
            f"[red]windows never judged:[/red] {'; '.join(result.outcome.missing)}", highlight=False
        )
    console.print(
        f"{result.records_logged:,} requests logged ({result.records_dropped} lost), "
        f"{result.labels_joined:,} delayed labels joined to their predictions; shadow candidate "
        f"{result.candidate_version} compared with production {result.model_version}",
        highlight=False,
        soft_wrap=True,
    )
    files = result.files
    for what, path in (
        ("drift report (HTML)", files.drift_html),
        ("drift effects (PNG)", files.effects_png),
        ("defaults (PNG)", files.defaults_png),
        ("results store", files.store),
        ("model directory", files.model_dir),
        ("summary", files.summary),
    ):
        if path is not None:
            console.print(f"{what}: {path}", highlight=False, soft_wrap=True)
    verdict = (
        "every injected problem detected, nothing clean flagged" if result.ok else "the story did not hold"
    )
    style = "green" if result.ok else "bold red"
    console.print(f"[{style}]{verdict}[/{style}] ({result.seconds:.0f} s)", highlight=False)
    if not result.ok:
        raise typer.Exit(EXIT_FINDING)
