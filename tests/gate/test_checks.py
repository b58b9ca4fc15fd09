"""The gate's arithmetic and single checks, against scipy/numpy and hand-built models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from skewguard.errors import GateError
from skewguard.gate import CheckName, Signature, Task
from skewguard.gate.checks import (
    OutputLayout,
    TargetKind,
    agreement,
    check_batch_independence,
    check_causal_dependency,
    check_gradient_flow,
    check_gradient_freshness,
    check_init_loss,
    check_inventory,
    find_hidden_submodules,
    infer_layout,
    known_plateaus,
    population_variance,
    probabilities_to_cross_entropy_plateau,
    r_squared,
    reference_losses,
    smoothed_cross_entropy_floor,
    soft_cross_entropy_floor,
)
from skewguard.gate.curve import CurveMonitor
from skewguard.gate.zoo import (
    ClassLastCrossEntropy,
    TokenSequenceFirstGRUClassifier,
    seeded_build,
    sequence_batch,
)


@pytest.mark.parametrize(("k", "eps"), [(2, 0.1), (4, 0.1), (10, 0.05), (100, 0.2), (3, 0.0)])
def test_label_smoothing_floor_equals_scipy_entropy_of_the_smoothed_target(k: int, eps: float):
    q = np.full(k, eps / k)
    q[0] += 1 - eps
    assert smoothed_cross_entropy_floor(k, eps) == pytest.approx(scipy.stats.entropy(q), abs=1e-12)


def test_label_smoothing_floor_is_the_minimum_of_smoothed_cross_entropy():
    k, eps = 5, 0.1
    target = torch.tensor([2])
    q = torch.full((1, k), eps / k)
    q[0, 2] += 1 - eps
    at_optimum = F.cross_entropy(torch.log(q), target, label_smoothing=eps)
    assert float(at_optimum) == pytest.approx(smoothed_cross_entropy_floor(k, eps), abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_soft_target_floor_is_the_mean_scipy_entropy_and_the_minimum_of_cross_entropy(eps: float):
    g = torch.Generator().manual_seed(3)
    q = F.softmax(2 * torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    q[0] = F.one_hot(torch.tensor(1), 5)  # a hard row among soft ones (0 log 0 = 0)
    smoothed = (1 - eps) * q + eps / 5
    expected = float(np.mean(scipy.stats.entropy(smoothed.numpy(), axis=1)))
    assert soft_cross_entropy_floor(q, 1, eps) == pytest.approx(expected, abs=1e-12)
    logits = torch.log(smoothed.clamp_min(1e-300))  # (a 0 probability: a very negative logit, not -inf)
    at_optimum = F.cross_entropy(logits, q, label_smoothing=eps)
    assert float(at_optimum) == pytest.approx(expected, abs=1e-9)
    worse = F.cross_entropy(logits + 0.3 * torch.randn(6, 5, generator=g), q, label_smoothing=eps)
    assert float(worse) > expected
    assert soft_cross_entropy_floor(q - 0.5, 1) is None  # negative "probabilities": no floor to give
    # Rows that are no distribution (multi-hot, an all-zero padded row): still the minimum torch reaches.
    multi = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    mixed = (1 - eps) * multi + eps / 3
    best = torch.log((mixed / mixed.sum(1, keepdim=True).clamp_min(1e-300)).clamp_min(1e-300))  # p ∝ q
    reached = float(F.cross_entropy(best, multi, label_smoothing=eps))
    assert soft_cross_entropy_floor(multi, 1, eps) == pytest.approx(reached, abs=1e-9)


def test_mse_on_one_hot_targets_reads_outputs_as_values_for_agreement_and_init_loss():
    targets = F.one_hot(torch.tensor([0, 2, 1]), 3).float()
    layout = infer_layout(Task.CLASSIFICATION, torch.zeros(3, 3), targets, nn.MSELoss())
    assert layout.kind is TargetKind.BINARY and layout.values
    assert infer_layout(Task.CLASSIFICATION, torch.zeros(3, 3), targets, F.mse_loss).values
    assert infer_layout(Task.CLASSIFICATION, torch.zeros(3, 3), targets, F.l1_loss).values
    memorised = targets + torch.tensor([[-1e-4, 1e-4, -1e-4], [1e-4, 1e-4, -1e-4], [-1e-4, -1e-4, 1e-4]])
    assert agreement(memorised, targets, layout, -100) == 1.0  # zeros within 1e-4 of 0, either side
    logits = infer_layout(Task.CLASSIFICATION, torch.zeros(3, 3), targets, nn.BCEWithLogitsLoss())
    assert not logits.values and agreement(memorised, targets, logits, -100) < 1.0
    refs = dict(reference_losses(torch.zeros(3, 3), targets, nn.MSELoss(), layout, -100))
    y = targets.numpy()
    assert refs == pytest.approx(
        {
            "E[y²] (zero output)": float(np.mean(y**2)),
            "Var(y) (mean output)": float(np.mean(np.var(y, axis=0))),
        }
    )


def test_label_smoothing_floor_rejects_bad_arguments():
    with pytest.raises(GateError, match="num_classes"):
        smoothed_cross_entropy_floor(1, 0.1)
    with pytest.raises(GateError, match="smoothing"):
        smoothed_cross_entropy_floor(4, 1.5)


@pytest.mark.parametrize("k", [2, 4, 16])
def test_probability_plateau_is_cross_entropy_of_one_hot_probabilities_as_logits(k: int):
    one_hot = F.one_hot(torch.tensor([1]), k).double()
    best = F.cross_entropy(one_hot, torch.tensor([1]))
    assert probabilities_to_cross_entropy_plateau(k) == pytest.approx(float(best), abs=1e-12)


def test_population_variance_matches_numpy_ddof_zero():
    y = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 2
    assert population_variance(y) == pytest.approx(float(np.var(y.numpy())), rel=1e-12)


def test_broadcast_mse_floor_is_population_variance():
    y = torch.randn(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 2
    best_constant_per_row = torch.full((16, 1), float(y.mean()), dtype=torch.float64)
    broadcast = F.mse_loss(best_constant_per_row.expand(16, 16), y.expand(16, 16))
    assert float(broadcast) == pytest.approx(population_variance(y), rel=1e-12)


def test_r_squared_matches_scipy_linregress_on_the_fitted_line():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, generator=g, dtype=torch.float64)
    y = 2 * x + torch.randn(40, generator=g, dtype=torch.float64)
    fit = scipy.stats.linregress(x.numpy(), y.numpy())
    predictions = fit.intercept + fit.slope * x
    assert r_squared(predictions, y) == pytest.approx(fit.rvalue**2, rel=1e-10)


def test_r_squared_refuses_predictions_that_cannot_be_matched_one_to_one():
    y = torch.arange(4.0)
    assert r_squared(torch.zeros(4, 4), y) == -math.inf
    assert r_squared(y.clone(), y) == 1.0


def test_reference_losses_for_cross_entropy_are_ln_k_and_the_label_prior_entropy():
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    outputs = torch.zeros(8, 5)
    refs = dict(
        reference_losses(
            outputs,
            targets,
            nn.CrossEntropyLoss(),
            infer_layout(Task.CLASSIFICATION, outputs, targets, nn.CrossEntropyLoss()),
            -100,
        )
    )
    values = list(refs.values())
    assert values[0] == pytest.approx(math.log(5), abs=1e-6)
    prior = np.bincount(targets.numpy(), minlength=5) / 8
    assert values[1] == pytest.approx(scipy.stats.entropy(prior), abs=1e-5)


def test_reference_losses_for_sequences_honour_ignore_index():
    targets = torch.tensor([[1, 2, -100], [3, 1, -100]])
    outputs = torch.zeros(2, 3, 7)

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, 7), y.reshape(-1))

    layout = infer_layout(Task.SEQUENCE, outputs, targets, loss)
    refs = [v for _, v in reference_losses(outputs, targets, loss, layout, -100)]
    assert refs[0] == pytest.approx(math.log(7), abs=1e-6)
    assert refs[1] == pytest.approx(scipy.stats.entropy([2, 1, 1]), abs=1e-5)


def test_reference_losses_for_mse_are_mean_square_and_variance():
    y = torch.tensor([1.0, 2.0, 4.0, 5.0])
    outputs = torch.zeros(4)
    layout = infer_layout(Task.REGRESSION, outputs, y, nn.MSELoss())
    refs = [v for _, v in reference_losses(outputs, y, nn.MSELoss(), layout, -100)]
    assert refs == pytest.approx([float(np.mean(y.numpy() ** 2)), float(np.var(y.numpy()))])


def test_reference_losses_for_bce_are_ln_2_and_binary_entropy_of_the_prior():
    y = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    outputs = torch.zeros(4, 1)
    layout = infer_layout(Task.CLASSIFICATION, outputs, y, nn.BCEWithLogitsLoss())
    assert layout.kind is TargetKind.BINARY
    refs = [v for _, v in reference_losses(outputs, y, nn.BCEWithLogitsLoss(), layout, -100)]
    assert refs[0] == pytest.approx(math.log(2), abs=1e-6)
    assert refs[1] == pytest.approx(scipy.stats.entropy([0.25, 0.75]), abs=1e-5)


def test_init_loss_check_accepts_ten_percent_and_rejects_more():
    refs = [("ln K", math.log(4))]
    assert check_init_loss(math.log(4) * 1.09, refs, tolerance=0.1, pretrained=False).result.passed
    assert check_init_loss(math.log(4) * 0.91, refs, tolerance=0.1, pretrained=False).result.passed
    failed = check_init_loss(math.log(4) * 1.2, refs, tolerance=0.1, pretrained=False)
    assert not failed.result.passed and "too large a scale" in failed.likely_cause
    too_good = check_init_loss(math.log(4) * 0.5, refs, tolerance=0.1, pretrained=False)
    assert not too_good.result.passed and "pretrained=True" in too_good.likely_cause
    skipped = check_init_loss(0.01, refs, tolerance=0.1, pretrained=True).result
    assert skipped.skipped and not skipped.passed


def test_init_loss_band_spans_both_references():
    # Regression: an untrained output between 0 and the target mean gives Var(y) <= L0 <= E[y²].
    refs = [("E[y²]", 5.0), ("Var(y)", 1.0)]
    for inside in (0.91, 3.0, 5.49):
        assert check_init_loss(inside, refs, tolerance=0.1, pretrained=False).result.passed
    for outside in (0.89, 5.51):
        assert not check_init_loss(outside, refs, tolerance=0.1, pretrained=False).result.passed
    # A sign-flipped loss has negative references; the band follows them.
    flipped = [("ln K", -math.log(4))]
    assert check_init_loss(-math.log(4) * 1.05, flipped, tolerance=0.1, pretrained=False).result.passed


def test_infer_layout_finds_the_class_axis_or_refuses():
    y = torch.zeros(4, 6, dtype=torch.long)
    assert infer_layout(Task.SEQUENCE, torch.zeros(4, 6, 9), y, F.cross_entropy).class_dim == 2
    assert infer_layout(Task.SEQUENCE, torch.zeros(4, 9, 6), y, F.cross_entropy).class_dim == 1
    with pytest.raises(GateError, match="class"):
        infer_layout(Task.SEQUENCE, torch.zeros(4, 6), y, F.cross_entropy)


def _flattened_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def test_class_axis_follows_the_loss_when_there_are_as_many_positions_as_classes():
    """(N, K, T) with K == T fits both readings: torch's losses read axis 1, a custom loss is asked."""
    outputs, y = torch.zeros(4, 6, 6), torch.randint(0, 6, (4, 6), generator=torch.Generator().manual_seed(0))
    for loss in (nn.CrossEntropyLoss(), F.cross_entropy, nn.NLLLoss(), F.nll_loss):
        assert infer_layout(Task.SEQUENCE, outputs, y, loss).class_dim == 1
    assert infer_layout(Task.SEQUENCE, outputs, y, lambda out, t: F.cross_entropy(out, t)).class_dim == 1
    assert infer_layout(Task.SEQUENCE, outputs, y, _flattened_cross_entropy).class_dim == 2
    with pytest.raises(GateError, match="class axis could be 1 or 2"):
        infer_layout(Task.SEQUENCE, outputs, y, lambda out, t: (out * 0).sum())
    # (N, K) against (N,) has one reading whatever the loss: nothing to ask.
    assert (
        infer_layout(Task.CLASSIFICATION, outputs[:, :, 0], y[:, 0], lambda out, t: out.sum()).class_dim == 1
    )


