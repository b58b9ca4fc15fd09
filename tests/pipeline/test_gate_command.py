"""``skewguard gate --config``: the table and diagnosis, JSON/PNG outputs, exit 0 / 1 / 2."""

from __future__ import annotations

import uuid
from pathlib import Path

from typer.testing import CliRunner

from skewguard.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE, app
from skewguard.gate import CheckName, GateReport

EXAMPLE = Path(__file__).resolve().parents[1] / "gate" / "example_gate.toml"

BUGGY_PIPELINE = """
import torch
from torch import nn


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(8, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.encoder(x)).detach())


def build_model() -> nn.Module:
    return Detached()


def one_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 8, generator=generator), torch.arange(16) % 4
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gate", *args])
    return result.exit_code, result.output


def test_passing_model_exits_0_and_writes_the_report_and_the_curve(tmp_path: Path) -> None:
    out, plot = tmp_path / "out" / "report.json", tmp_path / "curve.png"
    code, output = invoke("--config", str(EXAMPLE), "--out", str(out), "--plot", str(plot))
    assert code == EXIT_OK, output
    assert "PASSED" in output and "diagnosis:" in output
    report = GateReport.from_json(out.read_text())
    assert report.passed
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_failing_model_exits_1_naming_the_failed_check(tmp_path: Path) -> None:
    module = f"buggy_pipeline_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BUGGY_PIPELINE)
    config = tmp_path / "gate.toml"
    config.write_text(
        f'model = "{module}:build_model"\nbatch = "{module}:one_batch"\n'
        'loss = "cross_entropy"\ntask = "classification"\n'
    )
    out = tmp_path / "report.json"
    code, output = invoke("--config", str(config), "--out", str(out))
    assert code == EXIT_FINDING, output
    assert "FAILED" in output and "gradient_flow" in output and "encoder.weight" in output
    assert GateReport.from_json(out.read_text()).check(CheckName.GRADIENT_FLOW).passed is False


def test_config_errors_exit_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(
        'model = "m:f"\nbatch = "m:b"\nloss = "cross_entropy"\ntask = "classification"\nlr = 1\n'
    )
    code, output = invoke("--config", str(config))
    assert code == EXIT_USAGE and "'lr'" in output
    code, output = invoke("--config", str(EXAMPLE), "--plot", str(tmp_path / "curve.jpg"))
    assert code == EXIT_USAGE and "--plot" in output
