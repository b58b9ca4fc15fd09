"""The gate's checks, one function each, plus the small pieces of arithmetic they share.

Every function here looks at one thing and returns a :class:`Finding`: the ``CheckResult`` that goes
into the report and, when it failed, the likely bug in words for the diagnosis. They do not train
and do not copy models; :mod:`skewguard.gate.gate` owns the model copies, the RNG and the loop.

Exact-zero tests (batch independence, causality) are exact on purpose: in float32 eval mode an
operation that does not read example j contributes *exactly* nothing to its gradient, so any
non-zero, however small, is a real dependency, not noise. A zero is evidence only when gradients
reach the inputs at all: with no output depending on its own example (ids cast with ``.long()`` or
``.detach()``ed on the way in), the checks skip instead of passing; and only along paths the gate
traced: an embedding fed ids made from the batch that it cannot map back to examples (see
:mod:`skewguard.gate.provenance`) makes a check that found nothing skip, naming the embedding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn

from skewguard.errors import GateError
from skewguard.gate.provenance import BatchProvenance
from skewguard.gate.report import CheckName, CheckResult, Outputs, Signature, Task

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


class ModelRaised(Exception):
    """The pipeline's own code (forward, loss, backward, train step) raised while the gate ran it.

    Internal to the gate, never raised to its callers: :meth:`OverfitGate.check` turns it into a
    failed check naming the exception, because a model that crashes on its batch (a shape bug) is
    exactly what the gate exists to catch. ``GateError`` stays for wiring the gate cannot use.
    """

    def __init__(self, where: str, error: Exception) -> None:
        super().__init__(f"{where} raised {type(error).__name__}: {error}")
        self.where = where
        self.error = error


@contextmanager
def running_pipeline_code(where: str) -> Iterator[None]:
    """Run the caller's code; whatever it raises leaves as :class:`ModelRaised` naming ``where``."""
    try:
        yield
    except ModelRaised:
        raise
    except Exception as exc:
        raise ModelRaised(where, exc) from exc


# Required prediction/target agreement per task (GATE_NOTES): every argmax right for
# classification, 99 % of tokens for sequences, R² of 0.999 for regression.
REQUIRED_AGREEMENT: dict[Task, float] = {
    Task.CLASSIFICATION: 1.0,
    Task.SEQUENCE: 0.99,
    Task.REGRESSION: 0.999,
}

# Attribute names every nn.Module has; anything else in a module's __dict__ is the user's.
_MODULE_INTERNALS = frozenset(vars(nn.Module()).keys())
_MAX_NAMES = 6
_SCAN_DEPTH = 3


@dataclass(frozen=True)
class Finding:
    """A check's report entry and, if it failed, the likely cause for the diagnosis paragraph."""

    result: CheckResult
    likely_cause: str = ""


class TargetKind(StrEnum):
    """How targets relate to outputs, which decides agreement and the init-loss references."""

    CLASS_INDEX = "class_index"
    SOFT_LABEL = "soft_label"
    BINARY = "binary"
    VALUE = "value"


