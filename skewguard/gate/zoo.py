"""A zoo of tiny models: silent bugs the gate must catch, and correct models it must pass.

Tests and the benchmark share this list, so "every verdict is right" means the same thing in both.
Each bug keeps every shape right and still "trains" in a naive loop; that is what makes it silent.
Models are built under ``torch.random.fork_rng`` with a fixed seed, so building the zoo never moves
the caller's global RNG and always produces the same weights and batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skewguard.gate.checks import LossFn, smoothed_cross_entropy_floor
from skewguard.gate.gate import GateOptions, OverfitGate, TrainStep
from skewguard.gate.report import CheckName, GateReport, Outputs, Task

N_EXAMPLES = 16
N_FEATURES = 8
N_CLASSES = 4
VOCAB = 16
SEQ_LEN = 12
N_SEQUENCES = 8


@dataclass(frozen=True)
class ZooCase:
    """Everything ``OverfitGate.check`` needs for one zoo model, plus the gate's options."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: LossFn
    task: Task
    causal: bool = False
    train_step: TrainStep | None = None
    pretrained: bool = False
    allow_batch_coupling: bool = False
    ignore_index: int = -100
    outputs: Outputs = Outputs.AUTO
    options: GateOptions = field(default_factory=GateOptions)


@dataclass(frozen=True)
class ZooEntry:
    """A named model with the verdict the gate must reach (and, for a bug, the check that must fail)."""

    name: str
    description: str
    build: Callable[[], ZooCase]
    expected_pass: bool
    expected_failed_check: CheckName | None = None


def run_case(case: ZooCase) -> GateReport:
    """Run the gate on one zoo case exactly as a user would."""
    return OverfitGate.from_options(case.options).check(
        case.model,
        case.inputs,
        case.targets,
        case.loss_fn,
        task=case.task,
        causal=case.causal,
        train_step=case.train_step,
        pretrained=case.pretrained,
        allow_batch_coupling=case.allow_batch_coupling,
        ignore_index=case.ignore_index,
        outputs=case.outputs,
    )


def verdict_is_correct(entry: ZooEntry, report: GateReport) -> bool:
    """Right verdict, and for a bug the expected check is among the failed ones."""
    if report.passed != entry.expected_pass:
        return False
    if entry.expected_failed_check is None:
        return True
    return entry.expected_failed_check in {c.name for c in report.failed_checks}


# --------------------------------------------------------------------------------------------------
# batches


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def classification_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """16 random feature vectors with balanced random labels over 4 classes."""
    g = _generator(seed)
    inputs = torch.randn(N_EXAMPLES, N_FEATURES, generator=g)
    labels = torch.arange(N_EXAMPLES) % N_CLASSES
    return inputs, labels[torch.randperm(N_EXAMPLES, generator=g)]


def regression_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """16 random feature vectors with targets of mean 2 and unit spread (so E[y²] != Var(y))."""
    g = _generator(seed)
    inputs = torch.randn(N_EXAMPLES, N_FEATURES, generator=g)
    return inputs, 2.0 + torch.randn(N_EXAMPLES, generator=g)


def image_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """16 random 1x8x8 images with balanced random labels over 4 classes."""
    g = _generator(seed)
    images = torch.randn(N_EXAMPLES, 1, 8, 8, generator=g)
    labels = torch.arange(N_EXAMPLES) % N_CLASSES
    return images, labels[torch.randperm(N_EXAMPLES, generator=g)]