class _LabelSmoothedCrossEntropy(nn.CrossEntropyLoss):
    """A subclass that keeps torch's (N, K, T) reading: only its constructor differs."""

    def __init__(self) -> None:
        super().__init__(label_smoothing=0.1)


def test_class_axis_of_a_cross_entropy_subclass_is_asked_not_assumed():
    """A subclass may flatten (N, T, K) and read the last axis: only torch's own types read axis 1 unasked."""
    outputs, y = torch.zeros(4, 6, 6), torch.randint(0, 6, (4, 6), generator=torch.Generator().manual_seed(0))
    assert infer_layout(Task.SEQUENCE, outputs, y, ClassLastCrossEntropy()).class_dim == 2
    assert infer_layout(Task.SEQUENCE, outputs, y, _LabelSmoothedCrossEntropy()).class_dim == 1


def test_a_loss_without_reduction_is_refused_as_not_scalar_when_the_class_axis_is_probed():
    """Probing K == T with a per-element loss used to end in "the loss does not tell which axis it reads"."""
    outputs, y = torch.zeros(4, 6, 6), torch.randint(0, 6, (4, 6), generator=torch.Generator().manual_seed(0))

    def per_token(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="none")

    with pytest.raises(GateError, match=r"the loss must be a scalar, got a tensor of shape \(24,\)"):
        infer_layout(Task.SEQUENCE, outputs, y, per_token)
    with pytest.raises(
        GateError, match=r"must be a scalar, got a tensor of shape \(4, 6\) \(reduce it first\)"
    ):
        infer_layout(Task.SEQUENCE, outputs, y, lambda out, t: F.cross_entropy(out, t, reduction="none"))


