"""``skewguard monitor``: option problems are usage errors (exit 2), not tracebacks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from skewguard.cli import app
from skewguard.commands.common import EXIT_USAGE


def test_an_unknown_log_level_is_a_usage_error_naming_the_levels(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("")
    result = CliRunner().invoke(app, ["monitor", "--config", str(config), "--log-level", "bogus"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--log-level: expected one of" in result.output and "DEBUG" in result.output
    assert "'bogus'" in result.output and "Traceback" not in result.output