def sequence_batch(seed: int = 0, length: int = SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token prediction on random token sequences; the last position is ignore_index.

    Every sequence starts with its own token, so each prefix is unique and the batch can be
    memorised by a causal model (otherwise two sequences sharing a first token but not a second
    would make 100 % token accuracy impossible).
    """
    g = _generator(seed)
    tokens = torch.randint(0, VOCAB, (N_SEQUENCES, length + 1), generator=g)
    tokens[:, 0] = torch.randperm(VOCAB, generator=g)[:N_SEQUENCES]
    inputs = tokens[:, :-1].clone()
    targets = tokens[:, 1:].clone()
    targets[:, -1] = -100
    return inputs, targets


def feature_sequence_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """16 random float sequences (T=6, 4 features) with balanced labels, for RNN classifiers."""
    g = _generator(seed)
    inputs = torch.randn(N_EXAMPLES, 6, 4, generator=g)
    labels = torch.arange(N_EXAMPLES) % N_CLASSES
    return inputs, labels[torch.randperm(N_EXAMPLES, generator=g)]


# --------------------------------------------------------------------------------------------------
# models


def seeded_build(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with fixed initial weights without moving the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class MLP(nn.Module):
    """Two hidden ReLU layers; the workhorse of the zoo."""

    def __init__(self, out_features: int = N_CLASSES, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or one value per output)."""
        result: torch.Tensor = self.head(self.encoder(x))
        return result


class Regressor(nn.Module):
    """MLP with one output per example, shaped (N,) like the targets (or (N, 1) with the bug)."""

    def __init__(self, *, squeeze: bool = True) -> None:
        super().__init__()
        self.mlp = MLP(out_features=1)
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions; ``squeeze=False`` keeps the (N, 1) shape that broadcasts in MSE."""
        out = self.mlp(x)
        result: torch.Tensor = out.squeeze(-1) if self.squeeze else out
        return result


class SmallCNN(nn.Module):
    """Two conv + BatchNorm blocks, dropout before the head: the BN/dropout traps in one model."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        result: torch.Tensor = self.head(self.dropout(self.features(x)))
        return result


class WrongFlattenCNN(nn.Module):
    """Conv, pool, flatten, head: the head is sized for the unpooled feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 8 * 8, N_CLASSES)  # BUG: 8 channels x 4 x 4 after pooling, not 8 x 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits; raises on the first batch (mat1 and mat2 shapes cannot be multiplied)."""
        features = self.pool(torch.relu(self.conv(x))).flatten(1)
        result: torch.Tensor = self.head(features)
        return result


class GRULanguageModel(nn.Module):
    """Embedding -> batch-first GRU -> vocabulary logits, one prediction per position."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, T, VOCAB) logits."""
        hidden, _ = self.gru(self.embedding(tokens))
        result: torch.Tensor = self.head(hidden)
        return result


class ClassFirstGRULanguageModel(GRULanguageModel):
    """The GRU language model with its logits laid out (N, VOCAB, T), as ``F.cross_entropy`` takes them."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, VOCAB, T) logits."""
        return super().forward(tokens).transpose(1, 2)


class SequenceFirstGRUClassifier(nn.Module):
    """A GRU in its default sequence-first layout; the bug is how (N, T, F) is turned into (T, N, F)."""

    def __init__(self, *, mix_batch: bool) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 32)
        self.head = nn.Linear(32, N_CLASSES)
        self.mix_batch = mix_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, F) -> class logits from the last hidden state."""
        n, t, f = x.shape
        # BUG when mix_batch: .view keeps the shape right but interleaves examples and time steps.
        seq_first = x.view(t, n, f) if self.mix_batch else x.transpose(0, 1)
        _, hidden = self.gru(seq_first)
        result: torch.Tensor = self.head(hidden[-1])
        return result


class TokenSequenceFirstGRUClassifier(nn.Module):
    """Token ids embedded sequence-first (``embedding(tokens.t())``); the bug is how the output is undone."""

    def __init__(self, *, mix_batch: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.gru = nn.GRU(16, 32)
        self.head = nn.Linear(32, N_CLASSES)
        self.mix_batch = mix_batch

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> class logits from the mean of the hidden states."""
        n, t = tokens.shape
        hidden, _ = self.gru(self.embedding(tokens.t()))  # (T, N, H)
        # BUG when mix_batch: .view keeps the shape right but interleaves time steps and examples.
        batch_first = hidden.view(n, t, -1) if self.mix_batch else hidden.transpose(0, 1)
        result: torch.Tensor = self.head(batch_first.mean(dim=1))
        return result