@dataclass(frozen=True)
class OutputLayout:
    """Where the class axis is and what a "correct prediction" means for this output/target pair."""

    kind: TargetKind
    class_dim: int | None = None
    num_classes: int | None = None
    # The loss consumes probabilities (nn.BCELoss) or log-probabilities (nn.NLLLoss), not logits.
    probabilities: bool = False
    log_probabilities: bool = False
    # A regression loss (MSE, L1, Huber) fitted to 0/1 targets: the outputs approximate the targets
    # themselves, so a prediction is "1" above 0.5, not above logit 0 (a memorised 0 sits at ±1e-4).
    values: bool = False


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMES])
    more = len(items) - _MAX_NAMES
    return f"{shown} (+{more} more)" if more > 0 else shown


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    """Whether a parameter name matches one of the allow-list's glob patterns (or exact names)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Registered parameters that require a gradient, with their dotted names."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------------
# layout, agreement, statistics


#: Losses that compare outputs with targets as numbers: fitted to 0/1 targets, outputs are the values.
_VALUE_LOSSES: Final = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
#: The same losses as functions.
_VALUE_LOSS_FUNCTIONS: Final = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)
#: Losses of other kinds the gate knows: a callable that is none of these is probed (``_probe_outputs``).
_KNOWN_LOSSES: Final = (*_VALUE_LOSSES, nn.BCELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss, nn.NLLLoss)
_KNOWN_LOSS_FUNCTIONS: Final = (
    *_VALUE_LOSS_FUNCTIONS,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
    F.cross_entropy,
    F.nll_loss,
)
#: Which declarations fit which targets (integer class indices, or floats of the outputs' shape).
_CLASS_INDEX_OUTPUTS: Final = frozenset({Outputs.AUTO, Outputs.LOGITS, Outputs.LOG_PROBABILITIES})
_FLOAT_TARGET_OUTPUTS: Final = frozenset(
    {Outputs.AUTO, Outputs.LOGITS, Outputs.PROBABILITIES, Outputs.VALUES}
)


def _is(loss_fn: LossFn, functions: Sequence[Callable[..., Any]]) -> bool:
    return any(loss_fn is f for f in functions)


def _probe_outputs(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> Outputs:
    """What an unknown loss on 0/1 targets takes, from its value at three predictions.

    A loss that is zero when the outputs equal the targets (and not when they are the opposite) reads
    outputs as the targets' own scale: probabilities when p = 0.5 costs exactly ln 2 (binary cross
    entropy, mean reduction), else values (MSE, L1, Huber, or sums of them). A loss on logits costs
    ln 2 / ln(1 + e^-1) at logits equal to 0/1 targets, so it stays LOGITS, as does a loss the probe
    cannot evaluate. This keeps a lambda around ``F.mse_loss`` from being read as logits, where a
    memorised 0 sits at ±1e-4 and half of them count as wrong.
    """
    y = targets.detach().to(outputs.dtype)  # (predictions as the model gives them; targets as they are)
    try:
        with torch.no_grad():
            at_targets = float(loss_fn(y.clone(), targets))
            at_opposite = float(loss_fn(1.0 - y, targets))
            at_half = float(loss_fn(torch.full_like(y, 0.5), targets))
    except Exception:
        return Outputs.LOGITS
    if not (math.isfinite(at_targets) and math.isfinite(at_opposite) and math.isfinite(at_half)):
        return Outputs.LOGITS
    if abs(at_targets) > 1e-9 * max(1.0, abs(at_opposite)) or at_opposite <= 0:
        return Outputs.LOGITS
    return Outputs.PROBABILITIES if math.isclose(at_half, math.log(2), rel_tol=1e-6) else Outputs.VALUES


#: Losses that take class-index targets with the classes on axis 1, (N, K, d1, ...), as torch defines them.
_CLASS_FIRST_LOSSES: Final = (nn.CrossEntropyLoss, nn.NLLLoss)
_CLASS_FIRST_LOSS_FUNCTIONS: Final = (F.cross_entropy, F.nll_loss)


def _class_axis(outputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> int:
    """The class axis of outputs with one axis more than integer targets: last, 1, or -1 for neither.

    Both readings fit when every position axis is as long as the class axis ((N, K, T) with K == T).
    Then torch's own class-index losses decide: ``cross_entropy`` / ``nll_loss`` read axis 1. Only
    those exact types and functions: a subclass of ``nn.CrossEntropyLoss`` may reshape to (-1, K) in
    its ``forward`` and read the last axis. Any other loss is asked: one-hot logits along each
    candidate axis, and the axis the loss finds cheaper is the one it reads (a reshape to (-1, K)
    finds the last axis cheaper). A loss that cannot tell them apart is refused rather than guessed:
    agreement over the wrong axis fails a correct model. A loss that answers with more than one
    number is refused as the gate refuses it anywhere (:func:`loss_value`).
    """
    last = outputs.dim() - 1
    fits_last = outputs.shape[:-1] == targets.shape
    fits_first = outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]
    if not (fits_last and fits_first) or last == 1:  # ((N, K) against (N,): one reading, axis 1)
        return last if fits_last else 1 if fits_first else -1
    if type(loss_fn) in _CLASS_FIRST_LOSSES or _is(loss_fn, _CLASS_FIRST_LOSS_FUNCTIONS):
        return 1
    k = int(outputs.shape[1])
    labels = targets.detach().long().clamp(0, k - 1)  # (ignored positions: any class; the loss skips them)
    one_hot = 10.0 * F.one_hot(labels, k).to(outputs.dtype)  # classes last
    cost_last, cost_first = (
        _probe_cost(loss_fn, logits, targets) for logits in (one_hot, one_hot.movedim(-1, 1))
    )
    if math.isfinite(cost_last) and math.isfinite(cost_first) and cost_last != cost_first:
        return last if cost_last < cost_first else 1
    shape = tuple(outputs.shape)
    msg = (
        f"outputs {shape} against integer targets {tuple(targets.shape)}: the class axis could be 1 or "
        f"{last} (the number of classes equals the sequence length) and the loss does not tell which it "
        "reads; use nn.CrossEntropyLoss / F.cross_entropy (classes on axis 1), or a batch whose sequence "
        "length differs from the number of classes"
    )
    raise GateError(msg)


def _probe_cost(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The loss of probe outputs; NaN when the loss refuses their layout (a shape error)."""
    try:
        with torch.no_grad():
            loss = loss_fn(outputs, targets)
    except Exception:
        return math.nan
    return loss_value(loss)  # (a loss with no reduction is refused here, not read as "cannot tell")


def loss_value(loss: object) -> float:
    """The number a loss (or ``train_step``) returned; GateError unless it is a scalar tensor or a number."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            msg = f"the loss must be a scalar, got a tensor of shape {tuple(loss.shape)} (reduce it first)"
            raise GateError(msg)
        return float(loss.detach())
    if isinstance(loss, int | float):
        return float(loss)
    msg = f"the loss / train_step result must be a scalar tensor or a number, got {type(loss).__name__}"
    raise GateError(msg)


def infer_layout(
    task: Task,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    declared: Outputs = Outputs.AUTO,
) -> OutputLayout:
    """Work out how outputs and targets line up; raises GateError when they cannot be compared.

    ``declared``: what the outputs are, as the caller says (AUTO: read from the loss's type, and for
    a callable the gate does not know, on 0/1 targets, probed).
    """
    if task is Task.REGRESSION:
        if declared not in {Outputs.AUTO, Outputs.VALUES}:
            msg = f"outputs={declared.value!r} with task='regression': expected 'auto' or 'values'"
            raise GateError(msg)
        return OutputLayout(kind=TargetKind.VALUE)
    if declared is Outputs.AUTO:
        probabilities = isinstance(loss_fn, nn.BCELoss) or _is(loss_fn, (F.binary_cross_entropy,))
        log_probabilities = isinstance(loss_fn, nn.NLLLoss) or _is(loss_fn, (F.nll_loss,))
        values = isinstance(loss_fn, _VALUE_LOSSES) or _is(loss_fn, _VALUE_LOSS_FUNCTIONS)
    else:
        probabilities = declared is Outputs.PROBABILITIES
        log_probabilities = declared is Outputs.LOG_PROBABILITIES
        values = declared is Outputs.VALUES
    if not targets.is_floating_point() and targets.dtype is not torch.bool:
        if declared not in _CLASS_INDEX_OUTPUTS:
            msg = (
                f"outputs={declared.value!r} with integer class targets: expected one of "
                f"{sorted(o.value for o in _CLASS_INDEX_OUTPUTS)}"
            )
            raise GateError(msg)
        if outputs.dim() == targets.dim() + 1:
            class_dim = _class_axis(outputs, targets, loss_fn)
            if class_dim >= 0:
                return OutputLayout(
                    kind=TargetKind.CLASS_INDEX,
                    class_dim=class_dim,
                    num_classes=int(outputs.shape[class_dim]),
                    log_probabilities=log_probabilities,
                )
        dims = ", ".join(str(d) for d in targets.shape)
        msg = (
            f"task={task.value!r} with integer targets of shape ({dims}): expected outputs with one more "
            f"(class) axis, ({dims}, K) or (N, K, ...), got {tuple(outputs.shape)}"
        )
        raise GateError(msg)
    if outputs.shape == targets.shape:
        if declared not in _FLOAT_TARGET_OUTPUTS:
            msg = (
                f"outputs={declared.value!r} with floating targets: expected one of "
                f"{sorted(o.value for o in _FLOAT_TARGET_OUTPUTS)}"
            )
            raise GateError(msg)
        soft = isinstance(loss_fn, nn.CrossEntropyLoss) or _is(loss_fn, (F.cross_entropy,))
        if soft and outputs.dim() >= 2 and declared in {Outputs.AUTO, Outputs.LOGITS}:
            return OutputLayout(kind=TargetKind.SOFT_LABEL, class_dim=1, num_classes=int(outputs.shape[1]))
        binary = bool(((targets == 0) | (targets == 1)).all())
        unknown = not isinstance(loss_fn, _KNOWN_LOSSES) and not _is(loss_fn, _KNOWN_LOSS_FUNCTIONS)
        if declared is Outputs.AUTO and unknown and binary:
            probed = _probe_outputs(loss_fn, outputs, targets)
            probabilities, values = probed is Outputs.PROBABILITIES, probed is Outputs.VALUES
        return OutputLayout(kind=TargetKind.BINARY, probabilities=probabilities, values=values)
    msg = (
        f"task={task.value!r} with floating targets of shape {tuple(targets.shape)}: expected outputs of "
        f"the same shape (binary / multi-label / soft labels), got {tuple(outputs.shape)}"
    )
    raise GateError(msg)


def r_squared(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Coefficient of determination over all outputs (per-column means), computed in float64.

    Predictions whose element count differs from the targets' cannot be matched one-to-one
    (that is the broadcasting bug), so they get -inf rather than a flattering number.
    """
    if predictions.numel() != targets.numel():
        return -math.inf
    y = targets.detach().reshape(targets.shape[0], -1).double()
    y_hat = predictions.detach().reshape(targets.shape[0], -1).double()
    ss_res = float(((y - y_hat) ** 2).sum())
    ss_tot = float(((y - y.mean(dim=0, keepdim=True)) ** 2).sum())
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else -math.inf
    return 1.0 - ss_res / ss_tot