def test_agreement_counts_only_non_ignored_tokens():
    layout = OutputLayout(kind=TargetKind.CLASS_INDEX, class_dim=2, num_classes=3)
    outputs = F.one_hot(torch.tensor([[0, 1, 2, 2]]), 3).float()
    targets = torch.tensor([[0, 1, 1, -100]])
    assert agreement(outputs, targets, layout, -100) == pytest.approx(2 / 3)


def test_known_plateaus_per_layout():
    layout = OutputLayout(kind=TargetKind.CLASS_INDEX, class_dim=1, num_classes=4)
    [(signature, level)] = known_plateaus(layout, torch.zeros(3, dtype=torch.long))
    assert signature is Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY
    assert level == pytest.approx(math.log(1 + 3 / math.e))
    y = torch.tensor([0.0, 2.0])
    assert known_plateaus(OutputLayout(kind=TargetKind.VALUE), y) == [(Signature.PLATEAU_BROADCAST_MSE, 1.0)]


# ---------------------------------------------------------------------------------------------- curve


def _feed(monitor: CurveMonitor, values: list[float]) -> tuple[int, list[Signature]]:
    for step, value in enumerate(values):
        found = monitor.observe(value)
        if found:
            return step, found
    return len(values), []


def test_monitor_threshold_is_one_percent_of_the_way_to_the_floor():
    monitor = CurveMonitor(floor=0.5, max_steps=100)
    monitor.observe(2.5)
    assert monitor.threshold == pytest.approx(0.52, abs=1e-6)
    assert monitor.met(0.519) and not monitor.met(0.53)


