"""``skewguard validate``: check a data file against the suite generated from the feature declarations."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from skewguard.commands.common import (
    EXIT_FINDING,
    FEATURES_OPTION,
    console,
    load_feature_set,
    load_state,
    reports_errors,
)


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command()(validate)


@reports_errors
def validate(
    features: str = FEATURES_OPTION,
    data: Path = typer.Option(
        ..., "--data", help="A csv or parquet file of raw inputs or computed features."
    ),
    state: Path | None = typer.Option(
        None, "--state", help="FeatureState JSON; adds the fitted category vocabularies to the checks."
    ),
) -> None:
    """Check a data file against the expectation suite generated from the feature declarations.

    Exit 0 when clean, 1 when there are violations, 2 on usage errors.
    """
    from features.inputs import InputType
    from skewguard.datafiles import decode_json_lists, read_frame
    from skewguard.validation import build_suite, detect_target, validate_frame

    feature_set = load_feature_set(features)
    frame = read_frame(data)
    target = detect_target(frame, feature_set)
    lists = [s.name for s in feature_set.inputs.values() if s.type is InputType.TIMESTAMP_LIST]
    frame = decode_json_lists(frame, lists)
    suite = build_suite(feature_set, target, load_state(state))
    report = validate_frame(frame, suite, feature_set=feature_set, target=target)
    if report.ok:
        console.print(
            f"[green]clean[/green]: {report.rows} rows of {target.value} passed {report.checked} checks "
            f"({report.suite})"
        )
        return
    table = Table(title=f"{len(report.violations)} violation(s) in {data.name} ({report.suite})")
    for header in ("column", "expectation", "rows", "examples"):
        table.add_column(header)
    for violation in report.violations:
        count = "" if violation.unexpected_count is None else str(violation.unexpected_count)
        examples = ", ".join(repr(v) for v in violation.examples)
        table.add_row(violation.column, violation.detail, count, examples)
    console.print(table)
    raise typer.Exit(EXIT_FINDING)