class FloatTokenClassifier(nn.Module):
    """Token ids stored as floats (as a CSV or numpy loader leaves them), cast with ``.long()`` to embed."""

    def __init__(self, *, mix_batch: bool, length: int = 6) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16 * length, N_CLASSES)
        nn.init.normal_(self.head.weight, std=0.02)  # small output init: initial loss ~ ln K
        nn.init.zeros_(self.head.bias)
        self.mix_batch = mix_batch

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, T) float token ids -> class logits from the flattened embeddings."""
        n = ids.shape[0]
        embedded = self.embedding(ids.long())  # (N, T, E); the cast has no gradient
        # BUG when mix_batch: flattening the time-major copy interleaves examples into each row.
        flat = embedded.transpose(0, 1).reshape(n, -1) if self.mix_batch else embedded.reshape(n, -1)
        result: torch.Tensor = self.head(flat)
        return result


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``scramble_heads`` splits heads with a plain reshape."""

    def __init__(self, dim: int, heads: int, *, scramble_heads: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.scramble_heads = scramble_heads

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        if self.scramble_heads:
            # BUG: (N, T, D) reshaped to (N, H, T, D/H) mixes positions into each "head row".
            return x.reshape(n, self.heads, t, d // self.heads)
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causally masked attention over positions."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), is_causal=True
        )
        result: torch.Tensor = self.proj(attended.transpose(1, 2).reshape(n, t, d))
        return result


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, heads: int, *, scramble_heads: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads, scramble_heads=scramble_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual attention then residual MLP."""
        x = x + self.attention(self.norm1(x))
        result: torch.Tensor = x + self.mlp(self.norm2(x))
        return result


class TinyTransformerLM(nn.Module):
    """Two-layer causal transformer language model (GPT-style, learned positions)."""

    def __init__(
        self, *, scramble_heads: bool = False, dim: int = 32, heads: int = 2, layers: int = 2
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Embedding(SEQ_LEN, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, scramble_heads=scramble_heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)
        # GPT-2 style small output init, so the untrained model predicts ~uniformly (loss ~ ln V).
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, T, VOCAB) logits."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        result: torch.Tensor = self.head(self.norm(x))
        return result


class InPlacePositionsTransformerLM(TinyTransformerLM):
    """The transformer LM adding its positions in place, GPT-style: ``x = tok(ids); x += pos(...)``.

    Correct, and fine in training; the gate's tracing must let it write into the embedding output.
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, T, VOCAB) logits."""
        x = self.tokens(tokens)
        x += self.positions(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        result: torch.Tensor = self.head(self.norm(x))
        return result


class FloatIdColumnClassifier(nn.Module):
    """Dense features and one id column in one float tensor; the id column is cast and embedded.

    ``x[:, -1].long()`` is neither the batch nor a view of it, so only following the cast back to the
    float column lets the gate see where the embedding's rows come from.
    """

    def __init__(self, *, mix_batch: bool) -> None:
        super().__init__()
        self.dense = nn.Linear(N_FEATURES - 1, 32)
        self.embedding = nn.Embedding(VOCAB, 32)
        self.head = nn.Linear(64, N_CLASSES)
        nn.init.normal_(self.head.weight, std=0.02)  # small output init: initial loss ~ ln K
        nn.init.zeros_(self.head.bias)
        self.mix_batch = mix_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, N_FEATURES) floats, the last column an id -> class logits."""
        embedded = self.embedding(x[:, -1].long())  # the cast has no gradient
        # BUG when mix_batch: example i is given the id of example i - 1 (a shift meant for time steps).
        embedded = embedded.roll(1, dims=0) if self.mix_batch else embedded
        result: torch.Tensor = self.head(torch.cat([torch.relu(self.dense(x[:, :-1])), embedded], dim=1))
        return result


class ClassLastCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy for (N, T, K) logits: a subclass that flattens, so it reads the *last* axis."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy over (N * T, K) logits."""
        return super().forward(input.reshape(-1, input.shape[-1]), target.reshape(-1))