def agreement(outputs: torch.Tensor, targets: torch.Tensor, layout: OutputLayout, ignore_index: int) -> float:
    """Accuracy (class/binary targets) or R² (regression) of outputs against targets."""
    out = outputs.detach()
    if layout.kind is TargetKind.VALUE:
        return r_squared(out, targets)
    if layout.kind is TargetKind.CLASS_INDEX:
        predicted = out.argmax(dim=layout.class_dim if layout.class_dim is not None else -1)
        valid = targets != ignore_index
        if int(valid.sum()) == 0:
            return math.nan
        return float((predicted[valid] == targets[valid]).double().mean())
    if layout.kind is TargetKind.SOFT_LABEL:
        dim = layout.class_dim if layout.class_dim is not None else 1
        return float((out.argmax(dim=dim) == targets.argmax(dim=dim)).double().mean())
    threshold = 0.5 if layout.probabilities or layout.values else 0.0
    return float(((out > threshold) == (targets > 0.5)).double().mean())


def smoothed_cross_entropy_floor(num_classes: int, smoothing: float) -> float:
    """Lowest reachable cross-entropy with label smoothing: the entropy H(q) of the smoothed target.

    q puts 1 - ε + ε/K on the true class and ε/K on each other class; CE(q, p) >= H(q) with
    equality at p = q, so a gate with floor 0 would wait forever for a loss that cannot come.
    """
    if num_classes < 2:
        msg = f"num_classes={num_classes}: expected at least 2"
        raise GateError(msg)
    if not 0.0 <= smoothing <= 1.0:
        msg = f"smoothing={smoothing}: expected a value in [0, 1]"
        raise GateError(msg)
    on = 1.0 - smoothing + smoothing / num_classes
    off = smoothing / num_classes
    entropy = -on * math.log(on) if on > 0 else 0.0
    if off > 0:
        entropy -= (num_classes - 1) * off * math.log(off)
    return entropy


def soft_cross_entropy_floor(targets: torch.Tensor, class_dim: int, smoothing: float = 0.0) -> float | None:
    """Lowest mean cross-entropy against soft targets: the mean entropy of the (smoothed) targets.

    Per example, ``-sum q log p`` over the simplex is smallest at ``p = q / sum q`` (Gibbs), where it
    is ``-sum q log(q / sum q)``: H(q) for targets that are distributions. Distillation and mixup
    targets thus put the floor well above 0. None when some target is negative (no floor to give).
    """
    q = targets.detach().double()
    if bool((q < 0).any()):
        return None
    if smoothing:  # as torch smooths soft targets: eps / K to every class, whatever the row sums to
        q = (1.0 - smoothing) * q + smoothing / q.shape[class_dim]
    total = q.sum(dim=class_dim, keepdim=True)
    terms = torch.where(q > 0, q * torch.log(q / total.clamp_min(1e-300)), torch.zeros_like(q))
    return float(-terms.sum(dim=class_dim).mean())


def probabilities_to_cross_entropy_plateau(num_classes: int) -> float:
    """Lowest cross-entropy reachable when softmax *probabilities* are fed in as logits.

    With inputs confined to [0, 1] the best case is 1 on the true class and 0 elsewhere, which
    gives -1 + log(e + K - 1) = log(1 + (K - 1)/e) instead of 0.
    """
    return math.log(1.0 + (num_classes - 1) / math.e)


def population_variance(targets: torch.Tensor) -> float:
    """Var(y) with ddof=0 (mean of per-column variances): the floor of MSE broadcast (N,1) vs (N,)."""
    y = targets.detach().reshape(targets.shape[0], -1).double()
    return float(y.var(dim=0, unbiased=False).mean())


def known_plateaus(layout: OutputLayout, targets: torch.Tensor) -> list[tuple[Signature, float]]:
    """Loss values at which a known bug makes the curve flatten, for this output layout."""
    if layout.kind is TargetKind.CLASS_INDEX and layout.num_classes is not None and layout.num_classes >= 2:
        value = probabilities_to_cross_entropy_plateau(layout.num_classes)
        return [(Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY, value)]
    if layout.kind is TargetKind.VALUE and targets.is_floating_point() and targets.shape[0] >= 2:
        variance = population_variance(targets)
        if variance > 0.0:
            return [(Signature.PLATEAU_BROADCAST_MSE, variance)]
    return []


