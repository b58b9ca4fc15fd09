"""Benchmark: the overfit-batch gate on every zoo model, timed, with its verdict checked.

A verdict counts as correct only if ``passed`` equals the expected verdict AND, for a bug, the
expected check is among the failed ones (failing for the wrong reason is not a catch).

Timing runs torch with one intra-op thread by default: the zoo's models are tiny, so threading
costs more in synchronisation than it gains, and one thread leaves the machine's other core free.
The previous thread count is restored afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from skewguard.errors import ConfigError
from skewguard.gate.report import GateReport
from skewguard.gate.zoo import ZooEntry, run_case, verdict_is_correct, zoo


@dataclass(frozen=True)
class GateBenchRow:
    """One zoo model's outcome: verdict, expectation, cost."""

    name: str
    passed: bool
    expected: bool
    correct: bool
    expected_failed_check: str | None
    failed_checks: list[str]
    seconds: float
    steps: int


@dataclass(frozen=True)
class GateBenchResult:
    """All rows plus the two headline figures: verdicts right, slowest model."""

    models: list[GateBenchRow]
    correct_verdicts: int
    total: int
    max_seconds: float
    total_seconds: float
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (the shape ``skewguard bench gate --json`` prints)."""
        return asdict(self)


def _row(entry: ZooEntry, report: GateReport, seconds: float) -> GateBenchRow:
    return GateBenchRow(
        name=entry.name,
        passed=report.passed,
        expected=entry.expected_pass,
        correct=verdict_is_correct(entry, report),
        expected_failed_check=None
        if entry.expected_failed_check is None
        else entry.expected_failed_check.value,
        failed_checks=[c.name.value for c in report.failed_checks],
        seconds=round(seconds, 4),
        steps=report.steps,
    )


def run_gate_bench(
    *,
    threads: int = 1,
    names: Sequence[str] | None = None,
    on_row: Callable[[GateBenchRow], None] | None = None,
) -> GateBenchResult:
    """Run the gate on the zoo (or the named subset) and collect typed rows."""
    if threads < 1:
        msg = f"threads={threads}: expected at least 1"
        raise ConfigError(msg)
    entries = zoo()
    if names:
        known = {e.name for e in entries}
        unknown = [n for n in names if n not in known]
        if unknown:
            msg = f"unknown zoo model(s) {unknown}; known: {sorted(known)}"
            raise ConfigError(msg)
        entries = [e for e in entries if e.name in set(names)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows: list[GateBenchRow] = []
    started = time.perf_counter()
    try:
        for entry in entries:
            case = entry.build()
            t0 = time.perf_counter()
            report = run_case(case)
            row = _row(entry, report, time.perf_counter() - t0)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        torch.set_num_threads(previous)
    return GateBenchResult(
        models=rows,
        correct_verdicts=sum(r.correct for r in rows),
        total=len(rows),
        max_seconds=max((r.seconds for r in rows), default=0.0),
        total_seconds=round(time.perf_counter() - started, 4),
        threads=threads,
    )


def bench_gate(*, threads: int = 1, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The gate benchmark as a JSON-ready dict: models, correct_verdicts, total, max_seconds."""
    return run_gate_bench(threads=threads, names=names).to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skewguard.bench.gate [--json]``: progress per model, then a summary (exit 1 if wrong)."""
    parser = argparse.ArgumentParser(description="Run the overfit-batch gate on every zoo model.")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if args.json:
        result = run_gate_bench(threads=args.threads)
        print(json.dumps(result.to_dict()))
        return 0 if result.correct_verdicts == result.total else 1

    from rich.console import Console
    from rich.table import Table

    console = Console()

    def show(row: GateBenchRow) -> None:
        mark = "[green]ok[/]" if row.correct else "[bold red]WRONG[/]"
        verdict = "pass" if row.passed else "fail: " + ", ".join(row.failed_checks)
        console.print(
            f"{mark} {row.name:<32} {verdict}  ({row.steps} steps, {row.seconds:.2f} s)", soft_wrap=True
        )

    with console.status("running the gate on the zoo ..."):
        result = run_gate_bench(threads=args.threads, on_row=show)
    table = Table(title="overfit-batch gate benchmark")
    for column in ("correct verdicts", "total", "max seconds", "total seconds", "threads"):
        table.add_column(column)
    table.add_row(
        str(result.correct_verdicts),
        str(result.total),
        f"{result.max_seconds:.2f}",
        f"{result.total_seconds:.2f}",
        str(result.threads),
    )
    console.print(table)
    return 0 if result.correct_verdicts == result.total else 1


if __name__ == "__main__":
    raise SystemExit(main())