class SoftmaxMLP(nn.Module):
    """An MLP whose forward already applies softmax: fine for inference, wrong for CrossEntropyLoss."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (BUG when fed to cross-entropy, which applies its own log-softmax)."""
        return torch.softmax(self.mlp(x), dim=-1)


class DetachedEncoderMLP(MLP):
    """The encoder's output is detached (e.g. left over from a feature-extraction experiment)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head on detached features (BUG: the encoder never trains)."""
        result: torch.Tensor = self.head(self.encoder(x).detach())
        return result


class PlainListMLP(nn.Module):
    """Hidden layers kept in a plain Python list instead of nn.ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = [nn.Linear(N_FEATURES, 64), nn.Linear(64, 64)]  # BUG: should be nn.ModuleList
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; the hidden layers run but are invisible to parameters()."""
        for layer in self.layers:
            x = torch.relu(layer(x))
        result: torch.Tensor = self.head(x)
        return result


class FrozenTeacherResidualMLP(MLP):
    """Learns a residual on a frozen teacher's logits; the teacher sits in a plain list on purpose.

    The list keeps the teacher out of ``parameters()``, the state dict and the optimizer: it is
    frozen and saved elsewhere, so hiding it is deliberate, not the plain-list bug.
    """

    def __init__(self) -> None:
        super().__init__()
        self._teacher = [MLP().requires_grad_(False)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits plus the student's correction."""
        with torch.no_grad():
            prior: torch.Tensor = self._teacher[0](x)
        return prior + super().forward(x)


class LogFeatureMLP(MLP):
    """Log-compresses the first layer's pre-activations without making them positive first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from log(pre-activations) (BUG: signed values, and the log of a negative is NaN)."""
        compressed = torch.log(self.encoder[0](x))
        result: torch.Tensor = self.head(self.encoder[3](self.encoder[2](compressed)))
        return result


def _frozen_encoder_mlp() -> nn.Module:
    model = MLP()
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)  # BUG: left over from a fine-tuning script; nothing is pretrained
    return model


def _normal_init_mlp() -> nn.Module:
    model = MLP()
    for parameter in model.parameters():
        nn.init.normal_(parameter)  # BUG: N(0, 1) for every weight ignores fan-in; logits explode
    return model


# --------------------------------------------------------------------------------------------------
# losses and training steps


def negated_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with its sign flipped (BUG: a "log-likelihood" returned without the minus)."""
    return -F.cross_entropy(outputs, targets)


def step_without_zero_grad(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
) -> torch.Tensor:
    """A hand-written step that forgets optimizer.zero_grad() (BUG: gradients accumulate)."""
    loss = loss_fn(model(inputs), targets)
    torch.autograd.backward(loss)
    optimizer.step()
    return loss.detach()


def step_with_unseeded_augmentation(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
) -> torch.Tensor:
    """Adds input jitter from a fresh, unseeded numpy Generator each step (BUG: not reproducible)."""
    rng = np.random.default_rng()  # BUG: no seed -> OS entropy, different every run
    noise = torch.from_numpy(rng.normal(0.0, 0.05, size=tuple(inputs.shape))).to(inputs.dtype)
    optimizer.zero_grad()
    loss = loss_fn(model(inputs + noise), targets)
    torch.autograd.backward(loss)
    optimizer.step()
    return loss.detach()


def head_only_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Builds the optimizer from the head alone (BUG: the encoder is never updated)."""
    head = model.get_submodule("head")
    return torch.optim.Adam(head.parameters(), lr=lr)


# --------------------------------------------------------------------------------------------------
# cases


def _classifier_case(
    make: Callable[[], nn.Module],
    loss_fn: LossFn | None = None,
    *,
    train_step: TrainStep | None = None,
    options: GateOptions | None = None,
) -> ZooCase:
    inputs, targets = classification_batch()
    return ZooCase(
        model=seeded_build(1, make),
        inputs=inputs,
        targets=targets,
        loss_fn=loss_fn if loss_fn is not None else nn.CrossEntropyLoss(),
        task=Task.CLASSIFICATION,
        train_step=train_step,
        options=options if options is not None else GateOptions(),
    )


