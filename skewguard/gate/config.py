"""Gate config files (TOML or YAML): name a model factory, a batch and a loss; run the gate.

Example (TOML)::

    model = "my_pipeline:build_model"      # callable -> torch.nn.Module
    batch = "my_pipeline:one_batch"        # callable -> (inputs, targets)
    loss = "cross_entropy"                 # or mse, bce_with_logits, or "module:callable"
    task = "classification"                # classification | regression | sequence
    causal = false
    # train_step = "my_pipeline:step"      # optional: (model, inputs, targets, loss_fn, optimizer) -> loss
    # optimizer = "my_pipeline:make_opt"   # optional: (model, lr) -> torch.optim.Optimizer

    [gate]
    lr = 1e-3
    max_steps = 500

The model and batch factories are called with torch, numpy and ``random`` seeded from
``[gate].seed`` (global RNG state restored afterwards). ``module:callable`` names are imported
with the config file's directory and the working directory on ``sys.path`` (for the duration of
the import), so a config can sit next to the pipeline it checks. Every problem (missing file, bad
syntax, unknown key, wrong type, unimportable name, a factory that raises or returns the wrong
thing) becomes a :class:`~skewguard.errors.ConfigError` whose message names the key and what was
expected; the CLI maps it to exit code 2. A model or loss that raises while the gate runs it is not
a config problem but a failed gate (exit 1): the failed check names the exception.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from skewguard.config import describe_validation_error, read_config_document
from skewguard.errors import ConfigError, GateError
from skewguard.gate.checks import LossFn
from skewguard.gate.gate import (
    GateOptions,
    OptimizerFactory,
    OverfitGate,
    TrainStep,
    preserved_random_state,
    seed_everything,
    torch_threads,
)
from skewguard.gate.report import GateReport, Outputs, Task

_SPEC_HELP = "'module:callable' (e.g. 'my_pipeline:build_model')"


class BuiltinLoss(StrEnum):
    """Losses a config can name without writing code."""

    CROSS_ENTROPY = "cross_entropy"
    MSE = "mse"
    BCE_WITH_LOGITS = "bce_with_logits"


def _is_spec(value: str) -> bool:
    module, sep, attr = value.partition(":")
    parts = [*module.split("."), *attr.split(".")]
    return bool(sep) and all(p.isidentifier() for p in parts)


class GateSection(BaseModel):
    """The ``[gate]`` table: options of :class:`~skewguard.gate.gate.OverfitGate`."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    max_steps: int = Field(default=500, ge=10, le=1_000_000)
    loss_floor: float = Field(default=0.0, allow_inf_nan=False)
    allow_no_grad: list[str] = Field(default_factory=list)
    allow_frozen: list[str] = Field(default_factory=list)
    seed: int = Field(default=0, ge=0, lt=2**63)  # (torch.manual_seed takes a signed 64-bit int)
    lr_ladder: list[float] = Field(default_factory=lambda: [3.0, 1.0 / 3.0])
    init_loss_tolerance: float = Field(default=0.10, gt=0, le=1)
    determinism_steps: int = Field(default=5, ge=2)

    @field_validator("lr_ladder")
    @classmethod
    def _positive_factors(cls, value: list[float]) -> list[float]:
        if any(not f > 0 for f in value):
            msg = "expected learning-rate factors > 0"
            raise ValueError(msg)
        return value

    def options(self, optimizer_factory: Any = None) -> GateOptions:
        """The gate's options as this section sets them (GateError for a combination the gate refuses)."""
        return GateOptions(
            optimizer_factory=optimizer_factory,
            lr=self.lr,
            max_steps=self.max_steps,
            loss_floor=self.loss_floor,
            allow_no_grad=tuple(self.allow_no_grad),
            allow_frozen=tuple(self.allow_frozen),
            seed=self.seed,
            lr_ladder=tuple(self.lr_ladder),
            init_loss_tolerance=self.init_loss_tolerance,
            determinism_steps=self.determinism_steps,
        )


class GateConfig(BaseModel):
    """A gate config file's contents, validated."""

    model_config = ConfigDict(extra="forbid")

    model: str
    batch: str
    loss: str
    task: Task
    causal: bool = False
    train_step: str | None = None
    optimizer: str | None = None
    pretrained: bool = False
    allow_batch_coupling: bool = False
    ignore_index: int = -100
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: What the model's outputs are to the loss; "auto" reads it from the loss (a custom loss: probed).
    outputs: Outputs = Outputs.AUTO
    gate: GateSection = Field(default_factory=GateSection)

    @field_validator("model", "batch", "train_step", "optimizer")
    @classmethod
    def _spec(cls, value: str | None) -> str | None:
        if value is not None and not _is_spec(value):
            msg = f"expected {_SPEC_HELP}"
            raise ValueError(msg)
        return value

    @field_validator("loss")
    @classmethod
    def _loss(cls, value: str) -> str:
        if value in {b.value for b in BuiltinLoss} or _is_spec(value):
            return value
        msg = f"expected one of {[b.value for b in BuiltinLoss]} or {_SPEC_HELP}"
        raise ValueError(msg)


def load_gate_config(path: str | Path) -> GateConfig:
    """Read and validate a TOML (.toml) or YAML (.yaml/.yml) gate config."""
    file = Path(path)
    data = read_config_document(file)
    try:
        return GateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(file.name, exc)) from exc


@contextmanager
def _import_path(*directories: Path) -> Iterator[None]:
    added = [str(d) for d in directories if str(d) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _resolve(key: str, spec: str, base_dir: Path) -> Any:
    module_name, _, attr = spec.partition(":")
    with _import_path(base_dir, Path.cwd()):
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            msg = (
                f"key {key!r} = {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
            )
            raise ConfigError(msg) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            msg = f"key {key!r} = {spec!r}: module {module_name!r} has no attribute {attr!r}"
            raise ConfigError(msg) from exc
    if not callable(target):
        msg = f"key {key!r} = {spec!r}: expected a callable, got {type(target).__name__}"
        raise ConfigError(msg)
    return target


def _call(key: str, spec: str, factory: Any, *args: Any) -> Any:
    try:
        return factory(*args)
    except Exception as exc:
        msg = f"key {key!r} = {spec!r}: calling it raised {type(exc).__name__}: {exc}"
        raise ConfigError(msg) from exc


@dataclass(frozen=True)
class GateJob:
    """Everything a config resolves to: ready for ``OverfitGate.check``."""

    config: GateConfig
    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: LossFn
    train_step: TrainStep | None
    options: GateOptions


def _loss(config: GateConfig, base_dir: Path) -> LossFn:
    if config.label_smoothing and config.loss != BuiltinLoss.CROSS_ENTROPY.value:
        msg = f"key 'label_smoothing' = {config.label_smoothing}: only valid with loss = 'cross_entropy'"
        raise ConfigError(msg)
    if config.loss == BuiltinLoss.CROSS_ENTROPY.value:
        return nn.CrossEntropyLoss(ignore_index=config.ignore_index, label_smoothing=config.label_smoothing)
    if config.loss == BuiltinLoss.MSE.value:
        return nn.MSELoss()
    if config.loss == BuiltinLoss.BCE_WITH_LOGITS.value:
        return nn.BCEWithLogitsLoss()
    found = _resolve("loss", config.loss, base_dir)
    if isinstance(found, type) and issubclass(found, nn.Module):
        instance: LossFn = _call("loss", config.loss, found)
        return instance
    loss_fn: LossFn = found
    return loss_fn


def prepare_gate_job(path: str | Path) -> GateJob:
    """Load a config and resolve/call everything it names, without running the gate."""
    file = Path(path)
    config = load_gate_config(file)
    base_dir = file.resolve().parent
    model_factory = _resolve("model", config.model, base_dir)
    batch_factory = _resolve("batch", config.batch, base_dir)
    # Factories run seeded from [gate].seed with the caller's RNG restored afterwards, so a config
    # run is reproducible and leaves no trace in the global generators.
    with preserved_random_state():
        seed_everything(config.gate.seed)
        model = _call("model", config.model, model_factory)
        batch = _call("batch", config.batch, batch_factory)
    if not isinstance(model, nn.Module):
        msg = (
            f"key 'model' = {config.model!r}: expected it to return an nn.Module, got {type(model).__name__}"
        )
        raise ConfigError(msg)
    if (
        not isinstance(batch, tuple | list)
        or len(batch) != 2
        or not all(isinstance(part, torch.Tensor) for part in batch)
    ):
        msg = (
            f"key 'batch' = {config.batch!r}: expected it to return (inputs, targets) as two tensors, "
            f"got {type(batch).__name__}"
        )
        raise ConfigError(msg)
    train_step: TrainStep | None = None
    if config.train_step is not None:
        train_step = _resolve("train_step", config.train_step, base_dir)
    factory: OptimizerFactory | None = None
    if config.optimizer is not None:
        factory = _resolve("optimizer", config.optimizer, base_dir)
    section = config.gate
    try:
        options = section.options(factory)
    except GateError as exc:
        msg = f"config {file.name}: [gate] {exc}"
        raise ConfigError(msg) from exc
    return GateJob(
        config=config,
        model=model,
        inputs=batch[0],
        targets=batch[1],
        loss_fn=_loss(config, base_dir),
        train_step=train_step,
        options=options,
    )


def run_gate_from_config(path: str | Path, *, threads: int | None = None) -> GateReport:
    """Run the gate as a config file describes; ConfigError for any problem with the config.

    A model that fails the gate is not an error: that is a report with ``passed=False``, and so
    is a model or loss that raises on the batch (the failed check names the exception). A
    ``GateError`` (the named pieces do not fit together, e.g. targets that do not match the task)
    is reported as a ConfigError, because in a config-driven run the config did the wiring.
    ``threads``: torch intra-op threads for the factories and the gate (None: leave them as they
    are); the caller's count is restored afterwards.
    """
    if threads is not None and threads < 1:
        msg = f"threads={threads}: expected at least 1"
        raise ConfigError(msg)
    with torch_threads(threads):
        job = prepare_gate_job(path)
        config = job.config
        try:
            return OverfitGate.from_options(job.options).check(
                job.model,
                job.inputs,
                job.targets,
                job.loss_fn,
                task=config.task,
                causal=config.causal,
                train_step=job.train_step,
                pretrained=config.pretrained,
                allow_batch_coupling=config.allow_batch_coupling,
                ignore_index=config.ignore_index,
                outputs=config.outputs,
            )
        except GateError as exc:
            msg = f"config {Path(path).name}: {exc}"
            raise ConfigError(msg) from exc