def test_monitor_flags_nan_below_floor_and_rising_immediately():
    assert _feed(CurveMonitor(0.0, 100), [1.0, 0.9, math.nan]) == (2, [Signature.NON_FINITE])
    assert _feed(CurveMonitor(0.0, 100), [-0.5]) == (0, [Signature.BELOW_FLOOR])
    assert _feed(CurveMonitor(0.0, 100), [1.0, 1.2, 1.6]) == (2, [Signature.RISING])


def test_monitor_flags_not_learning_exactly_at_ten_percent_of_the_budget():
    flat = [1.0 - 0.0005 * i for i in range(100)]
    assert _feed(CurveMonitor(0.0, 200), flat) == (20, [Signature.NOT_LEARNING])


def test_monitor_names_a_plateau_only_when_flat_at_the_signature():
    level = 0.7437
    curve = [1.386] + [level + 0.3 * math.exp(-i / 5) for i in range(1, 200)]
    step, found = _feed(
        CurveMonitor(0.0, 200, [(Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY, level)]), curve
    )
    assert found == [Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY]
    assert step == 40  # plateau_start = 20 % of the budget
    # The same curve continuing down through the level is not a plateau.
    falling = [1.386 * math.exp(-i / 40) for i in range(200)]
    plateaus = [(Signature.PLATEAU_PROBABILITIES_TO_CROSS_ENTROPY, level)]
    assert _feed(CurveMonitor(0.0, 200, plateaus), falling) == (200, [])