def _mlp_classifier() -> ZooCase:
    return _classifier_case(MLP)


def _case(
    seed: int,
    make: Callable[[], nn.Module],
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn,
    task: Task = Task.CLASSIFICATION,
    *,
    causal: bool = False,
) -> ZooCase:
    """A zoo case from a seeded model, its batch (inputs, targets), its loss and its task."""
    inputs, targets = batch
    return ZooCase(
        model=seeded_build(seed, make),
        inputs=inputs,
        targets=targets,
        loss_fn=loss_fn,
        task=task,
        causal=causal,
    )


def _cnn_batchnorm_dropout() -> ZooCase:
    return _case(2, SmallCNN, image_batch(), nn.CrossEntropyLoss())


def _label_smoothing_classifier() -> ZooCase:
    floor = smoothed_cross_entropy_floor(N_CLASSES, 0.1)
    return _classifier_case(
        MLP, nn.CrossEntropyLoss(label_smoothing=0.1), options=GateOptions(loss_floor=floor)
    )


def _gru_sequence_model() -> ZooCase:
    return _case(3, GRULanguageModel, sequence_batch(), _sequence_cross_entropy, Task.SEQUENCE, causal=True)


def _class_first_sequence_model() -> ZooCase:
    """Classes on axis 1, as many positions as classes: the loss, not the shape, names the class axis."""
    batch = sequence_batch(length=VOCAB)
    return _case(3, ClassFirstGRULanguageModel, batch, nn.CrossEntropyLoss(), Task.SEQUENCE, causal=True)


def _class_last_cross_entropy_subclass() -> ZooCase:
    """Classes last, as many positions as classes, and a CrossEntropyLoss subclass that flattens."""
    batch = sequence_batch(length=VOCAB)
    return _case(3, GRULanguageModel, batch, ClassLastCrossEntropy(), Task.SEQUENCE, causal=True)


def _sequence_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _transformer_case(*, scramble_heads: bool, in_place: bool = False) -> ZooCase:
    make = (
        InPlacePositionsTransformerLM
        if in_place
        else partial(TinyTransformerLM, scramble_heads=scramble_heads)
    )
    return _case(4, make, sequence_batch(), _sequence_cross_entropy, Task.SEQUENCE, causal=True)


def _mlp_regression() -> ZooCase:
    return _case(5, Regressor, regression_batch(), nn.MSELoss(), Task.REGRESSION)


def _broadcast_mse() -> ZooCase:
    return _case(5, lambda: Regressor(squeeze=False), regression_batch(), nn.MSELoss(), Task.REGRESSION)


def _batch_mixing_view() -> ZooCase:
    make = partial(SequenceFirstGRUClassifier, mix_batch=True)
    return _case(6, make, feature_sequence_batch(), nn.CrossEntropyLoss())


def _token_sequence_first(*, mix_batch: bool) -> ZooCase:
    tokens, _ = sequence_batch(length=6)
    batch = tokens, torch.arange(N_SEQUENCES) % N_CLASSES
    make = partial(TokenSequenceFirstGRUClassifier, mix_batch=mix_batch)
    return _case(7, make, batch, nn.CrossEntropyLoss())


def _float_token_batch_mixing() -> ZooCase:
    tokens, _ = sequence_batch(length=6)
    batch = tokens.float(), torch.arange(N_SEQUENCES) % N_CLASSES
    return _case(7, partial(FloatTokenClassifier, mix_batch=True), batch, nn.CrossEntropyLoss())


def _float_id_column_batch_mixing() -> ZooCase:
    inputs, labels = classification_batch()
    ids = torch.randint(0, VOCAB, (N_EXAMPLES,), generator=_generator(10))
    inputs[:, -1] = ids.float()
    return _case(
        10, partial(FloatIdColumnClassifier, mix_batch=True), (inputs, labels), nn.CrossEntropyLoss()
    )


