"""What every command shares: consoles, exit codes, error reporting, loading user references."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from features import FeatureError, FeatureSet, FeatureState
from skewguard.config import import_object
from skewguard.errors import BrokerError, ConfigError, DataError, SkewguardError, StoreError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

#: Exit codes shared by every command: a store or broker that cannot be used is neither a finding nor
#: a usage error, and a pipeline must be able to tell "the gate failed the model" from "no database".
EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn skewguard and feature errors into one red line and their exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, FeatureError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
        except (StoreError, BrokerError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except SkewguardError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FINDING) from None

    return run


def load_feature_set(reference: str) -> FeatureSet:
    """Resolve a ``module:ATTR`` reference that must name a ``FeatureSet``."""
    feature_set: FeatureSet = import_object(reference, expected=FeatureSet, what="feature set")
    return feature_set


def load_state(path: Path | None) -> FeatureState | None:
    """Load a FeatureState JSON file when one is given (ConfigError naming the file otherwise)."""
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
