"""A rich table of the gate's checks, for terminals and CI logs.

Skipped checks get their own status and colour: showing them as passes would claim a guarantee
the gate did not check.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from skewguard.gate.report import CheckStatus, GateReport

_STYLE = {
    CheckStatus.PASSED: ("PASS", "green"),
    CheckStatus.FAILED: ("FAIL", "bold red"),
    CheckStatus.SKIPPED: ("SKIP", "yellow"),
}


def render_report_table(report: GateReport) -> Table:
    """One row per check (status, name, detail), the verdict and timing in the title."""
    verdict = "[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]"
    table = Table(
        title=f"overfit-batch gate ({report.task.value}): {verdict}",
        caption=f"{report.steps} steps, {report.seconds:.2f} s",
        show_lines=False,
    )
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        label, style = _STYLE[check.status]
        # Text, not markup: details contain things like ``layers[i]`` that rich would parse as tags.
        table.add_row(Text(label, style=style), Text(check.name.value), Text(check.detail))
    return table