def _mse_one_hot_classifier() -> ZooCase:
    inputs, labels = classification_batch()
    return _case(8, MLP, (inputs, F.one_hot(labels, N_CLASSES).float()), nn.MSELoss())


def _soft_label_classifier() -> ZooCase:
    """Distillation: cross-entropy against a teacher's class probabilities (floor: their entropy)."""
    inputs, labels = classification_batch()
    noise = torch.randn(N_EXAMPLES, N_CLASSES, generator=_generator(9))
    teacher = F.softmax(3.0 * F.one_hot(labels, N_CLASSES).float() + noise, dim=1)
    return _case(9, MLP, (inputs, teacher), nn.CrossEntropyLoss())


def zoo() -> list[ZooEntry]:
    """Every zoo model: correct ones first, then the bugs."""
    return [
        ZooEntry("mlp_classifier", "2-hidden-layer MLP, cross-entropy", _mlp_classifier, True),
        ZooEntry("cnn_batchnorm_dropout", "CNN with BatchNorm and dropout", _cnn_batchnorm_dropout, True),
        ZooEntry(
            "label_smoothing_classifier",
            "MLP with label smoothing 0.1 (floor H(q))",
            _label_smoothing_classifier,
            True,
        ),
        ZooEntry(
            "gru_sequence_model",
            "GRU language model, ignore_index on the last position",
            _gru_sequence_model,
            True,
        ),
        ZooEntry(
            "class_first_sequence_model",
            "GRU language model with (N, VOCAB, T) logits and T == VOCAB, nn.CrossEntropyLoss",
            _class_first_sequence_model,
            True,
        ),
        ZooEntry(
            "causal_transformer_lm",
            "2-layer causal transformer LM",
            lambda: _transformer_case(scramble_heads=False),
            True,
        ),
        ZooEntry(
            "in_place_positions_transformer_lm",
            "the causal transformer LM adding positions in place (x = tok(ids); x += pos(...))",
            lambda: _transformer_case(scramble_heads=False, in_place=True),
            True,
        ),
        ZooEntry(
            "cross_entropy_subclass_class_last",
            "GRU language model with (N, T, VOCAB) logits, T == VOCAB, a CrossEntropyLoss subclass that "
            "flattens",
            _class_last_cross_entropy_subclass,
            True,
        ),
        ZooEntry("mlp_regression", "MLP regressor, MSE, R² >= 0.999", _mlp_regression, True),
        ZooEntry(
            "mse_one_hot_classifier",
            "MLP fitted to one-hot targets with MSE (outputs are the targets' values, not logits)",
            _mse_one_hot_classifier,
            True,
        ),
        ZooEntry(
            "soft_label_classifier",
            "MLP distilled from a teacher's probabilities (cross-entropy floor: their entropy)",
            _soft_label_classifier,
            True,
        ),
        ZooEntry(
            "frozen_teacher_in_plain_list",
            "residual on a frozen teacher kept in a plain list (out of state dict and optimizer) on purpose",
            lambda: _classifier_case(FrozenTeacherResidualMLP),
            True,
        ),
        ZooEntry(
            "token_sequence_first_gru",
            "token ids embedded as embedding(tokens.t()) for a sequence-first GRU, undone with .transpose",
            lambda: _token_sequence_first(mix_batch=False),
            True,
        ),
        ZooEntry(
            "batch_mixing_view",
            "(N, T, F).view(T, N, F) instead of .transpose(0, 1) before a sequence-first GRU",
            _batch_mixing_view,
            False,
            CheckName.BATCH_INDEPENDENCE,
        ),
        ZooEntry(
            "token_batch_mixing_view",
            "embedding(tokens.t()) through a sequence-first GRU, undone with .view(N, T, H)",
            lambda: _token_sequence_first(mix_batch=True),
            False,
            CheckName.BATCH_INDEPENDENCE,
        ),
        ZooEntry(
            "float_token_batch_mixing",
            "float token ids, embedding(ids.long()), flattened with .transpose(0, 1).reshape(N, -1)",
            _float_token_batch_mixing,
            False,
            CheckName.BATCH_INDEPENDENCE,
        ),
        ZooEntry(
            "float_id_column_batch_mixing",
            "an id column of a float feature tensor, embedding(x[:, -1].long()), rolled one example",
            _float_id_column_batch_mixing,
            False,
            CheckName.BATCH_INDEPENDENCE,
        ),
        ZooEntry(
            "token_scrambling_view",
            "attention heads split with .view(N, H, T, d) instead of .view(N, T, H, d).transpose(1, 2)",
            lambda: _transformer_case(scramble_heads=True),
            False,
            CheckName.CAUSAL_DEPENDENCY,
        ),
        ZooEntry(
            "forward_shape_crash",
            "head sized for the unpooled feature map: the forward pass raises on the batch",
            lambda: _case(2, WrongFlattenCNN, image_batch(), nn.CrossEntropyLoss()),
            False,
            CheckName.INIT_LOSS,
        ),
        ZooEntry(
            "loss_sign_flip",
            "custom loss returns -cross_entropy",
            lambda: _classifier_case(MLP, negated_cross_entropy),
            False,
            CheckName.OVERFIT,
        ),
        ZooEntry(
            "probabilities_to_cross_entropy",
            "softmax in the model, then nn.CrossEntropyLoss",
            lambda: _classifier_case(SoftmaxMLP),
            False,
            CheckName.FAILURE_SIGNATURES,
        ),
        ZooEntry(
            "broadcast_mse",
            "predictions (N, 1) against targets (N,) in MSELoss",
            _broadcast_mse,
            False,
            CheckName.FAILURE_SIGNATURES,
        ),
        ZooEntry(
            "detached_encoder",
            "encoder output .detach()ed before the head",
            lambda: _classifier_case(DetachedEncoderMLP),
            False,
            CheckName.GRADIENT_FLOW,
        ),
        ZooEntry(
            "plain_list_submodules",
            "hidden layers in a plain Python list",
            lambda: _classifier_case(PlainListMLP),
            False,
            CheckName.INVENTORY,
        ),
        ZooEntry(
            "missing_zero_grad",
            "custom train_step without optimizer.zero_grad()",
            lambda: _classifier_case(MLP, train_step=step_without_zero_grad),
            False,
            CheckName.GRADIENT_FRESHNESS,
        ),
        ZooEntry(
            "nan_log_negative",
            "log of signed pre-activations",
            lambda: _classifier_case(LogFeatureMLP),
            False,
            CheckName.FAILURE_SIGNATURES,
        ),
        ZooEntry(
            "frozen_parameters",
            "encoder left with requires_grad=False on a randomly initialised model",
            lambda: _classifier_case(_frozen_encoder_mlp),
            False,
            CheckName.INVENTORY,
        ),
        ZooEntry(
            "optimizer_misses_params",
            "optimizer built from the head's parameters only",
            lambda: _classifier_case(MLP, options=GateOptions(optimizer_factory=head_only_optimizer)),
            False,
            CheckName.INVENTORY,
        ),
        ZooEntry(
            "unseeded_augmentation",
            "train_step jitters inputs with an unseeded numpy Generator",
            lambda: _classifier_case(MLP, train_step=step_with_unseeded_augmentation),
            False,
            CheckName.DETERMINISM,
        ),
        ZooEntry(
            "normal_init_everywhere",
            "every parameter initialised N(0, 1), ignoring fan-in",
            lambda: _classifier_case(_normal_init_mlp),
            False,
            CheckName.INIT_LOSS,
        ),
    ]


def zoo_entry(name: str) -> ZooEntry:
    """One zoo entry by name; KeyError names the known models."""
    for entry in zoo():
        if entry.name == name:
            return entry
    msg = f"no zoo model named {name!r}; known: {[e.name for e in zoo()]}"
    raise KeyError(msg)