# --------------------------------------------------------------------------------------------------
# inventory


def _scan_hidden(
    path: str, value: object, seen_modules: set[int], seen_params: set[int], depth: int
) -> Iterator[str]:
    """Yield descriptions of trainable weights reachable from ``value`` but not registered.

    Only weights that require a gradient count: a frozen copy kept out of the state dict and the
    optimizer on purpose (a teacher or EMA model in a plain list) is not a bug, and no allow-list
    could name it, because allow-lists match registered parameter names.
    """
    if isinstance(value, nn.Module):
        if id(value) not in seen_modules:
            unregistered = [p for p in value.parameters() if p.requires_grad and id(p) not in seen_params]
            if unregistered:
                count = sum(p.numel() for p in unregistered)
                yield f"{path} ({type(value).__name__}, {count} trainable parameters)"
        return
    if isinstance(value, torch.Tensor):
        if isinstance(value, nn.Parameter):
            if id(value) not in seen_params and value.requires_grad:
                yield f"{path} (Parameter {tuple(value.shape)})"
        elif value.requires_grad and value.is_leaf:
            yield f"{path} (tensor with requires_grad=True, {tuple(value.shape)})"
        return
    if depth >= _SCAN_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _scan_hidden(f"{path}[{key!r}]", item, seen_modules, seen_params, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _scan_hidden(f"{path}[{index}]", item, seen_modules, seen_params, depth + 1)
    elif isinstance(value, set | frozenset):
        for item in value:
            yield from _scan_hidden(f"{path}{{...}}", item, seen_modules, seen_params, depth + 1)


def find_hidden_submodules(model: nn.Module) -> list[str]:
    """Trainable modules and tensors kept in plain attributes/containers instead of being registered.

    Such weights are invisible to ``parameters()``: never optimised, never saved in the state dict,
    never moved by ``.to(device)``, yet they still run in the forward pass. A hidden module counts
    only if it holds a parameter with ``requires_grad=True`` that the model does not register
    elsewhere: a frozen teacher or EMA copy hidden in a plain list is deliberate, not a bug.
    """
    seen_modules = {id(m) for m in model.modules()}
    seen_params = {id(p) for p in model.parameters()}
    hidden: list[str] = []
    for module_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in _MODULE_INTERNALS:
                continue
            path = f"{module_name}.{attr}" if module_name else attr
            hidden.extend(_scan_hidden(path, value, seen_modules, seen_params, 0))
    return hidden


def check_inventory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    pretrained: bool,
    allow_frozen: Sequence[str],
) -> Finding:
    """Every trainable weight registered, in the optimizer, and nothing frozen by accident.

    "Registered" is judged on weights that require a gradient (:func:`find_hidden_submodules`): a
    frozen module hidden in a plain list on purpose (a teacher or EMA copy kept out of the state dict
    and the optimizer) passes; a hidden module with trainable weights fails, since nothing updates it.
    """
    problems: list[str] = []
    causes: list[str] = []
    hidden = find_hidden_submodules(model)
    if hidden:
        problems.append(f"not registered (plain Python container or attribute): {_names(hidden)}")
        causes.append(
            "submodules or weights kept in a plain list/dict/attribute are invisible to parameters(), "
            "so the optimizer never updates them; use nn.ModuleList / nn.ModuleDict / nn.Parameter"
        )
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in trainable_parameters(model) if id(p) not in in_optimizer]
    if missing:
        problems.append(f"trainable but not in the optimizer: {_names(missing)}")
        causes.append(
            "the optimizer was built from a subset of the model's parameters, so the rest never train"
        )
    frozen = [
        name
        for name, p in model.named_parameters()
        if not p.requires_grad and not matches_any(name, allow_frozen)
    ]
    notes: list[str] = []
    if frozen and not pretrained:
        problems.append(f"requires_grad=False on a randomly initialised model: {_names(frozen)}")
        causes.append(
            "parameters are frozen although nothing was pre-trained (a leftover requires_grad_(False) "
            "or freezing loop); allow-list them with allow_frozen if that is intended"
        )
    elif frozen:
        notes.append(f"{len(frozen)} frozen parameter tensors accepted (pretrained model)")
    decayed = [g.get("weight_decay", 0.0) for g in optimizer.param_groups if g.get("weight_decay", 0.0)]
    if decayed:
        notes.append(f"weight decay {max(decayed):g} in the optimizer raises the reachable loss floor")
    total = sum(p.numel() for _, p in trainable_parameters(model))
    if problems:
        detail = "; ".join(problems + notes)
        return Finding(CheckResult(name=CheckName.INVENTORY, passed=False, detail=detail), "; ".join(causes))
    detail = (
        f"{len(trainable_parameters(model))} trainable tensors ({total} values), all registered and all "
        "in the optimizer"
    )
    if notes:
        detail += "; " + "; ".join(notes)
    return Finding(CheckResult(name=CheckName.INVENTORY, passed=True, detail=detail))


# --------------------------------------------------------------------------------------------------
# init loss


def _class_shape(outputs: torch.Tensor, class_dim: int) -> list[int]:
    shape = [1] * outputs.dim()
    shape[class_dim] = int(outputs.shape[class_dim])
    return shape


