"""Gate config files: the example runs end to end; every config problem is a ConfigError naming the key."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from skewguard.cli import EXIT_FINDING, EXIT_OK, app
from skewguard.commands import gate as commands_gate
from skewguard.errors import ConfigError
from skewguard.gate import CheckName, GateReport, load_gate_config, run_gate_from_config
from skewguard.gate.config import BuiltinLoss, prepare_gate_job
from tests.gate import example_pipeline

HERE = Path(__file__).parent
EXAMPLE = HERE / "example_gate.toml"
PIPELINE = "tests.gate.example_pipeline"


@pytest.fixture(scope="module")
def example_report() -> GateReport:
    return run_gate_from_config(EXAMPLE)


def test_example_config_runs_the_gate_and_passes(example_report: GateReport):
    assert example_report.passed, example_report.diagnosis
    assert example_report.task.value == "classification"
    assert example_report.check(CheckName.OVERFIT).passed


def test_config_run_is_reproducible_and_leaves_global_rng_alone(example_report: GateReport):
    torch_state = torch.get_rng_state()
    python_state = random.getstate()
    job = prepare_gate_job(EXAMPLE)
    again = prepare_gate_job(EXAMPLE)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    first_weights = [p.detach() for p in job.model.parameters()]
    assert all(
        torch.equal(a, b.detach()) for a, b in zip(first_weights, again.model.parameters(), strict=True)
    )
    assert job.options.lr == 0.001 and job.options.max_steps == 500


def _write(tmp_path: Path, text: str, name: str = "gate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BASE = f'model = "{PIPELINE}:build_model"\nbatch = "{PIPELINE}:one_batch"\n'
MSE = 'loss = "mse"\ntask = "regression"\n'


def _with_model(attr: str) -> str:
    return f'model = "{PIPELINE}:{attr}"\nbatch = "{PIPELINE}:one_batch"\n' + MSE


def test_yaml_config_with_a_custom_loss_class_and_gate_options(tmp_path: Path):
    path = _write(
        tmp_path,
        f"model: {PIPELINE}:build_model\n"
        f"batch: {PIPELINE}:one_batch\n"
        "loss: torch.nn:CrossEntropyLoss\n"
        "task: classification\n"
        "gate:\n  max_steps: 300\n  allow_no_grad: ['nothing.*']\n",
        "gate.yaml",
    )
    config = load_gate_config(path)
    assert config.gate.max_steps == 300
    report = run_gate_from_config(path)
    assert report.passed, report.diagnosis


def test_builtin_loss_names_build_the_matching_torch_losses(tmp_path: Path):
    assert [b.value for b in BuiltinLoss] == ["cross_entropy", "mse", "bce_with_logits"]
    path = _write(tmp_path, BASE + 'loss = "cross_entropy"\ntask = "classification"\nlabel_smoothing = 0.1\n')
    job = prepare_gate_job(path)
    assert isinstance(job.loss_fn, torch.nn.CrossEntropyLoss)
    assert job.loss_fn.label_smoothing == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + 'loss = "cross_entropy"\n', r"key 'task': required key is missing"),
        (
            BASE + 'loss = "cross_entropy"\ntask = "ranking"\n',
            r"key 'task': Input should be 'classification'",
        ),
        (BASE + 'loss = "hinge"\ntask = "classification"\n', r"key 'loss': .*expected one of"),
        (BASE + 'loss = "mse"\ntask = "regression"\ncolour = "red"\n', r"key 'colour': unknown key"),
        (BASE + 'loss = "mse"\ntask = "regression"\n[gate]\nlr = -1\n', r"key 'gate\.lr': .*greater than 0"),
        (BASE + 'loss = "mse"\ntask = "regression"\n[gate]\nmax_steps = 3\n', r"key 'gate\.max_steps'"),
        (
            'model = "build_model"\nbatch = "x:y"\nloss = "mse"\ntask = "regression"\n',
            r"key 'model': .*'module:callable'",
        ),
        (
            'model = "no_such_module_xyz:f"\nbatch = "x:y"\nloss = "mse"\ntask = "regression"\n',
            r"key 'model'",
        ),
        (_with_model("missing"), r"key 'model' = .*has no attribute 'missing'"),
        (_with_model("NOT_CALLABLE"), r"key 'model' = .*expected a callable"),
        (_with_model("not_a_model"), r"key 'model' = .*expected it to return an nn\.Module"),
        (_with_model("broken_factory"), r"key 'model' = .*raised FileNotFoundError: weights file missing"),
        (
            f'model = "{PIPELINE}:build_model"\nbatch = "{PIPELINE}:three_tensors"\nloss = "mse"\n'
            'task = "regression"\n',
            r"key 'batch' = .*\(inputs, targets\)",
        ),
        (BASE + 'loss = "mse"\ntask = "regression"\nlabel_smoothing = 0.1\n', r"key 'label_smoothing'"),
        (
            BASE + 'loss = "cross_entropy"\ntask = "classification"\n[gate]\ndeterminism_steps = 900\n',
            r"\[gate\] determinism_steps=900",
        ),
        ('model = "a:b"\nbatch = \n', r"invalid TOML"),
        (BASE + 'loss = "cross_entropy"\ntask = "classification"\noutputs = "scores"\n', r"key 'outputs'"),
        (
            BASE + 'loss = "cross_entropy"\ntask = "classification"\noutputs = "values"\n',
            r"outputs='values' with integer class targets",
        ),
        (
            BASE
            + 'loss = "cross_entropy"\ntask = "classification"\n[gate]\nseed = 99999999999999999999999\n',
            r"key 'gate.seed': Input should be less than",
        ),
    ],
)
def test_config_problems_raise_config_error_naming_the_key(tmp_path: Path, text: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        run_gate_from_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "raised"),
    [
        (_with_model("build_model_with_a_shape_bug"), "model(inputs) raised RuntimeError: mat1 and mat2"),
        (BASE + 'loss = "mse"\ntask = "classification"\n', "the loss raised RuntimeError"),
    ],
)
def test_a_model_or_loss_that_raises_fails_the_gate_with_exit_1_not_a_config_error(
    tmp_path: Path, text: str, raised: str
):
    """A crash on the batch is a broken pipeline, the gate's to catch: exit 1, the exception named."""
    config = _write(tmp_path, text)
    report = run_gate_from_config(config)
    assert not report.passed
    assert [c.name for c in report.failed_checks] == [CheckName.INIT_LOSS]
    assert raised in report.check(CheckName.INIT_LOSS).detail
    assert f"Check init_loss failed: {raised}" in report.diagnosis
    result = CliRunner().invoke(app, ["gate", "--config", str(config)])
    assert result.exit_code == EXIT_FINDING, result.output
    assert raised in " ".join(result.output.split())


