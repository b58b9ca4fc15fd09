"""The ``skewguard`` command line: thin wiring from typer commands to the library.

Exit codes follow one convention across commands: 0 success / clean, 1 a finding (violations, a failed
gate), 2 usage or configuration error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from features import FeatureError, FeatureSet, FeatureState
from skewguard import __version__
from skewguard.errors import ConfigError, DataError, SkewguardError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

#: Exit codes shared by every command.
EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="skewguard",
    help="Catch training-serving skew, data and prediction drift, bad shadow models and unlearnable "
    "retraining runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"skewguard {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Catch training-serving skew, drift, bad shadow models and unlearnable retraining runs."""


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn skewguard and feature errors into one red line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, FeatureError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
        except SkewguardError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FINDING) from None

    return run


def _load_feature_set(reference: str) -> FeatureSet:
    from skewguard.config import import_object

    feature_set: FeatureSet = import_object(reference, expected=FeatureSet, what="feature set")
    return feature_set


def _load_state(path: Path | None) -> FeatureState | None:
    if path is None:
        return None
    try:
        return FeatureState.from_json(path.read_text())
    except OSError as exc:
        msg = f"cannot read feature state {str(path)!r}: {exc}"
        raise ConfigError(msg) from exc


FEATURES_OPTION = typer.Option(
    ..., "--features", help="The feature set, as 'package.module:ATTRIBUTE' (e.g. features.ctr:CTR_FEATURES)."
)


@app.command()
@_reports_errors
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

    feature_set = _load_feature_set(features)
    frame = read_frame(data)
    target = detect_target(frame, feature_set)
    lists = [s.name for s in feature_set.inputs.values() if s.type is InputType.TIMESTAMP_LIST]
    frame = decode_json_lists(frame, lists)
    suite = build_suite(feature_set, target, _load_state(state))
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


@app.command()
def demo() -> None:
    """Run the end-to-end demo: broker, traffic, gate, baseline, daemon, injected problems."""
    typer.echo("skewguard demo: the end-to-end demo is not built yet (see README, 'Status').")


def main() -> None:
    """Console-script entry point."""
    app()