def reference_losses(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    layout: OutputLayout,
    ignore_index: int,
) -> list[tuple[str, float]]:
    """The loss a freshly initialised model should show, computed by the user's own loss function.

    Two references per layout: an uninformative prediction (uniform classes / p = 0.5 / zero
    output: ln K, ln 2, E[y²]) and the best constant prediction (label prior / mean target:
    H(prior), H(p), Var(y)) for heads whose bias was initialised to the prior. Evaluating the
    user's loss on these outputs, rather than a formula, keeps reductions, ignore_index and label
    smoothing exactly as the user configured them.
    """
    out = outputs.detach()
    candidates: list[tuple[str, torch.Tensor]] = []
    if layout.kind is TargetKind.VALUE or layout.values:
        y = targets.detach().to(out.dtype)
        candidates.append(("E[y²] (zero output)", torch.zeros_like(out)))
        mean = y.mean(dim=0) if y.shape == out.shape else y.mean()
        candidates.append(("Var(y) (mean output)", torch.zeros_like(out) + mean))
    elif layout.kind is TargetKind.CLASS_INDEX and layout.class_dim is not None and layout.num_classes:
        k = layout.num_classes
        uniform = torch.full_like(out, -math.log(k)) if layout.log_probabilities else torch.zeros_like(out)
        candidates.append((f"ln K = ln {k} (uniform prediction)", uniform))
        valid = targets[(targets != ignore_index) & (targets >= 0) & (targets < k)]
        if valid.numel() > 0:
            counts = torch.bincount(valid.reshape(-1).long(), minlength=k).to(out.dtype)
            log_prior = torch.log((counts / counts.sum()).clamp_min(1e-12))
            candidates.append(
                (
                    "H(label prior)",
                    torch.zeros_like(out) + log_prior.reshape(_class_shape(out, layout.class_dim)),
                )
            )
    elif layout.kind is TargetKind.SOFT_LABEL:
        candidates.append(("ln K (uniform prediction)", torch.zeros_like(out)))
    else:
        p = targets.detach().to(out.dtype).mean(dim=0, keepdim=True).clamp(1e-6, 1 - 1e-6)
        if layout.probabilities:
            candidates.append(("ln 2 (p = 0.5)", torch.full_like(out, 0.5)))
            candidates.append(("H(p) (prior probability)", torch.zeros_like(out) + p))
        else:
            candidates.append(("ln 2 (logit 0)", torch.zeros_like(out)))
            candidates.append(("H(p) (prior logit)", torch.zeros_like(out) + torch.log(p / (1 - p))))
    references: list[tuple[str, float]] = []
    with torch.no_grad():
        for label, prediction in candidates:
            value = float(loss_fn(prediction, targets))
            if math.isfinite(value):
                references.append((label, value))
    return references


def check_init_loss(
    initial_loss: float,
    references: list[tuple[str, float]],
    *,
    tolerance: float,
    pretrained: bool,
) -> Finding:
    """The initial loss lies in the band an untrained model can show, widened by ``tolerance``.

    The two references bracket what an untrained model predicts: nothing (uniform classes,
    p = 0.5, zero output) and the best constant (label prior, mean target). A freshly initialised
    network sits somewhere between them (its output bias is small but not zero), so the band is
    ``[min(refs) - tol*|min|, max(refs) + tol*|max|]``. For balanced classes both references are
    ln K and this is the classic "ln K +- 10 %"; for regression it is [Var(y), E[y²]] +- 10 %.
    """
    if pretrained:
        return Finding(CheckResult.skip(CheckName.INIT_LOSS, "pretrained weights: no expected initial loss"))
    if not references:
        return Finding(
            CheckResult.skip(
                CheckName.INIT_LOSS, "the loss function gave no finite reference value to compare with"
            )
        )
    described = ", ".join(f"{label} = {value:.4g}" for label, value in references)
    if not math.isfinite(initial_loss):
        return Finding(
            CheckResult(
                name=CheckName.INIT_LOSS,
                passed=False,
                detail=f"initial loss is {initial_loss} (expected {described})",
            ),
            "the very first forward pass already produces NaN/Inf (log of a non-positive number, "
            "division by zero, overflow)",
        )
    values = [value for _, value in references]
    low = min(values) - tolerance * abs(min(values)) - 1e-6
    high = max(values) + tolerance * abs(max(values)) + 1e-6
    band = f"[{low:.4g}, {high:.4g}] (from {described}, +-{tolerance:.0%})"
    if low <= initial_loss <= high:
        return Finding(
            CheckResult(
                name=CheckName.INIT_LOSS,
                passed=True,
                detail=f"initial loss {initial_loss:.4g} within {band}",
            )
        )
    if initial_loss > high:
        cause = (
            "the untrained model is confidently wrong: an output layer initialised at too large a scale, "
            "logits multiplied instead of divided by a temperature, or a loss that does not match the output"
        )
    else:
        cause = (
            "the untrained model already does better than any constant prediction: the weights are not "
            "freshly initialised (pass pretrained=True) or the targets leak into the inputs"
        )
    return Finding(
        CheckResult(
            name=CheckName.INIT_LOSS,
            passed=False,
            detail=f"initial loss {initial_loss:.4g} outside {band}",
        ),
        cause,
    )


# --------------------------------------------------------------------------------------------------
# gradients


def check_gradient_flow(
    names: Sequence[str],
    gradients: Sequence[torch.Tensor | None],
    *,
    allow_no_grad: Sequence[str],
) -> Finding:
    """Every trainable tensor got a gradient that is present, not all zero, and finite."""
    missing: list[str] = []
    zero: list[str] = []
    non_finite: list[str] = []
    allowed: list[str] = []
    for name, grad in zip(names, gradients, strict=True):
        if matches_any(name, allow_no_grad):
            allowed.append(name)
            continue
        if grad is None:
            missing.append(name)
        elif not bool(torch.isfinite(grad).all()):
            non_finite.append(name)
        elif not bool((grad != 0).any()):
            zero.append(name)
    problems: list[str] = []
    causes: list[str] = []
    if missing:
        problems.append(f"no gradient at all: {_names(missing)}")
        causes.append(
            "part of the graph is cut off: a .detach(), .data, torch.no_grad() or .item() between these "
            "weights and the loss, or a branch the forward pass never uses"
        )
    if zero:
        problems.append(f"all-zero gradient: {_names(zero)}")
        causes.append("these weights do not influence the loss (dead branch, multiplied by zero, masked out)")
    if non_finite:
        problems.append(f"NaN/Inf gradient: {_names(non_finite)}")
        causes.append(
            "a numerically invalid operation in forward or loss (log/sqrt of <= 0, division by zero)"
        )
    checked = len(names) - len(allowed)
    if problems:
        return Finding(
            CheckResult(name=CheckName.GRADIENT_FLOW, passed=False, detail="; ".join(problems)),
            "; ".join(causes),
        )
    detail = f"all {checked} trainable tensors received a non-zero, finite gradient"
    if allowed:
        detail += f" ({len(allowed)} allow-listed: {_names(allowed)})"
    return Finding(CheckResult(name=CheckName.GRADIENT_FLOW, passed=True, detail=detail))