def test_threads_are_set_for_the_factories_and_the_gate_and_the_callers_count_comes_back(tmp_path: Path):
    """The CLI passes --threads to the gate's runner instead of importing torch to set them itself."""
    config = _write(
        tmp_path,
        f'model = "{PIPELINE}:build_model_recording_threads"\nbatch = "{PIPELINE}:one_batch"\n'
        'loss = "cross_entropy"\ntask = "classification"\n[gate]\nmax_steps = 10\ndeterminism_steps = 2\n',
    )
    before = torch.get_num_threads()
    example_pipeline.THREADS_SEEN.clear()
    run_gate_from_config(config, threads=before + 1)
    assert set(example_pipeline.THREADS_SEEN) == {before + 1} and len(example_pipeline.THREADS_SEEN) > 1
    assert torch.get_num_threads() == before
    example_pipeline.THREADS_SEEN.clear()
    result = CliRunner().invoke(app, ["gate", "--config", str(config), "--threads", str(before + 2)])
    assert result.exit_code in {EXIT_OK, EXIT_FINDING}, result.output
    assert set(example_pipeline.THREADS_SEEN) == {before + 2}
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads=0"):
        run_gate_from_config(config, threads=0)


def test_the_gate_command_leaves_torch_to_the_gate():
    """DESIGN: torch is imported only in gate/, pipeline/ and the demo model, never by a command."""
    source = Path(commands_gate.__file__).read_text(encoding="utf-8")
    imported = [
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    ]
    assert imported and not any(name == "torch" or name.startswith("torch.") for name in imported)


def test_missing_file_wrong_extension_and_non_mapping_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_gate_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"expected a \.toml, \.yaml or \.yml extension"):
        load_gate_config(_write(tmp_path, "{}", "gate.json"))
    with pytest.raises(ConfigError, match="expected a table of keys"):
        load_gate_config(_write(tmp_path, "- 1\n- 2\n", "gate.yml"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_gate_config(_write(tmp_path, "a: [1,\n", "gate.yaml"))