# ---------------------------------------------------------------------------------------------- inventory


class _Hidden(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.registered = nn.Linear(2, 2)
        self.table = {"a": nn.Linear(2, 2)}
        self.scale = torch.ones(2, requires_grad=True)
        self.alias = [self.registered]  # an alias of a registered module is not hidden


def test_hidden_submodules_in_dicts_and_raw_trainable_tensors_are_found():
    hidden = seeded_build(0, _Hidden)
    found = find_hidden_submodules(hidden)
    assert any(item.startswith("table['a'] (Linear") for item in found)
    assert any(item.startswith("scale (tensor with requires_grad=True") for item in found)
    assert not any("alias" in item for item in found)


class _Student(nn.Module):
    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)
        self._teacher = [teacher]  # out of the state dict and the optimizer
        self._frozen_scale = [nn.Parameter(torch.ones(2), requires_grad=False)]


@pytest.mark.parametrize("frozen", [True, False])
def test_inventory_passes_a_frozen_module_hidden_on_purpose_and_fails_a_trainable_one(frozen: bool):
    """Allow-lists match registered names only, so a deliberately hidden frozen copy must pass unlisted."""
    model = _Student(nn.Linear(4, 3).requires_grad_(not frozen))
    finding = check_inventory(model, torch.optim.Adam(model.parameters()), pretrained=False, allow_frozen=())
    assert finding.result.passed is frozen
    assert ("_teacher[0]" in finding.result.detail) is not frozen
    # A hidden frozen Parameter is deliberate too; the trainable teacher is the one problem named.
    assert find_hidden_submodules(_Student(nn.Linear(4, 3))) == [
        "_teacher[0] (Linear, 15 trainable parameters)"
    ]


# ---------------------------------------------------------------------------------------------- gradients


def test_gradient_flow_honours_the_allow_list_patterns():
    grads = [torch.ones(2), None, torch.zeros(3)]
    names = ["a.weight", "padding.weight", "experts.3.weight"]
    failed = check_gradient_flow(names, grads, allow_no_grad=())
    assert not failed.result.passed
    assert "padding.weight" in failed.result.detail and "experts.3.weight" in failed.result.detail
    assert check_gradient_flow(names, grads, allow_no_grad=["padding.*", "experts.*"]).result.passed


def test_gradient_freshness_tells_accumulation_from_other_differences():
    first = [torch.tensor([1.0, -2.0]), torch.tensor([0.5])]
    assert check_gradient_freshness(["a", "b"], first, [g.clone() for g in first]).result.passed
    doubled = check_gradient_freshness(["a", "b"], first, [2 * g for g in first])
    assert "2.000x" in doubled.result.detail and "zero_grad" in doubled.likely_cause
    noisy = check_gradient_freshness(["a", "b"], first, [g + 0.1 for g in first])
    assert not noisy.result.passed and "zero_grad" not in noisy.likely_cause
    never = check_gradient_freshness(["a"], None, None)
    assert not never.result.passed and "optimizer.step()" in never.result.detail


# ---------------------------------------------------------------------------------------------- dependencies


