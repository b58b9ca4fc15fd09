"""``skewguard baseline build``: the training baseline the monitor compares serving traffic with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.inputs import InputType
from skewguard.commands.common import FEATURES_OPTION, console, load_feature_set, reports_errors

baseline_app = typer.Typer(help="Build and inspect training baselines.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``baseline`` command group to the root app."""
    app.add_typer(baseline_app, name="baseline")


@baseline_app.command("build")
@reports_errors
def build(
    features: str = FEATURES_OPTION,
    data: list[Path] = typer.Option(
        ..., "--data", help="Raw training data (csv/parquet); repeat for several files."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write the baseline into."),
    model: str = typer.Option(..., "--model", help="Model name the serving log uses for this model."),
    prediction_column: str | None = typer.Option(
        None, "--prediction-column", help="Column of the model's training/holdout predictions, if any."
    ),
    prediction_kind: str = typer.Option(
        "score", "--prediction-kind", help="score (binary probability), value (regression) or class."
    ),
    label_column: str | None = typer.Option(
        None, "--label-column", help="Column of the true labels, if any."
    ),
    window_size: int = typer.Option(
        5000, "--window-size", help="Rows per serving window; sizes calibration."
    ),
    chunk_rows: int = typer.Option(200_000, "--chunk-rows", help="Rows read per chunk (memory bound)."),
    fit_rows: int = typer.Option(
        200_000, "--fit-rows", help="Uniform sample size for fitting state and bins."
    ),
) -> None:
    """Build a baseline: FeatureState, training Profile, calibrated thresholds and GX suites.

    Reads the data twice in chunks, so files larger than memory work.
    """
    from skewguard.baseline import BaselineOptions, PredictionKind, build_baseline
    from skewguard.datafiles import count_rows, decode_json_lists, iter_chunks
    from skewguard.errors import ConfigError

    feature_set = load_feature_set(features)
    try:
        kind = PredictionKind(prediction_kind)
    except ValueError:
        msg = f"--prediction-kind must be one of {[k.value for k in PredictionKind]}, got {prediction_kind!r}"
        raise ConfigError(msg) from None
    lists = [s.name for s in feature_set.inputs.values() if s.type is InputType.TIMESTAMP_LIST]

    def chunks() -> Iterator[pd.DataFrame]:
        for path in data:
            for chunk in iter_chunks(path, chunk_rows):
                yield decode_json_lists(chunk, lists)

    counts = [count_rows(path) for path in data]
    total = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks = {
            "sample": bar.add_task("pass 1/2: sampling for fit", total=total),
            "profile": bar.add_task("pass 2/2: profiling", total=total),
        }
        baseline = build_baseline(
            feature_set,
            chunks,
            model=model,
            prediction_column=prediction_column,
            prediction_kind=kind,
            label_column=label_column,
            options=BaselineOptions(window_size=window_size, fit_rows=fit_rows),
            progress=lambda phase, rows: bar.advance(tasks[phase], rows),
        )
    baseline.save(out, feature_set)
    console.print(
        f"baseline for model [bold]{model}[/bold]: {baseline.rows:,} reference rows, "
        f"{baseline.holdout_rows:,} held out for calibration, state {baseline.state_hash[:12]} → {out}"
    )
