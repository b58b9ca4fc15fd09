"""``--help`` of the commands a pipeline or an operator scripts says what each exit code means."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from skewguard.cli import app


@pytest.mark.parametrize(
    "command",
    [["compare"], ["gate"], ["retrain"], ["validate"], ["monitor"], ["status"], ["demo"]],
    ids=" ".join,
)
def test_help_names_the_exit_codes(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert "Exit 0" in text and re.search(r"\b2 on (a )?(usage|configuration|config)", text), text
