"""The ``skewguard`` command line: thin wiring from typer commands to the library.

Each command lives in its own module under ``skewguard.commands`` and registers itself here. Exit codes
follow one convention across commands: 0 success / clean, 1 a finding (violations, a failed gate), 2 usage
or configuration error, 3 the results store or the Kafka broker could not be used.
"""

from __future__ import annotations

import typer

from skewguard import __version__
from skewguard.commands import (
    baseline,
    bench,
    compare,
    demo,
    gate,
    monitor,
    report,
    retrain,
    shadow,
    validate,
)
from skewguard.commands.common import EXIT_FINDING, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

__all__ = ["EXIT_FINDING", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    name="skewguard",
    help="Catch training-serving skew, data and prediction drift, bad shadow models and unlearnable "
    "retraining runs.",
    no_args_is_help=True,
    add_completion=False,
    # Markdown: a docstring paragraph is reflowed to the terminal, not broken where the source wrapped.
    rich_markup_mode="markdown",
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


for _module in (validate, baseline, compare, bench, monitor, report, gate, retrain, shadow, demo):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