def _same(first: torch.Tensor | None, second: torch.Tensor | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return bool(torch.allclose(first, second, rtol=1e-5, atol=1e-8, equal_nan=True))


def check_gradient_freshness(
    names: Sequence[str],
    first: Sequence[torch.Tensor | None] | None,
    second: Sequence[torch.Tensor | None] | None,
) -> Finding:
    """Two lr=0 steps on the same batch must see identical gradients (else they leak across steps)."""
    if first is None or second is None:
        return Finding(
            CheckResult(
                name=CheckName.GRADIENT_FRESHNESS,
                passed=False,
                detail="the train step never called optimizer.step() on the optimizer it was given",
            ),
            "the training step does not step the optimizer it receives, so the gate cannot control it "
            "(and the model may never be updated)",
        )
    differing = [n for n, a, b in zip(names, first, second, strict=True) if not _same(a, b)]
    if not differing:
        return Finding(
            CheckResult(
                name=CheckName.GRADIENT_FRESHNESS,
                passed=True,
                detail=f"two lr=0 steps gave identical gradients for all {len(names)} trainable tensors",
            )
        )
    pairs = [(a, b) for a, b in zip(first, second, strict=True) if a is not None and b is not None]
    ratio = math.nan
    if pairs:
        a_flat = torch.cat([a.reshape(-1).double() for a, _ in pairs])
        b_flat = torch.cat([b.reshape(-1).double() for _, b in pairs])
        denominator = float(a_flat @ a_flat)
        if denominator > 0:
            ratio = float(a_flat @ b_flat) / denominator
    if math.isfinite(ratio) and abs(ratio - 2.0) < 0.05:
        return Finding(
            CheckResult(
                name=CheckName.GRADIENT_FRESHNESS,
                passed=False,
                detail=(
                    f"the second lr=0 step saw {ratio:.3f}x the first step's gradients in "
                    f"{len(differing)} tensors: gradients accumulate across steps"
                ),
            ),
            "the training step never clears gradients: optimizer.zero_grad() (or model.zero_grad()) is "
            "missing, so every step applies the sum of all past gradients",
        )
    return Finding(
        CheckResult(
            name=CheckName.GRADIENT_FRESHNESS,
            passed=False,
            detail=(
                f"two identical lr=0 steps gave different gradients in {len(differing)} tensors "
                f"(projection ratio {ratio:.3g}, not the 2x of plain accumulation): {_names(differing)}"
            ),
        ),
        "the step is not a function of the weights and the batch: randomness that the seed does not "
        "control (fresh augmentation, unseeded noise) or state carried from one step to the next",
    )


def check_determinism(first: Sequence[float], second: Sequence[float]) -> Finding:
    """Two runs from the same weights and seed must produce the same first losses."""
    n = min(len(first), len(second))
    if n == 0:
        return Finding(CheckResult.skip(CheckName.DETERMINISM, "no losses recorded to compare"))
    a = torch.tensor(list(first[:n]), dtype=torch.float64)
    b = torch.tensor(list(second[:n]), dtype=torch.float64)
    if bool(torch.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)):
        return Finding(
            CheckResult(
                name=CheckName.DETERMINISM,
                passed=True,
                detail=f"two seeded runs gave the same first {n} losses",
            )
        )
    first_bad = int(torch.nonzero(~torch.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))[0, 0])
    return Finding(
        CheckResult(
            name=CheckName.DETERMINISM,
            passed=False,
            detail=(
                f"two runs with the same seed diverge at step {first_bad}: "
                f"{float(a[first_bad]):.6g} vs {float(b[first_bad]):.6g}"
            ),
        ),
        "the run is not reproducible from its seed: randomness from an unseeded generator "
        "(np.random.default_rng(), random.SystemRandom, a torch.Generator seeded from the OS) or a "
        "non-deterministic kernel",
    )


# --------------------------------------------------------------------------------------------------
# dependency checks (batch independence, causality)


@dataclass
class _Traced:
    """The model output plus the per-example leaf tensors we differentiate it against.

    ``untraced``: embeddings that read ids made from the batch on a path the gate could not map
    back to examples (see :mod:`skewguard.gate.provenance`); a zero gradient there proves nothing.
    """

    output: torch.Tensor
    leaves: list[torch.Tensor]
    through_embedding: bool
    untraced: list[str]

    @property
    def where(self) -> str:
        """What the leaves are, for the report."""
        return "first-layer (embedding) activations" if self.through_embedding else "inputs"


def _trace_or_skip(model: nn.Module, inputs: torch.Tensor, name: CheckName, seed: int) -> _Traced | Finding:
    """:func:`_trace`, or the skip finding of a dependency check that has nothing to differentiate."""
    traced = _trace(model, inputs, seed)
    if traced is None:
        return Finding(CheckResult.skip(name, _NO_OUTPUT_TENSOR))
    if not traced.leaves:
        reason = _untraced_reason(traced.untraced) if traced.untraced else _NO_EMBEDDING
        return Finding(CheckResult.skip(name, reason))
    if not traced.output.requires_grad:
        return Finding(CheckResult.skip(name, _NO_PATH))
    return traced


