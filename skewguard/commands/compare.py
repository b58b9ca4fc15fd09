"""``skewguard compare REFERENCE CURRENT``: the batch user's drift check of two data files.

The reference file plays every training-side role (bins, baseline, calibration on held-out folds), so
nothing has to be built first; see :func:`skewguard.detect.compare.compare_frames`. Exit 0 when no
column drifted in any chunk, 1 when one did, 2 on usage errors, so the command can gate a pipeline.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from skewguard.commands.common import EXIT_FINDING, console, reports_errors
from skewguard.errors import ConfigError
from skewguard.results import json_bytes

if TYPE_CHECKING:
    from skewguard.detect import DriftPolicy
    from skewguard.detect.compare import ChunkResult, CompareResult


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command()(compare)


def parse_columns(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: names as a shell user types them, blanks ignored."""
    if text is None:
        return []
    return [name.strip() for name in text.split(",") if name.strip()]


def build_policy(alpha: float, min_count: int) -> DriftPolicy:
    """The drift policy from the command's options, a ConfigError naming the option when invalid."""
    from pydantic import ValidationError

    from skewguard.detect import DriftPolicy

    try:
        return DriftPolicy(alpha=alpha, min_count=min_count)
    except ValidationError as exc:
        options = {"alpha": "--alpha", "min_count": "--min-count"}
        problems = "; ".join(
            f"{options.get(str(error['loc'][0]), str(error['loc'][0])) if error['loc'] else 'policy'}: "
            f"{error['msg']}"
            for error in exc.errors(include_url=False)
        )
        msg = f"invalid drift policy: {problems}"
        raise ConfigError(msg) from None


def _number(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "-"


def _chunk_table(chunk: ChunkResult) -> Table:
    verdict = chunk.verdict
    drifted = len(verdict.drifted)
    stop = chunk.start + chunk.rows - 1
    status = f"[red]{drifted} drifted[/red]" if drifted else "[green]no drift[/green]"
    table = Table(
        title=f"chunk {chunk.index}: rows {chunk.start:,}–{stop:,} ({chunk.rows:,} rows), {status}",
        title_justify="left",
    )
    table.add_column("feature")
    table.add_column("drifted")
    table.add_column("method")
    table.add_column("effect", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("p", justify="right")
    for feature in verdict.features:
        table.add_row(
            feature.name,
            "[red]yes[/red]" if feature.drifted else "no",
            feature.method.value,
            _number(feature.effect, ".4f"),
            _number(feature.threshold, ".4f"),
            _number(feature.p_value, ".3g"),
        )
    return table


def _print_tables(result: CompareResult) -> None:
    for chunk in result.chunks:
        console.print(_chunk_table(chunk))
    drifted_chunks = [c for c in result.chunks if c.verdict.any_drift]
    if drifted_chunks:
        columns = sorted({name for c in drifted_chunks for name in c.verdict.drifted})
        console.print(
            f"[red]drift[/red] in {len(drifted_chunks)} of {len(result.chunks)} chunk(s): "
            f"{', '.join(columns)}",
            highlight=False,
        )
    else:
        console.print(f"[green]no drift[/green] in {len(result.chunks)} chunk(s)", highlight=False)


@reports_errors
def compare(
    reference: Path = typer.Argument(..., help="Reference data (csv or parquet): the 'training' side."),
    current: Path = typer.Argument(..., help="Current data (csv or parquet) to judge against it."),
    categorical: str | None = typer.Option(
        None,
        "--categorical",
        help="Comma-separated columns to treat as categories (e.g. integer codes); by default only "
        "non-numeric columns are categorical.",
    ),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        help="Judge the current file in consecutive chunks of this many rows (the last may be shorter); "
        "thresholds are calibrated for that size. Default: the whole file as one chunk.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON document: {"chunks": [{"index", "rows", "features": {NAME: {"drifted", '
        '"method", "effect", "threshold", "p_value"}}}]} (non-finite numbers as null).',
    ),
    alpha: float = typer.Option(0.01, "--alpha", help="Benjamini–Hochberg false discovery rate."),
    min_count: int = typer.Option(
        100, "--min-count", help="Fewest values a column needs in a chunk before it may be flagged."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration's fold split and draws."),
) -> None:
    """Compare two data files column by column for drift (reference vs current, optionally in chunks).

    A column drifts when its effect size exceeds a threshold calibrated on held-out reference rows AND
    its test survives Benjamini–Hochberg across the chunk's columns, with at least --min-count values.
    Exit 0 when nothing drifted, 1 when a column drifted in any chunk, 2 on usage errors.
    """
    from skewguard.datafiles import read_frame
    from skewguard.detect.compare import compare_frames

    if chunk_size is not None and chunk_size < 1:
        msg = f"--chunk-size must be a positive number of rows, got {chunk_size}"
        raise ConfigError(msg)
    policy = build_policy(alpha, min_count)
    reference_df = read_frame(reference)
    current_df = read_frame(current)
    result = compare_frames(
        reference_df,
        current_df,
        categorical=parse_columns(categorical),
        chunk_size=chunk_size,
        policy=policy,
        seed=seed,
    )
    if as_json:
        typer.echo(json_bytes(result.to_json_dict()).decode())
    else:
        _print_tables(result)
    if result.any_drift:
        raise typer.Exit(EXIT_FINDING)