class _BatchMean(nn.Module):
    """Subtracts the batch mean: a hand-written cross-example coupling."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x - x.mean(dim=0, keepdim=True))
        return out


class _CumulativeSum(nn.Module):
    """Output at t sums inputs up to t (causal); ``reverse`` sums from t to the end (not causal)."""

    def __init__(self, reverse: bool) -> None:
        super().__init__()
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse:
            return x.flip(1).cumsum(1).flip(1)
        return x.cumsum(1)


def test_batch_independence_catches_a_batch_mean_and_passes_batchnorm_in_eval_mode():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    coupled = check_batch_independence(
        seeded_build(0, _BatchMean).eval(), x, allow_batch_coupling=False, seed=0
    )
    assert not coupled.result.passed and "20 of 20" in coupled.result.detail
    batchnorm = seeded_build(0, lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))).eval()
    assert check_batch_independence(batchnorm, x, allow_batch_coupling=False, seed=0).result.passed
    allowed = check_batch_independence(seeded_build(0, _BatchMean), x, allow_batch_coupling=True, seed=0)
    assert allowed.result.skipped and not allowed.result.passed


@pytest.mark.parametrize("mix_batch", [False, True])
def test_batch_independence_traces_an_embedding_fed_the_ids_with_axes_swapped(mix_batch: bool):
    """``embedding(ids.t())`` used to go unhooked, so the check was skipped and a mixing bug passed."""
    tokens, _ = sequence_batch(length=6)
    model = seeded_build(7, lambda: TokenSequenceFirstGRUClassifier(mix_batch=mix_batch)).eval()
    finding = check_batch_independence(model, tokens, allow_batch_coupling=False, seed=0)
    assert not finding.result.skipped
    assert "embedding" in finding.result.detail
    assert finding.result.passed is not mix_batch


class _HashedIdsBatchMean(nn.Module):
    """The hashing trick (``embedding(ids % buckets)``) with a batch-mean bug after it."""

    def __init__(self, transposed_copy: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(5, 4)
        self.transposed_copy = transposed_copy

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.transposed_copy:  # a permuted copy, not a view: found by its content
            embedded: torch.Tensor = self.embedding(ids.t().contiguous())
            return embedded.transpose(0, 1).sum(dim=1)
        hidden: torch.Tensor = self.embedding(ids % 5).sum(dim=1)
        return hidden - hidden.mean(dim=0)  # BUG: every example's output moves with the others


class _RolledIdsPrefixSum(nn.Module):
    """Embeds the ids shifted one step left (BUG: position t sees token t + 1), then a prefix sum."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(5, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embedded: torch.Tensor = self.embedding(torch.roll(ids, -1, 1))
        return embedded.cumsum(1)


def test_batch_independence_traces_transformed_ids_square_batches_and_permuted_copies():
    hashed = seeded_build(0, _HashedIdsBatchMean).eval()
    ids = torch.randint(0, 100, (4, 6), generator=torch.Generator().manual_seed(0))
    finding = check_batch_independence(hashed, ids, allow_batch_coupling=False, seed=0)
    assert not finding.result.skipped and not finding.result.passed
    # A stride-1 sliding window over one stream is a symmetric square batch: ids equal ids.t(), so
    # only the view's strides tell that the embedding was fed it transposed.
    stream = torch.randint(0, 16, (15,), generator=torch.Generator().manual_seed(1))
    square = stream.unfold(0, 8, 1).contiguous()
    assert torch.equal(square, square.t())
    model = seeded_build(7, lambda: TokenSequenceFirstGRUClassifier(mix_batch=False)).eval()
    finding = check_batch_independence(model, square, allow_batch_coupling=False, seed=0)
    assert not finding.result.skipped and finding.result.passed, finding.result.detail
    # Rolled ids are no function of the ids position by position: read so, a one-step future leak
    # would pass the causal check. Not traced, the check is skipped instead.
    leak = seeded_build(0, _RolledIdsPrefixSum).eval()
    rolled = check_causal_dependency(leak, ids % 5, causal=True, seed=0)
    assert rolled.result.skipped and not rolled.result.passed
    copied = seeded_build(0, lambda: _HashedIdsBatchMean(transposed_copy=True)).eval()
    finding = check_batch_independence(copied, ids % 5, allow_batch_coupling=False, seed=0)
    assert not finding.result.skipped and finding.result.passed, finding.result.detail


class _FloatIds(nn.Module):
    """Token ids stored as floats and made discrete on the way in (no gradient), optionally mixed."""

    def __init__(self, cast: str, *, mix_batch: bool, embed: bool = True) -> None:
        super().__init__()
        self.cast, self.mix_batch, self.embed = cast, mix_batch, embed
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.cast == "long":
            ids = x.long()
        elif self.cast == "round":
            ids = x.round().long()
        else:
            ids = torch.bucketize(x, torch.arange(9) + 0.5)
        # Without the embedding the ids go one-hot: no nn.Embedding, so no leaf to differentiate.
        embedded = self.embedding(ids) if self.embed else F.one_hot(ids, 10)[..., :4].float()
        # BUG when mix_batch: flattening the time-major copy interleaves examples into each row.
        flat = embedded.transpose(0, 1).reshape(n, -1) if self.mix_batch else embedded.reshape(n, -1)
        out: torch.Tensor = self.head(flat)
        return out


