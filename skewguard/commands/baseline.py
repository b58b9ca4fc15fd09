"""``skewguard baseline build``: the training baseline the monitor compares serving traffic with."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.inputs import InputType
from skewguard.commands.common import FEATURES_OPTION, console, load_feature_set, reports_errors

if TYPE_CHECKING:
    from skewguard.baseline import PredictionKind

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
    metric: list[str] = typer.Option(
        [],
        "--metric",
        help=(
            "The model's metric on its training holdout, NAME=VALUE or NAME=VALUE+-SE (repeat for "
            "several), e.g. auc=0.81+-0.006: what the daemon compares each window's label-joined metric "
            "with. SE is the holdout metric's standard error (its sampling error: a small holdout knows "
            "its metric roughly); without one the value is taken as exact. Names: auc, log_loss, "
            "accuracy (score); rmse, mae (value); accuracy, log_loss (class; log_loss is judged on the "
            "predictions logged as class probabilities). Without it, windows report their metrics but "
            "never flag a degradation."
        ),
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
    metrics, metric_errors = _holdout_metrics(metric, kind, prediction_column, label_column)
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
            metrics=metrics,
            metric_errors=metric_errors,
            progress=lambda phase, rows: bar.advance(tasks[phase], rows),
        )
    baseline.save(out, feature_set)
    console.print(
        f"baseline for model [bold]{model}[/bold]: {baseline.rows:,} reference rows, "
        f"{baseline.holdout_rows:,} held out for calibration, state {baseline.state_hash[:12]} → {out}"
    )


#: Metrics that are shares (the others are non-negative losses and errors).
_SHARES = frozenset({"auc", "accuracy"})


def _holdout_metrics(
    given: list[str], kind: PredictionKind, prediction_column: str | None, label_column: str | None
) -> tuple[dict[str, float], dict[str, float]]:
    """``--metric NAME=VALUE[+-SE]`` options as the baseline's holdout metrics and their standard errors.

    A ConfigError names a bad option. ``±`` is accepted for ``+-``.
    """
    from skewguard.errors import ConfigError
    from skewguard.labels.performance import METRICS

    if given and (prediction_column is None or label_column is None):
        msg = "--metric needs --prediction-column and --label-column (it is compared with labelled windows)"
        raise ConfigError(msg)
    known = list(METRICS[kind])
    metrics: dict[str, float] = {}
    errors: dict[str, float] = {}
    for option in given:
        name, sep, text = option.partition("=")
        name = name.strip()
        value_text, plus_minus, error_text = text.replace("±", "+-").partition("+-")
        value = _number(value_text) if sep else math.nan
        error = _number(error_text) if plus_minus else 0.0
        if name not in known or not math.isfinite(value) or not math.isfinite(error):
            msg = (
                f"--metric {option!r}: expected NAME=NUMBER or NAME=NUMBER+-SE with NAME one of {known} "
                f"(a {kind.value} model)"
            )
            raise ConfigError(msg)
        share = name in _SHARES
        if value < 0.0 or (share and value > 1.0):
            expected = "a share in [0, 1], not a percentage" if share else "a loss or error >= 0"
            msg = f"--metric {option!r}: {name} is {expected}"
            raise ConfigError(msg)
        if error < 0.0:
            msg = f"--metric {option!r}: the standard error after +- must be >= 0"
            raise ConfigError(msg)
        metrics[name] = value
        if error > 0.0:
            errors[name] = error
    return metrics, errors


def _number(text: str) -> float:
    """``text`` as a float; NaN when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan
