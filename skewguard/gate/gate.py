"""``OverfitGate``: prove on one cached batch that a model + loss + optimizer can learn, in seconds.

How the gate treats the caller's objects (the contract):

* The caller's model is never trained or switched between train/eval: the gate works on
  ``copy.deepcopy(model)`` copies, a fresh one per attempt, so every attempt and probe starts from
  the caller's exact initial weights. The caller's ``.grad`` fields and mode flags are untouched.
* ``inputs`` / ``targets`` are cloned once and reused for every step ("one cached batch"): whatever
  augmentation produced them is frozen, so the loss can only fall if the model learns.
* Global RNG state (torch CPU, ``random``, numpy's legacy global) is saved before and restored after;
  inside, every run is seeded with ``seed`` so the verdict is reproducible.
* Warnings raised by the model or loss during the gate are captured into ``GateReport.warnings``
  (a broadcasting warning from ``MSELoss`` is evidence, not noise).
* An exception raised by the pipeline's own code while the gate runs it (``model(inputs)``, the
  loss, the backward pass, ``train_step``) is a failed gate, not an error: the check that was
  running fails naming the exception and where it was raised, and the checks after it are skipped.
  A model that crashes on its batch (a shape bug) is what the gate exists to catch. ``GateError``
  is kept for wiring the gate cannot use (arguments, outputs that cannot fit the targets).

The training step: by default ``zero_grad -> loss_fn(model(inputs), targets) -> backward -> step``
with Adam (weight decay 0, constant LR) or ``optimizer_factory(model, lr)``. A pipeline whose step
is different passes ``train_step(model, inputs, targets, loss_fn, optimizer) -> loss``; it must use
the optimizer it is given (the gate varies its LR and probes with lr=0), and it must compute the
loss before updating. ``model(inputs)`` must still be the forward pass the loss sees, because the
dependency checks differentiate it directly.

Mode: the judged pass runs with dropout off (the model in eval mode) but BatchNorm layers in
train mode when the batch has at least two examples, so normalisation uses the batch statistics
the optimizer sees; with one example BatchNorm stays in eval mode (frozen running statistics).
Dependency checks (batch independence, causality) run fully in eval mode, where BatchNorm no
longer couples examples, with half/bfloat16 weights and inputs upcast to float32 (float32 and float64
models run in their own precision). The gate traces the model there (inputs and embedding outputs
that require grad); a crash only that tracing causes skips the check with the exception named, while
a model that also crashes untraced in eval mode fails it.
"""

from __future__ import annotations

import copy
import math
import random
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skewguard.errors import GateError
from skewguard.gate import checks, provenance
from skewguard.gate.checks import (
    REQUIRED_AGREEMENT,
    Finding,
    LossFn,
    ModelRaised,
    OutputLayout,
    TargetKind,
    agreement,
    check_batch_independence,
    check_causal_dependency,
    check_determinism,
    check_gradient_flow,
    check_gradient_freshness,
    check_init_loss,
    check_inventory,
    infer_layout,
    known_plateaus,
    loss_value,
    reference_losses,
    running_pipeline_code,
    smoothed_cross_entropy_floor,
    soft_cross_entropy_floor,
    trainable_parameters,
)
from skewguard.gate.curve import CurveMonitor, check_failure_signatures, check_overfit
from skewguard.gate.diagnosis import write_diagnosis
from skewguard.gate.report import (
    AttemptOutcome,
    CheckName,
    CheckResult,
    GateReport,
    Outputs,
    OverfitAttempt,
    Signature,
    Task,
)

OptimizerFactory = Callable[[nn.Module, float], torch.optim.Optimizer]
TrainStep = Callable[[nn.Module, torch.Tensor, torch.Tensor, LossFn, torch.optim.Optimizer], Any]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_MAX_WARNINGS = 10
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class GateOptions:
    """The gate's knobs, validated once; ``OverfitGate(**fields)`` and config files both build this."""

    optimizer_factory: OptimizerFactory | None = None
    lr: float = 1e-3
    max_steps: int = 500
    loss_floor: float = 0.0
    allow_no_grad: tuple[str, ...] = ()
    allow_frozen: tuple[str, ...] = ()
    seed: int = 0
    lr_ladder: tuple[float, ...] = (3.0, 1.0 / 3.0)
    init_loss_tolerance: float = 0.10
    determinism_steps: int = 5

    def __post_init__(self) -> None:
        """Reject values that would make the verdict meaningless, naming the field."""
        if not (math.isfinite(self.lr) and self.lr > 0):
            msg = f"lr={self.lr}: expected a finite learning rate > 0"
            raise GateError(msg)
        if not 10 <= self.max_steps <= 1_000_000:
            msg = f"max_steps={self.max_steps}: expected an integer in [10, 1000000]"
            raise GateError(msg)
        if not math.isfinite(self.loss_floor):
            msg = f"loss_floor={self.loss_floor}: expected a finite number"
            raise GateError(msg)
        if any(not (math.isfinite(f) and f > 0) for f in self.lr_ladder):
            msg = f"lr_ladder={self.lr_ladder}: expected finite factors > 0"
            raise GateError(msg)
        if not 0 < self.init_loss_tolerance <= 1:
            msg = f"init_loss_tolerance={self.init_loss_tolerance}: expected a fraction in (0, 1]"
            raise GateError(msg)
        if not 2 <= self.determinism_steps <= self.max_steps:
            msg = f"determinism_steps={self.determinism_steps}: expected an integer in [2, max_steps]"
            raise GateError(msg)
        for label, patterns in (("allow_no_grad", self.allow_no_grad), ("allow_frozen", self.allow_frozen)):
            if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
                msg = f"{label}={patterns!r}: expected a sequence of parameter-name patterns (strings)"
                raise GateError(msg)


class OverfitGate:
    """Runs the gate's checks on a model and one batch and returns a :class:`GateReport`."""

    def __init__(
        self,
        optimizer_factory: OptimizerFactory | None = None,
        lr: float = 1e-3,
        max_steps: int = 500,
        loss_floor: float = 0.0,
        allow_no_grad: Sequence[str] = (),
        allow_frozen: Sequence[str] = (),
        seed: int = 0,
        lr_ladder: Sequence[float] = (3.0, 1.0 / 3.0),
        init_loss_tolerance: float = 0.10,
        determinism_steps: int = 5,
    ) -> None:
        if isinstance(allow_no_grad, str) or isinstance(allow_frozen, str):
            msg = "allow_no_grad / allow_frozen: expected a sequence of patterns, got a single string"
            raise GateError(msg)
        self.options = GateOptions(
            optimizer_factory=optimizer_factory,
            lr=float(lr),
            max_steps=int(max_steps),
            loss_floor=float(loss_floor),
            allow_no_grad=tuple(allow_no_grad),
            allow_frozen=tuple(allow_frozen),
            seed=int(seed),
            lr_ladder=tuple(float(f) for f in lr_ladder),
            init_loss_tolerance=float(init_loss_tolerance),
            determinism_steps=int(determinism_steps),
        )

    @classmethod
    def from_options(cls, options: GateOptions) -> OverfitGate:
        """A gate with already-validated options."""
        gate = cls.__new__(cls)
        gate.options = options
        return gate

    def check(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: LossFn,
        *,
        task: Task | str,
        causal: bool = False,
        train_step: TrainStep | None = None,
        pretrained: bool = False,
        allow_batch_coupling: bool = False,
        ignore_index: int = -100,
        outputs: Outputs | str = Outputs.AUTO,
    ) -> GateReport:
        """Run every check on deep copies of ``model`` and one cached batch; see the module docstring.

        ``outputs``: what the model's outputs are to ``loss_fn`` (logits, probabilities,
        log_probabilities, values); "auto" reads it from the loss, and probes a loss it does not know.
        """
        started = time.perf_counter()
        try:
            parsed_task = Task(task)
        except ValueError as exc:
            msg = f"task={task!r}: expected one of {[t.value for t in Task]}"
            raise GateError(msg) from exc
        try:
            declared = Outputs(outputs)
        except ValueError as exc:
            msg = f"outputs={outputs!r}: expected one of {[o.value for o in Outputs]}"
            raise GateError(msg) from exc
        _validate_arguments(model, inputs, targets, loss_fn, train_step)
        try:
            base = copy.deepcopy(model)
        except Exception as exc:
            msg = f"the model cannot be deep-copied ({type(exc).__name__}: {exc}); the gate trains copies"
            raise GateError(msg) from exc
        run = _Run(
            options=self.options,
            base=base,
            inputs=inputs.detach().clone(),
            targets=targets.detach().clone(),
            loss_fn=loss_fn,
            task=parsed_task,
            causal=causal,
            train_step=train_step,
            pretrained=pretrained,
            allow_batch_coupling=allow_batch_coupling,
            ignore_index=ignore_index,
            declared=declared,
        )
        with preserved_random_state(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome = run.execute()
            except ModelRaised as crash:
                outcome = run.crashed(crash)
            except GateError:
                raise
            except Exception as exc:
                msg = f"the gate could not run the model/loss on the batch: {type(exc).__name__}: {exc}"
                raise GateError(msg) from exc
        seen: list[str] = []
        for record in caught:
            text = f"{record.category.__name__}: {record.message}"
            if text not in seen and len(seen) < _MAX_WARNINGS:
                seen.append(text)
        checks = [f.result for f in outcome.findings]
        passed = not any(not c.passed and not c.skipped for c in checks)
        diagnosis = write_diagnosis(
            outcome.findings,
            outcome.attempts,
            batch_size=int(inputs.shape[0]),
            floor=outcome.floor,
            warnings=seen,
        )
        return GateReport(
            passed=passed,
            checks=checks,
            diagnosis=diagnosis,
            loss_curve=list(outcome.decisive.loss_curve) if outcome.decisive else [],
            steps=outcome.decisive.steps if outcome.decisive else 0,
            seconds=time.perf_counter() - started,
            task=parsed_task,
            loss_floor=outcome.floor,
            attempts=outcome.attempts,
            warnings=seen,
        )


def _validate_arguments(
    model: object, inputs: object, targets: object, loss_fn: object, train_step: object
) -> None:
    if not isinstance(model, nn.Module):
        msg = f"model: expected a torch.nn.Module, got {type(model).__name__}"
        raise GateError(msg)
    for label, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            msg = f"{label}: expected a torch.Tensor (one materialised batch), got {type(value).__name__}"
            raise GateError(msg)
        if value.dim() == 0 or value.shape[0] == 0:
            msg = f"{label}: expected a non-empty batch, examples on axis 0, got shape {tuple(value.shape)}"
            raise GateError(msg)
    if (
        isinstance(inputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and inputs.shape[0] != targets.shape[0]
    ):
        msg = f"inputs has {inputs.shape[0]} examples, targets {targets.shape[0]}: expected the same batch"
        raise GateError(msg)
    if not callable(loss_fn):
        msg = (
            f"loss_fn: expected a callable (outputs, targets) -> scalar tensor, got {type(loss_fn).__name__}"
        )
        raise GateError(msg)
    if train_step is not None and not callable(train_step):
        msg = f"train_step: expected a callable or None, got {type(train_step).__name__}"
        raise GateError(msg)


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore torch, ``random`` and numpy global RNG state however the gate exits."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: as they are); restored afterwards.

    Lets a caller with no business importing torch (the CLI) choose the count, as the retrain
    pipeline's ``threads`` does.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        msg = f"threads={threads}: expected at least 1"
        raise GateError(msg)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed torch, ``random`` and numpy's global generator: every run inside the gate starts alike."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def judged_mode(model: nn.Module, batch_size: int) -> nn.Module:
    """Dropout (and every other train-only randomness) off, BatchNorm on batch statistics if n >= 2."""
    model.eval()
    if batch_size >= 2:
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                module.train()
    return model


def _backward(loss: object) -> None:
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        with running_pipeline_code("the backward pass"):
            torch.autograd.backward(loss)


#: Where each check calls the pipeline's code, for a crash's report.
_CRASH_CONTEXT: dict[CheckName, str] = {
    CheckName.INIT_LOSS: "on the first forward pass, before any update",
    CheckName.OVERFIT: "while overfitting the batch",
    CheckName.GRADIENT_FLOW: "in the first lr=0 probe step",
    CheckName.GRADIENT_FRESHNESS: "in the second lr=0 probe step",
    CheckName.BATCH_INDEPENDENCE: "in eval mode, for the batch-independence check",
    CheckName.CAUSAL_DEPENDENCY: "in eval mode, for the causality check",
    CheckName.DETERMINISM: "in the repeated seeded run",
}


def _raised_at(error: BaseException) -> str:
    """`` at file:line in function`` of the innermost frame outside torch and the gate's runner, if any."""
    torch_root = Path(torch.__file__).parent
    runner = {Path(__file__), Path(checks.__file__), Path(provenance.__file__)}
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not Path(frame.filename).is_relative_to(torch_root) and Path(frame.filename) not in runner
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _crash_text(crash: ModelRaised) -> str:
    """``where raised Type: message``, the message on one line and shortened."""
    message = " ".join(str(crash.error).split())
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"{crash.where} raised {type(crash.error).__name__}: {message}"


def crash_finding(crash: ModelRaised, check: CheckName) -> Finding:
    """The failed check of a pipeline that raised while ``check`` ran it: the exception, named."""
    context = _CRASH_CONTEXT.get(check, "while the gate ran it")
    detail = f"{_crash_text(crash)} ({context}){_raised_at(crash.error)}"
    return Finding(
        CheckResult(name=check, passed=False, detail=detail),
        "the pipeline crashes on this batch: typically a shape or dtype bug in forward (a .view()/"
        ".reshape() to the wrong size, a layer sized for another input width) or a loss that does not "
        "fit the outputs and targets",
    )


def tracing_crash_finding(crash: ModelRaised, check: CheckName) -> Finding:
    """The skip of a dependency check whose tracing, not the model, raised: nothing proven either way."""
    return Finding(
        CheckResult.skip(
            check,
            f"not judged: traced for this check, {_crash_text(crash)}{_raised_at(crash.error)}, while the "
            "model runs untraced in eval mode; the gate feeds it inputs (or embedding outputs) that "
            "require grad, and code that refuses such a tensor (.numpy(), .requires_grad_(False)) "
            "cannot be traced",
        )
    )


def _low_precision(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.element_size() < 4


def traceable_copy(base: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode copy of the model and the batch, as the dependency checks differentiate them.

    Half and bfloat16 weights and inputs are upcast to float32, so that a real dependency cannot
    underflow to an exact zero. float32 and float64 stay as they trained: ``.float()`` on the whole
    model would miss a float64 teacher kept in a plain list (out of ``parameters()``) and hand it
    float32 inputs it never saw, and exact zeros are exact in float64 too.
    """
    model = copy.deepcopy(base).eval()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if _low_precision(param):
                param.data = param.data.float()
        for name, buffer in module.named_buffers(recurse=False):
            if _low_precision(buffer):
                setattr(module, name, buffer.float())
    return model, inputs.float() if _low_precision(inputs) else inputs


def _forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with running_pipeline_code("model(inputs)"):
        output = model(inputs)
    if not isinstance(output, torch.Tensor):
        msg = f"model(inputs) must return a tensor for the gate to judge it, got {type(output).__name__}"
        raise GateError(msg)
    return output


@dataclass
class _Outcome:
    findings: list[Finding]
    attempts: list[OverfitAttempt]
    decisive: OverfitAttempt | None
    floor: float


@dataclass
class _Run:
    """One ``check`` call: the cached batch, the pristine copy, and the checks in order."""

    options: GateOptions
    base: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: LossFn
    task: Task
    causal: bool
    train_step: TrainStep | None
    pretrained: bool
    allow_batch_coupling: bool
    ignore_index: int
    declared: Outputs
    layout: OutputLayout = field(init=False)
    floor: float = field(init=False)
    plateaus: list[tuple[Signature, float]] = field(init=False)
    # What a crash report keeps: the findings and attempts done so far, and the check running.
    findings: list[Finding] = field(init=False, default_factory=list)
    attempts: list[OverfitAttempt] = field(init=False, default_factory=list)
    stage: CheckName = field(init=False, default=CheckName.INVENTORY)

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[0])

    def fresh(self) -> nn.Module:
        """A new copy of the caller's initial weights in the judged (dropout-off) mode."""
        return judged_mode(copy.deepcopy(self.base), self.batch_size)

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        if self.options.optimizer_factory is not None:
            built = self.options.optimizer_factory(model, lr)
            if not isinstance(built, torch.optim.Optimizer):
                msg = f"optimizer_factory returned {type(built).__name__}: expected a torch.optim.Optimizer"
                raise GateError(msg)
            return built
        # The gate's own optimizer: constant LR, no weight decay, so the floor is the loss's own.
        return torch.optim.Adam([p for _, p in trainable_parameters(model)], lr=lr, weight_decay=0.0)

    def execute(self) -> _Outcome:
        """Run every check in order; a :class:`ModelRaised` leaves ``findings`` and ``stage`` behind."""
        findings = self.findings
        probe = self.fresh()
        trainable = trainable_parameters(probe)
        if trainable:
            findings.append(
                check_inventory(
                    probe,
                    self.optimizer(probe, self.options.lr),
                    pretrained=self.pretrained,
                    allow_frozen=self.options.allow_frozen,
                )
            )
        else:
            findings.append(
                Finding(
                    CheckResult(
                        name=CheckName.INVENTORY, passed=False, detail="the model has no trainable parameters"
                    ),
                    "every parameter is frozen or none is registered, so nothing can learn",
                )
            )
        self.stage = CheckName.INIT_LOSS
        seed_everything(self.options.seed)
        with torch.no_grad():
            output = _forward(probe, self.inputs)
            # Layout first: a shape/task mismatch deserves its own message, not the loss's traceback.
            self.layout = infer_layout(self.task, output, self.targets, self.loss_fn, self.declared)
            initial = loss_value(self._loss(output))
        self.floor, floor_note = self._floor()
        self.plateaus = known_plateaus(self.layout, self.targets)
        references = reference_losses(output, self.targets, self.loss_fn, self.layout, self.ignore_index)
        findings.append(
            check_init_loss(
                initial, references, tolerance=self.options.init_loss_tolerance, pretrained=self.pretrained
            )
        )
        self.stage = CheckName.OVERFIT
        if trainable:
            self._ladder()
        attempts = self.attempts
        decisive = next((a for a in attempts if a.outcome is AttemptOutcome.MEMORISED), None)
        if decisive is None and attempts:
            decisive = attempts[0]
        overfit = check_overfit(
            attempts,
            batch_size=self.batch_size,
            floor=self.floor,
            threshold=CurveMonitor(self.floor, self.options.max_steps, curve=[initial]).threshold,
            required_agreement=REQUIRED_AGREEMENT[self.task],
            floor_note=floor_note,
        )
        if not attempts:
            overfit = Finding(
                CheckResult(name=CheckName.OVERFIT, passed=False, detail="nothing to train"),
                "the model has no trainable parameters",
            )
        findings.append(overfit)
        findings.append(
            check_failure_signatures(
                attempts,
                overfit_passed=overfit.result.passed,
                plateau_levels=self.plateaus,
                evidence=self._evidence(output),
            )
        )
        self._gradient_checks(trainable)
        self._dependency_checks()
        self.stage = CheckName.DETERMINISM
        findings.append(self._determinism(attempts))
        order = list(CheckName)
        findings.sort(key=lambda f: order.index(f.result.name))
        return _Outcome(findings=findings, attempts=attempts, decisive=decisive, floor=self.floor)

    def crashed(self, crash: ModelRaised) -> _Outcome:
        """The outcome of a run the pipeline's code broke off: what ran, the crash, the rest skipped."""
        findings = [f for f in self.findings if f.result.name is not self.stage]
        findings.append(crash_finding(crash, self.stage))
        done = {f.result.name for f in findings}
        reason = f"not run: {crash.where} raised {type(crash.error).__name__} in {self.stage.value}"
        findings.extend(Finding(CheckResult.skip(name, reason)) for name in CheckName if name not in done)
        order = list(CheckName)
        findings.sort(key=lambda f: order.index(f.result.name))
        floor = getattr(self, "floor", self.options.loss_floor)  # (unset when the first forward raised)
        return _Outcome(findings=findings, attempts=list(self.attempts), decisive=None, floor=floor)

    def _loss(self, output: torch.Tensor) -> Any:
        with running_pipeline_code("the loss"):
            return self.loss_fn(output, self.targets)

    # ---------------------------------------------------------------------------------------------

    def _floor(self) -> tuple[float, str]:
        """The requested floor, raised to H(q) when cross-entropy cannot reach 0 on these targets.

        Label smoothing does that to class targets; soft targets (a teacher's probabilities, mixup) do
        it by themselves. Only ``nn.CrossEntropyLoss`` with mean reduction is recognised; any other loss
        with a floor above 0 needs ``loss_floor``.
        """
        floor = self.options.loss_floor
        loss = self.loss_fn
        if not isinstance(loss, nn.CrossEntropyLoss) or loss.reduction != "mean" or loss.weight is not None:
            return floor, ""  # (class weights move the floor by the targets' mix: set loss_floor)
        smoothing = loss.label_smoothing
        if (
            self.layout.kind is TargetKind.CLASS_INDEX
            and self.layout.num_classes is not None
            and smoothing > 0
        ):
            smoothed = smoothed_cross_entropy_floor(self.layout.num_classes, smoothing)
            if floor < smoothed - 1e-9:
                return smoothed, f"raised to H(q) of label smoothing {smoothing:g}"
        if self.layout.kind is TargetKind.SOFT_LABEL and self.layout.class_dim is not None:
            entropy = soft_cross_entropy_floor(self.targets, self.layout.class_dim, smoothing)
            if entropy is not None and floor < entropy - 1e-9:
                also = f", label smoothing {smoothing:g}" if smoothing else ""
                return entropy, f"raised to the mean entropy H(q) of the soft targets{also}"
        return floor, ""

    def _evidence(self, output: torch.Tensor) -> list[str]:
        """Facts about the initial output that back a plateau diagnosis with something checkable."""
        found: list[str] = []
        out = output.detach()
        if self.layout.kind is TargetKind.CLASS_INDEX and self.layout.class_dim is not None:
            sums = out.sum(dim=self.layout.class_dim)
            if bool((out >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
                found.append("the model's outputs are already probabilities (non-negative, summing to 1)")
        if self.layout.kind is TargetKind.VALUE and out.shape != self.targets.shape:
            try:
                shape = torch.Size(np.broadcast_shapes(tuple(out.shape), tuple(self.targets.shape)))
            except ValueError:
                shape = None
            if shape is not None and shape != self.targets.shape:
                found.append(
                    f"outputs {tuple(out.shape)} and targets {tuple(self.targets.shape)} "
                    f"broadcast to {tuple(shape)}"
                )
        return found

    def _step_own(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        _backward(self._loss(_forward(model, self.inputs)))
        optimizer.step()

    def _step_theirs(self, step: TrainStep, model: nn.Module, optimizer: torch.optim.Optimizer) -> object:
        with running_pipeline_code("train_step"):
            return step(model, self.inputs, self.targets, self.loss_fn, optimizer)

    def _gradient_checks(self, trainable: list[tuple[str, nn.Parameter]]) -> None:
        """Two lr=0 steps: the first's gradients judge flow, the pair judges freshness.

        Each finding goes into ``findings`` as soon as it is made: a crash in the second step must not
        take the flow verdict of the first with it.
        """
        if not trainable:
            reason = "the model has no trainable parameters"
            self.findings.append(Finding(CheckResult.skip(CheckName.GRADIENT_FLOW, reason)))
            self.findings.append(Finding(CheckResult.skip(CheckName.GRADIENT_FRESHNESS, reason)))
            return
        model = self.fresh()
        named = trainable_parameters(model)
        names = [n for n, _ in named]
        params = [p for _, p in named]
        optimizer = torch.optim.SGD(params, lr=0.0)
        snapshots: list[list[torch.Tensor | None]] = []

        def snapshot() -> list[torch.Tensor | None]:
            return [None if p.grad is None else p.grad.detach().clone() for p in params]

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            snapshots.append(snapshot())

        handle = optimizer.register_step_pre_hook(hook)
        per_call: list[list[torch.Tensor | None] | None] = []
        try:
            for call in range(2):
                self.stage = CheckName.GRADIENT_FLOW if call == 0 else CheckName.GRADIENT_FRESHNESS
                before = len(snapshots)
                seed_everything(self.options.seed)
                if self.train_step is None:
                    self._step_own(model, optimizer)
                else:
                    self._step_theirs(self.train_step, model, optimizer)
                per_call.append(snapshots[before] if len(snapshots) > before else None)
                if call == 0:
                    first = per_call[0] if per_call[0] is not None else snapshot()
                    self.findings.append(
                        check_gradient_flow(names, first, allow_no_grad=self.options.allow_no_grad)
                    )
        finally:
            handle.remove()
        self.findings.append(check_gradient_freshness(names, per_call[0], per_call[1]))

    def _train(self, lr: float, limit: int) -> tuple[OverfitAttempt, CurveMonitor]:
        """Train a fresh copy for at most ``limit`` updates at ``lr``; stop once the outcome is certain."""
        model = self.fresh()
        optimizer = self.optimizer(model, lr)
        monitor = CurveMonitor(self.floor, self.options.max_steps, self.plateaus)
        required = REQUIRED_AGREEMENT[self.task]
        seed_everything(self.options.seed)
        steps = 0
        outcome = AttemptOutcome.BUDGET_EXHAUSTED
        signatures: list[Signature] = []
        last_agreement: float | None = None
        last_output: torch.Tensor | None = None
        if self.train_step is None:
            for _ in range(limit + 1):
                optimizer.zero_grad(set_to_none=True)
                output = _forward(model, self.inputs)
                loss = self._loss(output)
                value = loss_value(loss)
                last_output = output.detach()
                signatures = monitor.observe(value)
                if signatures:
                    outcome = AttemptOutcome.SIGNATURE
                    break
                if monitor.met(value):
                    last_agreement = agreement(last_output, self.targets, self.layout, self.ignore_index)
                    if last_agreement >= required:
                        outcome = AttemptOutcome.MEMORISED
                        break
                if steps == limit:
                    break
                _backward(loss)
                optimizer.step()
                steps += 1
        else:
            for _ in range(limit):
                value = loss_value(self._step_theirs(self.train_step, model, optimizer))
                steps += 1
                signatures = monitor.observe(value)
                if signatures:
                    outcome = AttemptOutcome.SIGNATURE
                    break
                if monitor.met(value):
                    with torch.no_grad():
                        output = _forward(model, self.inputs)
                        after = loss_value(self._loss(output))
                    last_output = output.detach()
                    last_agreement = agreement(last_output, self.targets, self.layout, self.ignore_index)
                    if monitor.met(after) and last_agreement >= required:
                        monitor.curve.append(after)
                        outcome = AttemptOutcome.MEMORISED
                        break
        if outcome is AttemptOutcome.BUDGET_EXHAUSTED:
            signatures = monitor.final_signatures()
            if last_agreement is None and last_output is not None:
                last_agreement = agreement(last_output, self.targets, self.layout, self.ignore_index)
        curve = monitor.curve
        attempt = OverfitAttempt(
            lr=lr,
            steps=steps,
            outcome=outcome,
            signatures=signatures,
            initial_loss=curve[0] if curve else math.nan,
            final_loss=curve[-1] if curve else math.nan,
            agreement=last_agreement,
            loss_curve=list(curve),
        )
        return attempt, monitor

    def _ladder(self) -> list[OverfitAttempt]:
        """The user's LR first, then the ladder, stopping at the first LR that memorises."""
        attempts = self.attempts
        for factor in (1.0, *self.options.lr_ladder):
            attempt, _ = self._train(self.options.lr * factor, self.options.max_steps)
            attempts.append(attempt)
            if attempt.outcome is AttemptOutcome.MEMORISED:
                break
            lr_independent = {Signature.NON_FINITE, Signature.BELOW_FLOOR}
            if len(attempt.loss_curve) == 1 and lr_independent.intersection(attempt.signatures):
                # Broken before the first update: no learning rate can change that.
                break
        return attempts

    def _determinism(self, attempts: list[OverfitAttempt]) -> Finding:
        if not attempts:
            return Finding(CheckResult.skip(CheckName.DETERMINISM, "the model has no trainable parameters"))
        k = self.options.determinism_steps
        first = attempts[0].loss_curve[: k + 1]
        repeat, _ = self._train(self.options.lr, k)
        return check_determinism(first, repeat.loss_curve[: k + 1])

    def _dependency_checks(self) -> None:
        """Batch independence, then causality; each finding goes into ``findings`` as soon as it is made."""
        independence = partial(
            check_batch_independence, allow_batch_coupling=self.allow_batch_coupling, seed=self.options.seed
        )
        self.findings.append(self._dependency_check(CheckName.BATCH_INDEPENDENCE, independence))
        # Class-index outputs laid out (N, K, T, ...) carry positions on axis 2.
        position_dim = 2 if self.layout.kind is TargetKind.CLASS_INDEX and self.layout.class_dim == 1 else 1
        causality = partial(
            check_causal_dependency,
            causal=self.causal,
            seed=self.options.seed,
            output_position_dim=position_dim,
        )
        self.findings.append(self._dependency_check(CheckName.CAUSAL_DEPENDENCY, causality))

    def _dependency_check(
        self, name: CheckName, check: Callable[[nn.Module, torch.Tensor], Finding]
    ) -> Finding:
        """One dependency check on its own traceable copy; a crash only the tracing causes is a skip.

        The earlier checks ran this forward and backward pass untraced. When the traced run raises,
        the model runs once more in eval mode as it trained (its own dtypes, no hooks, no leaves): if
        that raises too, the crash is the model's (an eval-mode bug) and fails the check; if not, the
        gate's tracing broke it (``.numpy()`` on an input that now requires grad, say) and the check is
        skipped with the exception named, since nothing was proven either way.
        """
        self.stage = name
        seed_everything(self.options.seed)
        model, inputs = traceable_copy(self.base, self.inputs)
        try:
            return check(model, inputs)
        except ModelRaised as crash:
            seed_everything(self.options.seed)
            _forward(copy.deepcopy(self.base).eval(), self.inputs)  # raises: the model's own crash
            return tracing_crash_finding(crash, name)