@pytest.mark.parametrize("cast", ["long", "round", "bucketize"])
@pytest.mark.parametrize("mix_batch", [False, True])
def test_batch_independence_traces_float_ids_cast_on_the_way_into_an_embedding(cast: str, mix_batch: bool):
    """Float ids used to be the only leaf: the cast cut every gradient and a mixing bug passed."""
    ids = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0)).float()
    model = seeded_build(0, lambda: _FloatIds(cast, mix_batch=mix_batch)).eval()
    finding = check_batch_independence(model, ids, allow_batch_coupling=False, seed=0)
    assert not finding.result.skipped
    assert "embedding" in finding.result.detail
    assert finding.result.passed is not mix_batch, finding.result.detail


class _DetachedPrefixSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x.detach()).flip(1).cumsum(1).flip(1)  # (a future leak, unseen)
        return out


def test_dependency_checks_skip_when_the_inputs_reach_the_outputs_through_no_gradient():
    """All-zero gradients are no evidence: the weights make the output require grad, the inputs do not."""
    ids = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0)).float()
    one_hot = seeded_build(0, lambda: _FloatIds("long", mix_batch=True, embed=False)).eval()
    mixed = check_batch_independence(one_hot, ids, allow_batch_coupling=False, seed=0).result
    assert mixed.skipped and not mixed.passed
    assert "through no gradient" in mixed.detail and "integer tensor" in mixed.detail
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    detached = check_causal_dependency(_DetachedPrefixSum(), x, causal=True, seed=0).result
    assert detached.skipped and "through no gradient" in detached.detail
    independent = check_batch_independence(_DetachedPrefixSum(), x, allow_batch_coupling=False, seed=0)
    assert independent.result.skipped


class _InPlaceLanguageModel(nn.Module):
    """GPT-style: positions and token types added in place to the token embeddings, then a prefix sum."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(10, 8)
        self.positions = nn.Embedding(5, 8)
        self.token_types = nn.Embedding(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids)
        # (positions and types are read off the ids' shape, not their values: nothing to trace there)
        x += self.positions(torch.arange(ids.shape[1]).expand_as(ids))
        x += self.token_types(torch.zeros_like(ids))
        out: torch.Tensor = self.head(x.cumsum(1))
        return out


class _InPlaceFeatures(nn.Module):
    """Float features clipped and partly zeroed in place before a per-position layer and a prefix sum."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(-1.0, 1.0)
        x[:, :, 0] = 0.0
        out: torch.Tensor = self.linear(x).cumsum(1)
        return out


def test_dependency_checks_let_the_model_write_in_place_into_its_inputs_and_embeddings():
    """The tracing fed a leaf (or a view of one) requiring grad: in-place writes raised, failing the model."""
    ids = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0))
    features = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    for model, inputs, where in (
        (seeded_build(0, _InPlaceLanguageModel).eval(), ids, "embedding"),
        (seeded_build(0, _InPlaceFeatures).eval(), features, "inputs"),
    ):
        independent = check_batch_independence(model, inputs, allow_batch_coupling=False, seed=0).result
        assert independent.passed and not independent.skipped, independent.detail
        assert where in independent.detail
        causal = check_causal_dependency(model, inputs, causal=True, seed=0).result
        assert causal.passed and not causal.skipped, causal.detail
    assert torch.equal(features, torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1)))


class _IdColumn(nn.Module):
    """(N, T, 4) floats: three dense features and an id column, cast and embedded, summed causally."""

    def __init__(self, cast: str, bug: str) -> None:
        super().__init__()
        self.cast, self.bug = cast, bug
        self.dense = nn.Linear(3, 4)
        self.embedding = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        column = x[..., 3]
        ids = column.long() if self.cast == "long" else column.round().long()
        if self.bug == "reordered_ids":
            ids = ids.roll(1, dims=1)  # a one-step shift of the ids: no function of them position by position
        embedded = self.embedding(ids)
        if self.bug == "mixed_examples":
            embedded = embedded.roll(1, dims=0)  # BUG: example i reads example i - 1's ids
        elif self.bug == "future_read":
            embedded = embedded.flip(1)  # BUG: position t reads the id at T - 1 - t
        out: torch.Tensor = self.norm(self.dense(x[..., :3]) + embedded).cumsum(1)
        return out


