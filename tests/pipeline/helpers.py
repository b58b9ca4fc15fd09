"""Helpers for writing small, fast retraining configs (used by conftest and the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def config_tables(data_file: Path, models_dir: Path) -> dict[str, Any]:
    """A small, fast configuration for the demo model (tables as nested dicts)."""
    return {
        "model_name": "ctr",
        "models_dir": str(models_dir),
        "seed": 0,
        "data": {
            "features": "features.ctr:CTR_FEATURES",
            "files": [str(data_file)],
            "label": "click",
            "id_column": "request_id",
        },
        "model": {"factory": "skewguard.demo.model:build_ctr_model", "options": {"hidden": 16}},
        "gate": {"batch_size": 64, "lr": 0.01, "max_steps": 400},
        "training": {"batch_size": 256, "lr": 0.005, "max_epochs": 12, "patience": 3},
        "baseline": {"window_size": 300, "calibration_draws": 20},
    }


def write_toml(path: Path, tables: dict[str, Any]) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines.append(f"\n[{name}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path
