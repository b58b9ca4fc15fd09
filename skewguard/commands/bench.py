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
    rows: int = typer.Option(
        100_000, "--rows", min=1, help="Rows in the reference and in the current frame."
    ),
    features: int = typer.Option(50, "--features", min=1, help="Columns (70 % numeric, 30 % categorical)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic data."),
    repeats: int = typer.Option(
        1, "--repeats", min=1, help="Timed runs per side; the best time of each counts."
    ),
) -> None:
    """Drift detection vs Evidently's DataDriftPreset on the same frames: speed and correctness.

    skewguard's time is that of judging the current frame; building the reference side (bins, profile,
    calibration) is reported apart as skewguard_setup_s, as a baseline is built once per training run.
    """
    from skewguard.bench.drift import bench_drift

    result = bench_drift(rows=rows, features=features, seed=seed, repeats=repeats)
    _emit(result, as_json, "skewguard bench drift")


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


@bench_app.command("stream")
@reports_errors
def stream(
    as_json: bool = JSON_OPTION,
    records: int = typer.Option(100_000, "--records", help="Records produced (once per message kind)."),
    features: int = typer.Option(20, "--features", help="Features per record (synthetic feature set)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Records per batch-envelope message."),
    partitions: int = typer.Option(4, "--partitions", help="Partitions of each serving topic."),
    windows: int = typer.Option(5, "--windows", help="Event-time windows the records span."),
    repeats: int = typer.Option(1, "--repeats", help="Timed runs per side; the best rate of each counts."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic data."),
) -> None:
    """Daemon end-to-end throughput vs raw kafka-python consumption of the same messages (embedded broker)."""
    from skewguard.bench.stream import bench_stream

    progress = None if as_json else (lambda text: console.print(f"[dim]{text}[/dim]"))
    result = bench_stream(
        records=records,
        features=features,
        batch_size=batch_size,
        partitions=partitions,
        windows=windows,
        repeats=repeats,
        seed=seed,
        progress=progress,
    )
    _emit(result, as_json, "skewguard bench stream")


@bench_app.command("shadow")
@reports_errors
def shadow(
    as_json: bool = JSON_OPTION,
    requests: int = typer.Option(10_000, "--requests", help="Timed requests per arm (shadow off, on)."),
    rate: float = typer.Option(500.0, "--rate", help="Requests per second, on a steady schedule."),
    slowdown: float = typer.Option(5.0, "--slowdown", help="Candidate time per request / production's."),
    workers: int = typer.Option(1, "--workers", help="Shadow worker threads."),
    batch_size: int = typer.Option(32, "--batch-size", help="Most requests a candidate scores per call."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", help="Longest wait for a batch to fill."),
    threads: int = typer.Option(1, "--threads", help="torch threads (1 is fastest on a shared 2-core box)."),
) -> None:
    """Production request latency with shadow mode off vs on (a 5x slower candidate), at a steady rate."""
    from skewguard.bench.shadow import bench_shadow

    progress = None if as_json else (lambda text: console.print(f"[dim]{text}[/dim]"))
    result = bench_shadow(
        requests=requests,
        rate_per_s=rate,
        slowdown=slowdown,
        workers=workers,
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        threads=threads,
        progress=progress,
    )
    _emit(result, as_json, "skewguard bench shadow")


@bench_app.command("scale")
@reports_errors
def scale(
    as_json: bool = JSON_OPTION,
    records: int = typer.Option(40_000, "--records", min=1_000, help="Records in the stream (>= 1000)."),
    partitions: int = typer.Option(8, "--partitions", min=8, help="Partitions of the serving log (>= 8)."),
    count: int | None = typer.Option(
        None, "--count", min=1, help="Count windows of this many records instead of 60 s event-time windows."
    ),
    labels: bool = typer.Option(
        False,
        "--labels",
        help="Also a delayed label per request (event-time windows): the label stage must match too.",
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Shared store URL (default: PostgreSQL on 127.0.0.1:5432/test, or $SKEWGUARD_BENCH_STORE).",
    ),
) -> None:
    """One daemon vs three in one consumer group (one SIGKILLed mid-run): identical results and throughput."""
    from skewguard.bench.scale import DEFAULT_STORE, bench_scale

    result = bench_scale(
        records=records, partitions=partitions, count=count, labels=labels, store_url=store or DEFAULT_STORE
    )
    _emit(result, as_json, "skewguard bench scale")
    if not result["identical_results"]:
        raise typer.Exit(EXIT_FINDING)