def _id_column_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (4, 5, 1), generator=generator).float()
    return torch.cat([torch.randn(4, 5, 3, generator=generator), ids], dim=2)


@pytest.mark.parametrize("cast", ["long", "round"])
@pytest.mark.parametrize("bug", ["none", "mixed_examples", "future_read"])
def test_dependency_checks_trace_an_id_column_cast_out_of_a_float_feature_tensor(cast: str, bug: str):
    """The dense columns gave the float leaf a gradient, so a mixing embedding path used to pass unseen."""
    model = seeded_build(0, lambda: _IdColumn(cast, bug)).eval()
    independent = check_batch_independence(
        model, _id_column_batch(), allow_batch_coupling=False, seed=0
    ).result
    causal = check_causal_dependency(model, _id_column_batch(), causal=True, seed=0).result
    assert not independent.skipped and not causal.skipped
    assert independent.passed is (bug != "mixed_examples"), independent.detail
    assert causal.passed is (bug != "future_read"), causal.detail


class _ReversedIdsLanguageModel(nn.Module):
    """Token embeddings plus embeddings of the reversed ids: position t reads the last T - t tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(10, 4)
        self.reversed_tokens = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (self.tokens(ids) + self.reversed_tokens(ids.flip(1))).cumsum(1)
        return out


def test_dependency_checks_skip_naming_an_embedding_fed_ids_they_cannot_map_back_to_examples():
    """Another, traced path gave the outputs a gradient: zeros on the untraced one used to pass."""
    column = seeded_build(0, lambda: _IdColumn("long", "reordered_ids")).eval()
    ids = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0))
    reversed_ids = seeded_build(0, _ReversedIdsLanguageModel).eval()
    for model, inputs, name in (
        (column, _id_column_batch(), "'embedding'"),
        (reversed_ids, ids, "'reversed_tokens'"),
    ):
        for result in (
            check_batch_independence(model, inputs, allow_batch_coupling=False, seed=0).result,
            check_causal_dependency(model, inputs, causal=True, seed=0).result,
        ):
            assert result.skipped and not result.passed
            assert f"nn.Embedding {name} reads ids made from the batch" in result.detail
            assert "'tokens'" not in result.detail


def test_causal_check_passes_a_prefix_sum_and_catches_a_suffix_sum():
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    assert check_causal_dependency(_CumulativeSum(reverse=False), x, causal=True, seed=0).result.passed
    leaking = check_causal_dependency(_CumulativeSum(reverse=True), x, causal=True, seed=0).result
    assert not leaking.passed
    assert leaking.detail.startswith("output at position 0 depends on future positions 1, 2, 3, 4, 5")
    assert check_causal_dependency(_CumulativeSum(reverse=True), x, causal=False, seed=0).result.skipped


def test_causal_check_reads_positions_from_axis_two_for_class_first_outputs():
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    suffix = _CumulativeSum(reverse=True)
    class_first = nn.Sequential(suffix, _Transpose())
    leaking = check_causal_dependency(class_first, x, causal=True, seed=0, output_position_dim=2).result
    assert leaking.detail.startswith("output at position 0 depends on future positions 1, 2, 3, 4, 5")
    prefix = nn.Sequential(_CumulativeSum(reverse=False), _Transpose())
    assert check_causal_dependency(prefix, x, causal=True, seed=0, output_position_dim=2).result.passed


class _Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def test_causal_check_refuses_outputs_without_a_position_axis():
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(GateError, match="position axis"):
        check_causal_dependency(nn.Flatten(), x, causal=True, seed=0)


def test_check_names_are_stable():
    assert [c.value for c in CheckName] == [
        "inventory",
        "init_loss",
        "overfit",
        "failure_signatures",
        "gradient_flow",
        "batch_independence",
        "causal_dependency",
        "gradient_freshness",
        "determinism",
    ]