def _trace(model: nn.Module, inputs: torch.Tensor, seed: int) -> _Traced | None:
    """Run ``model`` with a differentiable leaf per example: the inputs, or the embedding output.

    Token ids have no gradient, so a forward hook replaces the output of every ``nn.Embedding``
    that consumes the input ids with a detached leaf that requires grad; the first layer's
    activations then stand in for the inputs. That holds for ids stored as floats too, cast on the
    way in (``embedding(x.long())``, ``bucketize``, ``round``): the cast has no gradient, so without
    the hook every gradient would be zero and "no example depends on another" would be vacuous.
    Float inputs are also a leaf themselves, for whatever reaches the outputs differentiably.
    An embedding may be fed the ids with their axes swapped (``embedding(ids.t())`` for a
    sequence-first RNN): its leaf is then laid out as the ids are (examples first, positions second)
    and swapped the same way on its way into the model, so the checks read it as they read any other.

    Ids the hook cannot lay out as the batch (a column of a float feature tensor, ``x[:, 3].long()``)
    are followed back through pointwise steps to the float values they were cast from, and the
    embedding's output is tied to those with a straight-through term (value exactly zero, gradient
    the identity, along a random direction so a later LayerNorm cannot cancel it): the gradient then
    reaches the input leaf at the right examples and positions. Ids made from the batch any other way
    (an argmax, a rolled or sorted copy) are named in ``untraced``.

    The model is given copies (``.clone()``), never a leaf or a view of one, so its in-place
    operations (``x = tok(ids); x += pos(...)``) work as they do in training.
    """
    leaves: list[torch.Tensor] = []
    untraced: list[str] = []
    names = {id(m): name or type(m).__name__ for name, m in model.named_modules()}
    fed = inputs
    if inputs.is_floating_point():
        leaf = inputs.detach().clone().requires_grad_(True)
        leaves.append(leaf)
        fed = leaf.clone()
    provenance = BatchProvenance(fed)

    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if not args or not isinstance(args[0], torch.Tensor):
            return output
        ids = args[0]
        order = _axes_of(inputs, ids)
        if order is not None:
            feature = [output.dim() - 1]  # the embedding's own axis stays last
            inverse = [order.index(axis) for axis in range(len(order))]
            embedded = output.detach().permute([*inverse, *feature]).requires_grad_(True)
            leaves.append(embedded)
            return embedded.permute([*order, *feature]).clone()
        if not provenance.carries(ids):
            return output  # not the batch's ids (positions from torch.arange): nothing to trace
        source = provenance.differentiable_source(ids)
        if source is None:
            untraced.append(names.get(id(module), type(module).__name__))
            return output
        direction = _weights(output.shape[-1:], output.dtype, seed)
        return output + (source - source.detach()).to(output.dtype).unsqueeze(-1) * direction

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        with running_pipeline_code("model(inputs)"), provenance:
            output = model(fed)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        return None
    through_embedding = len(leaves) > int(inputs.is_floating_point())
    return _Traced(output=output, leaves=leaves, through_embedding=through_embedding, untraced=untraced)


def _axes_of(inputs: torch.Tensor, fed: torch.Tensor) -> list[int] | None:
    """How an embedding's input lays out the ids' axes: ``p`` with ``fed`` being ``inputs.permute(p)``.

    In order: a view of the ids (``ids``, ``ids.t()``, ``ids.permute(...)``) is read from its strides,
    exactly, whatever the values; a permuted copy (``ids.t().contiguous()``) is found by content when
    exactly one permutation matches; ids of the ids' own shape that are a function of them position by
    position (``ids % buckets``, ``ids.clamp(...)``) are taken as they are.
    None: not the ids (a slice, another tensor), or a copy whose layout cannot be told (a symmetric batch).
    """
    if fed.numel() != inputs.numel() or fed.dim() != inputs.dim():
        return None
    axes = range(inputs.dim())
    orders = list(itertools.permutations(axes)) if inputs.dim() <= _MAX_ID_AXES else [tuple(axes)]
    if fed.data_ptr() == inputs.data_ptr():
        for order in orders:
            if all(
                fed.shape[k] == inputs.shape[a] and (fed.shape[k] == 1 or fed.stride(k) == inputs.stride(a))
                for k, a in enumerate(order)
            ):
                return list(order)
    ids = inputs.to(fed.dtype)  # (ids stored as floats and cast on the way in compare as the cast sees them)
    matching = [
        list(order)
        for order in orders
        if ids.permute(order).shape == fed.shape and torch.equal(ids.permute(order), fed)
    ]
    if len(matching) == 1:
        return matching[0]
    if not matching and fed.shape == inputs.shape and _pointwise(inputs, fed):
        return list(axes)  # transformed ids (hashed, clamped): position for position, as they came
    return None


def _pointwise(inputs: torch.Tensor, fed: torch.Tensor) -> bool:
    """Whether ``fed`` can be a function of the ids position by position: equal ids, equal values.

    Rolled, shifted or re-ordered ids (``torch.roll(ids, -1, 1)``, a sort) break this wherever an id
    repeats, and read position for position they would hide a leak or invent a coupling. (With every
    id distinct nothing tells them apart.)
    """
    ids, values = inputs.reshape(-1), fed.reshape(-1)
    order = torch.argsort(ids, stable=True)
    ids, values = ids[order], values[order]
    repeats = ids[1:] == ids[:-1]
    return bool((values[1:] == values[:-1])[repeats].all())


_MAX_ID_AXES: Final = 4
_NO_PATH = "the output has no gradient path back to the inputs (detached), so there is nothing to trace"
_NO_OUTPUT_TENSOR = "model(inputs) returned no tensor: nothing to differentiate"
_NO_EMBEDDING = "integer inputs that no nn.Embedding consumes: no differentiable first layer"
_NO_INPUT_GRADIENT = (
    "no output has a gradient w.r.t. its own example's inputs: the inputs reach the outputs through no "
    "gradient (cast with .long()/.round()/bucketize, or .detach()ed?), so zero gradients prove nothing; "
    "declare token ids as an integer tensor feeding an nn.Embedding"
)


def _untraced_reason(embeddings: Sequence[str]) -> str:
    shown = _names([f"{name!r}" for name in dict.fromkeys(embeddings)])
    return (
        f"nn.Embedding {shown} reads ids made from the batch on a path the gate cannot map back to "
        "examples (not the ids themselves, a view or a position-by-position function of them, nor a "
        "cast of float input values: an argmax, a rolled or sorted copy, a slice of integer ids), so a "
        "zero gradient along it proves nothing; feed the embedding the ids (or a cast of them) directly"
    )


def _weights(shape: torch.Size, dtype: torch.dtype, seed: int) -> torch.Tensor:
    # Random (not all-ones) weights so an output that sums to a constant (softmax) cannot hide a
    # dependency by cancellation.
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def check_batch_independence(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    allow_batch_coupling: bool,
    seed: int,
) -> Finding:
    """The gradient of output[i] w.r.t. input[j] is exactly zero for every j != i (eval, float32)."""
    name = CheckName.BATCH_INDEPENDENCE
    if allow_batch_coupling:
        return Finding(
            CheckResult.skip(name, "allowed by the caller (in-batch coupling declared legitimate)")
        )
    n = int(inputs.shape[0])
    if n < 2:
        return Finding(CheckResult.skip(name, "batch of one example: nothing to be independent of"))
    traced = _trace_or_skip(model, inputs, name, seed)
    if isinstance(traced, Finding):
        return traced
    output = traced.output
    if output.dim() == 0 or output.shape[0] != n:
        return Finding(
            CheckResult(
                name=name,
                passed=False,
                detail=f"output shape {tuple(output.shape)} has no batch axis of size {n}",
            ),
            "the batch dimension is reshaped away or merged with another axis",
        )
    weights = _weights(output.shape[1:], output.dtype, seed)
    coupled: dict[int, list[int]] = {}
    largest = 0.0
    reads_own = False
    for i in range(n):
        with running_pipeline_code("the backward pass"):
            grads = torch.autograd.grad(
                (output[i] * weights).sum(), traced.leaves, retain_graph=True, allow_unused=True
            )
        magnitude = torch.zeros(n, dtype=torch.float64)
        for grad in grads:
            if grad is not None:
                magnitude = torch.maximum(magnitude, grad.detach().abs().reshape(n, -1).amax(dim=1).double())
        reads_own = reads_own or bool(magnitude[i] != 0)
        magnitude[i] = 0.0
        others = [int(j) for j in torch.nonzero(magnitude).reshape(-1)]
        if others:
            coupled[i] = others
            largest = max(largest, float(magnitude.max()))
    where = traced.where
    if not coupled and traced.untraced:
        # A traced path found nothing; the untraced one may still mix examples.
        return Finding(CheckResult.skip(name, _untraced_reason(traced.untraced)))
    if not coupled and not reads_own:
        # Zero cross-example gradients prove nothing when no output has a gradient w.r.t. anything.
        return Finding(CheckResult.skip(name, _NO_INPUT_GRADIENT))
    if not coupled:
        return Finding(
            CheckResult(
                name=name,
                passed=True,
                detail=f"all {n * (n - 1)} cross-example gradients w.r.t. the {where} are exactly zero",
            )
        )
    pairs = sum(len(v) for v in coupled.values())
    first = min(coupled)
    return Finding(
        CheckResult(
            name=name,
            passed=False,
            detail=(
                f"output of example {first} depends on the {where} of examples "
                f"{_names([str(j) for j in coupled[first]])}; {pairs} of {n * (n - 1)} (i, j) pairs coupled, "
                f"max |grad| {largest:.3g}"
            ),
        ),
        "an operation mixes examples across the batch: typically a .view()/.reshape() that should be "
        ".transpose()/.permute() (e.g. (N, T, F) viewed as (T, N, F) for a sequence-first RNN), or a "
        "reduction over the batch axis",
    )


def check_causal_dependency(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    causal: bool,
    seed: int,
    output_position_dim: int = 1,
) -> Finding:
    """With ``causal=True``: the gradient of output[:, t] w.r.t. input[:, s] is zero for all s > t.

    Positions are axis 1 of the inputs (or of the embedding output) and ``output_position_dim`` of
    the output (2 for outputs laid out (N, K, T) as ``F.cross_entropy`` expects them).
    """
    name = CheckName.CAUSAL_DEPENDENCY
    if not causal:
        return Finding(CheckResult.skip(name, "the model does not declare itself causal (causal=False)"))
    if inputs.dim() < 2:
        msg = f"causal=True needs inputs with a position axis (N, T, ...), got shape {tuple(inputs.shape)}"
        raise GateError(msg)
    traced = _trace_or_skip(model, inputs, name, seed)
    if isinstance(traced, Finding):
        return traced
    output = traced.output
    if output_position_dim != 1 and output.dim() > output_position_dim:
        output = output.movedim(output_position_dim, 1)
    length = int(inputs.shape[1])
    if output.dim() < 2 or output.shape[1] != length:
        msg = (
            f"causal=True needs outputs with the inputs' position axis (N, {length}, ...), "
            f"got shape {tuple(output.shape)}"
        )
        raise GateError(msg)
    weights = _weights(output.shape[1:], output.dtype, seed)
    violations: dict[int, list[int]] = {}
    largest = 0.0
    reads_past = False
    for t in range(length):
        with running_pipeline_code("the backward pass"):
            grads = torch.autograd.grad(
                (output[:, t] * weights[t]).sum(), traced.leaves, retain_graph=True, allow_unused=True
            )
        magnitude = torch.zeros(length, dtype=torch.float64)
        for grad in grads:
            if grad is not None and grad.dim() >= 2 and grad.shape[1] == length:
                per_position = grad.detach().abs().transpose(0, 1).reshape(length, -1).amax(dim=1).double()
                magnitude = torch.maximum(magnitude, per_position)
        reads_past = reads_past or bool((magnitude[: t + 1] != 0).any())
        future = [int(s) for s in torch.nonzero(magnitude[t + 1 :]).reshape(-1) + t + 1]
        if future:
            violations[t] = future
            largest = max(largest, float(magnitude[t + 1 :].max()))
    if not violations and traced.untraced:
        return Finding(CheckResult.skip(name, _untraced_reason(traced.untraced)))
    if not violations and not reads_past:
        # No position depends on any input position: "nothing from the future" would be vacuous.
        return Finding(CheckResult.skip(name, _NO_INPUT_GRADIENT))
    if not violations:
        return Finding(
            CheckResult(
                name=name,
                passed=True,
                detail=f"no output position depends on a later input position ({length} positions checked)",
            )
        )
    first = min(violations)
    count = sum(len(v) for v in violations.values())
    return Finding(
        CheckResult(
            name=name,
            passed=False,
            detail=(
                f"output at position {first} depends on future positions "
                f"{_names([str(s) for s in violations[first]])}; "
                f"{count} (t, s > t) pairs in {len(violations)} positions, max |grad| {largest:.3g}"
            ),
        ),
        "information leaks from the future: a .view()/.reshape() that scrambles tokens (e.g. splitting "
        "attention heads with .view(N, heads, T, d) instead of .view(N, T, heads, d).transpose(1, 2)), "
        "or a missing / wrongly oriented causal mask",
    )
