"""``retrain(config)``: the retraining pipeline the overfit gate guards, stage by stage, failing fast.

load raw rows → GX validation of the raw inputs (and the label) → split, fit FeatureState, compute
features, fit the encoder → overfit gate on one cached training batch (rows whose encoded inputs no
row with another label shares: see ``gate_candidate_rows``) → full training with early stopping (a
run in which no epoch beats the initial weights stops: they are untrained) → holdout evaluation
against production → artifacts (weights, encoder, state, baseline, gate report, metrics) in a
staging directory → registered under the next version number.

Nothing is written under a version name until every artifact exists: the staging directory is
renamed into place by the registry (see ``skewguard.pipeline.registry``), and removed if any stage
fails, so a stopped run leaves no model directory behind.

Reproducibility: torch's global generator is seeded from ``config.seed`` inside the run and restored
afterwards (the caller's RNG state is untouched), shuffling uses a seeded ``torch.Generator``, and the
split is a hash of the id column's text (or a seeded permutation), so the same data and config give
the same weights. Null ids are refused: one turns an integer id column into floats, whose text
("101.0" for 101) would hash every row into another split. torch runs with
``config.threads`` intra-op threads (1 by default) and the caller's setting is restored.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from features import FeatureError, FeatureSet, FeatureState, InputType
from skewguard import __version__
from skewguard.baseline import BaselineOptions, PredictionKind, build_baseline
from skewguard.config import import_object
from skewguard.datafiles import count_rows, decode_json_lists, iter_chunks
from skewguard.errors import ConfigError, DataError, GateError, SkewguardError
from skewguard.gate import GateReport, OverfitGate, Task
from skewguard.gate.gate import preserved_random_state, seed_everything
from skewguard.labels import holdout_metrics
from skewguard.pipeline.artifacts import (
    BASELINE_DIR,
    ENCODER,
    FEATURE_STATE,
    GATE_CURVE,
    GATE_REPORT,
    MANIFEST,
    METRICS,
    MODEL_FORMAT,
    WEIGHTS,
    TrainedModel,
    build_module,
    load_trained_model,
    predict_scores,
    save_weights,
    sha256_file,
)
from skewguard.pipeline.config import RetrainConfig
from skewguard.pipeline.encoder import FeatureEncoder
from skewguard.pipeline.metrics import BinaryMetrics, HoldoutComparison, binary_metrics
from skewguard.pipeline.registry import ModelRegistry, VersionStatus
from skewguard.pipeline.stages import (
    GateStopped,
    HoldoutStopped,
    RetrainProgress,
    RetrainStopped,
    SilentProgress,
    Stage,
    ValidationStopped,
)
from skewguard.pipeline.training import (
    TrainingDiverged,
    TrainingOptions,
    TrainingOutcome,
    train_with_early_stopping,
)
from skewguard.validation import SuiteTarget, ValidationReport, Violation, build_suite, validate_frame

#: Column the model's scores are put in for the baseline build (a name no feature set uses).
SCORE_COLUMN = "__skewguard_score__"


@dataclass(frozen=True)
class DataFile:
    """One input file as the manifest records it."""

    path: str
    sha256: str
    bytes: int
    rows: int


@dataclass(frozen=True)
class SplitSizes:
    """Rows per split."""

    train: int
    validation: int
    holdout: int


@dataclass(frozen=True)
class RetrainResult:
    """A produced model version and the evidence behind it."""

    model_name: str
    version: str
    directory: Path
    status: VersionStatus
    feature_state_hash: str
    rows: SplitSizes
    gate: GateReport
    training: TrainingOutcome
    comparison: HoldoutComparison
    model: TrainedModel
    """The trained module with its encoder and state, as the directory holds them (for scoring)."""
    seconds: dict[Stage, float] = field(default_factory=dict)


@contextmanager
def _torch_session(seed: int, threads: int) -> Iterator[None]:
    """Seeded global RNGs and a thread count for the run; the caller's state is restored afterwards."""
    previous = torch.get_num_threads()
    with preserved_random_state():
        seed_everything(seed)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def retrain(
    config: RetrainConfig,
    *,
    raw: pd.DataFrame | None = None,
    holdout: pd.DataFrame | None = None,
    progress: RetrainProgress | None = None,
) -> RetrainResult:
    """Run the pipeline; raw rows come from ``config.data.files`` unless ``raw`` is given.

    ``holdout`` (or ``config.data.holdout_files``) is a fixed holdout set; without one, the holdout is
    ``data.holdout_fraction`` of the rows chosen by a hash of ``data.id_column``, so a row stays in
    the holdout across runs. Raises ``RetrainStopped`` (a subclass per stage) when a stage stops the
    run, ``ConfigError``/``DataError`` for unusable configuration or data.
    """
    with _torch_session(config.seed, config.threads):
        return _Pipeline(config, progress or SilentProgress()).run(raw, holdout)


def _timestamp_view(frame: pd.DataFrame, feature_set: FeatureSet) -> pd.DataFrame:
    """Timestamp inputs as object columns of Timestamps, the form the raw suite's type check accepts.

    GX's type-list expectation compares a typed column's dtype with the listed types, and no type
    name matches ``datetime64[ns, tz]``, so a parquet file (or a frame) with an aware timestamp
    column would fail a check it satisfies. As object columns GX checks each value's type instead.
    """
    view = frame.copy(deep=False)
    for spec in feature_set.inputs.values():
        column = view.get(spec.name) if spec.type is InputType.TIMESTAMP else None
        if column is not None and isinstance(column.dtype, pd.DatetimeTZDtype):
            view[spec.name] = column.astype(object)
    return view


def _label_violations(frame: pd.DataFrame, label: str) -> list[Violation]:
    if label not in frame.columns:
        return [Violation(label, "skewguard_label", "the label column must exist (data.label)")]
    values = pd.to_numeric(frame[label], errors="coerce")
    nulls = int(values.isna().sum())
    bad = values.notna() & ~values.isin([0, 1])
    found: list[Violation] = []
    if nulls:
        examples = tuple(frame.loc[values.isna(), label].head(5).tolist())
        found.append(
            Violation(label, "skewguard_label", "labels must be present and numeric 0/1", nulls, examples)
        )
    if bad.any():
        examples = tuple(frame.loc[bad, label].head(5).tolist())
        found.append(Violation(label, "skewguard_label", "labels must be 0 or 1", int(bad.sum()), examples))
    return found


def _unit_hash(ids: pd.Series[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A stable pseudo-uniform number in [0, 1) per id: the same id lands in the same split every run."""
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy(dtype="uint64")
    unit: np.ndarray[Any, np.dtype[np.float64]] = (hashed >> np.uint64(11)).astype("float64") / float(1 << 53)
    return unit


def gate_candidate_rows(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rows the gate batch may be drawn from: one per distinct encoded input, if its label is consistent.

    The gate passes a classifier only at 100 % agreement with the targets. Rows whose encoded inputs
    are identical get identical outputs, so if their labels differ (two impressions of the same ad
    context, one clicked: common in click logs) no model can reach the targets and the gate would
    blame a correct model. Such rows are left out entirely; a duplicate with the same label is kept
    once. Returns row indices in ascending order.
    """
    # NaN equals nothing, so unique() would keep identical rows holding one apart: NaNs are compared
    # as a flag column beside zeros instead.
    flat = inputs.reshape(len(inputs), -1)
    if flat.is_floating_point():
        missing = torch.isnan(flat)
        flat = torch.cat([torch.where(missing, torch.zeros_like(flat), flat), missing.to(flat.dtype)], dim=1)
    _, group, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
    groups, labels = len(counts), targets.to(torch.float64)
    low = torch.full((groups,), math.inf, dtype=torch.float64).scatter_reduce(0, group, labels, "amin")
    high = torch.full((groups,), -math.inf, dtype=torch.float64).scatter_reduce(0, group, labels, "amax")
    positions = torch.arange(len(inputs))
    first = torch.full((groups,), len(inputs), dtype=positions.dtype).scatter_reduce(
        0, group, positions, "amin"
    )
    return torch.sort(first[low == high]).values


class _Pipeline:
    """One run's state, stage by stage."""

    def __init__(self, config: RetrainConfig, progress: RetrainProgress) -> None:
        self.config = config
        self.progress = progress
        self.seconds: dict[Stage, float] = {}
        self.registry = ModelRegistry(config.models_dir, config.model_name)
        self.feature_set: FeatureSet = import_object(
            config.data.features, expected=FeatureSet, what="data.features"
        )
        self._clock = time.perf_counter()

    def _done(self, stage: Stage, summary: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._clock
        self._clock = now
        self.progress.finish(stage, summary)

    # -- load ----------------------------------------------------------------------------------------

    def _read(self, paths: list[Path], key: str) -> tuple[pd.DataFrame, list[DataFile]]:
        lists = [s.name for s in self.feature_set.inputs.values() if s.type is InputType.TIMESTAMP_LIST]
        frames: list[pd.DataFrame] = []
        files: list[DataFile] = []
        for path in paths:
            if not path.is_file():
                msg = f"key {key!r}: data file {str(path)!r} does not exist"
                raise ConfigError(msg)
            rows = 0
            for chunk in iter_chunks(path, self.config.data.chunk_rows):
                frames.append(decode_json_lists(chunk, lists))
                rows += len(chunk)
                self.progress.advance(Stage.LOAD, len(chunk))
            files.append(DataFile(str(path), sha256_file(path), path.stat().st_size, rows))
        if not frames or sum(len(f) for f in frames) == 0:
            msg = f"key {key!r}: the data file(s) hold no rows"
            raise DataError(msg)
        return pd.concat(frames, ignore_index=True), files

    def load(
        self, raw: pd.DataFrame | None, holdout: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, pd.DataFrame | None, list[DataFile], list[DataFile]]:
        data = self.config.data
        if raw is None and not data.files:
            msg = "key 'data.files': no training data given (list csv/parquet files, or pass a frame)"
            raise ConfigError(msg)
        paths = [*(data.files if raw is None else []), *(data.holdout_files if holdout is None else [])]
        counts = [count_rows(p) if p.is_file() else None for p in paths]
        total = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
        self.progress.start(Stage.LOAD, total)
        files: list[DataFile] = []
        if raw is None:
            raw, files = self._read(list(data.files), "data.files")
        elif raw.empty:
            msg = "the training frame holds no rows"
            raise DataError(msg)
        holdout_files: list[DataFile] = []
        if holdout is None and data.holdout_files:
            holdout, holdout_files = self._read(list(data.holdout_files), "data.holdout_files")
        rows = len(raw) + (0 if holdout is None else len(holdout))
        self._done(Stage.LOAD, f"{rows:,} raw rows from {len(files) + len(holdout_files) or 'a'} source(s)")
        return (
            raw.reset_index(drop=True),
            None if holdout is None else holdout.reset_index(drop=True),
            (files),
            holdout_files,
        )

    # -- validate ------------------------------------------------------------------------------------

    def validate(self, raw: pd.DataFrame, holdout: pd.DataFrame | None) -> ValidationReport:
        self.progress.start(Stage.VALIDATE, None)
        frame = raw if holdout is None else pd.concat([raw, holdout], ignore_index=True)
        suite = build_suite(self.feature_set, SuiteTarget.RAW)
        report = validate_frame(
            _timestamp_view(frame, self.feature_set),
            suite,
            feature_set=self.feature_set,
            target=SuiteTarget.RAW,
        )
        label = _label_violations(frame, self.config.data.label)
        report = replace(report, checked=report.checked + 1, violations=[*report.violations, *label])
        if not report.ok:
            raise ValidationStopped(report)
        self._done(Stage.VALIDATE, f"{report.rows:,} rows passed {report.checked} checks ({report.suite})")
        return report

    # -- split, fit, features --------------------------------------------------------------------------

    def split(
        self, raw: pd.DataFrame, holdout: pd.DataFrame | None
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        data = self.config.data
        if data.id_column is not None:
            if data.id_column not in raw.columns:
                msg = f"key 'data.id_column' = {data.id_column!r}: the data has no such column"
                raise ConfigError(msg)
            ids = raw[data.id_column]
            missing = ids.isna().to_numpy()
            if missing.any():
                # A null id has no stable hash (and its presence changes the column's dtype): refuse.
                msg = (
                    f"key 'data.id_column' = {data.id_column!r}: {int(missing.sum())} row(s) have no id "
                    f"(first: row {int(np.flatnonzero(missing)[0])} of the training data); the holdout "
                    "split hashes the id, so every row needs one"
                )
                raise DataError(msg)
            unit = _unit_hash(ids)
        else:
            generator = np.random.default_rng(self.config.seed)
            unit = generator.permutation(len(raw)) / len(raw)
        holdout_share = 0.0 if holdout is not None else data.holdout_fraction
        in_holdout = unit < holdout_share
        in_validation = (unit >= holdout_share) & (unit < holdout_share + data.validation_fraction)
        in_train = ~(in_holdout | in_validation)
        held = raw[in_holdout] if holdout is None else holdout
        parts = {"training": raw[in_train], "validation": raw[in_validation], "holdout": held}
        for name, part in parts.items():
            if len(part) == 0:
                msg = f"the {name} split is empty ({len(raw)} rows); use more data or other data.*_fraction"
                raise DataError(msg)
        return parts["training"], parts["validation"], parts["holdout"]

    def _check_sizes(self, train_rows: int) -> None:
        gate, baseline = self.config.gate, self.config.baseline
        if gate.batch_size > train_rows:
            msg = f"key 'gate.batch_size' = {gate.batch_size}: larger than the {train_rows} training rows"
            raise ConfigError(msg)
        if train_rows <= (baseline.holdout_every - 1) * baseline.window_size:
            msg = (
                f"key 'baseline.window_size' = {baseline.window_size}: the baseline holds out every "
                f"{baseline.holdout_every}th block of that many rows for calibration, which needs more than "
                f"{(baseline.holdout_every - 1) * baseline.window_size} training rows; there are {train_rows}"
            )
            raise ConfigError(msg)

    # -- gate ------------------------------------------------------------------------------------------

    def build_model(self, inputs: torch.Tensor) -> nn.Module:
        model = self.config.model
        module = build_module(model.factory, inputs.shape[1], dict(model.options))
        probe = inputs[: min(2, len(inputs))]
        try:
            with torch.no_grad(), preserved_random_state():
                output = _copy_for_probe(module)(probe)
        except Exception as exc:
            msg = (
                f"key 'model.factory' = {model.factory!r}: the model cannot run on the encoded "
                f"features ({type(exc).__name__}: {exc})"
            )
            raise ConfigError(msg) from exc
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != (len(probe),):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            msg = (
                f"key 'model.factory' = {model.factory!r}: for task 'binary' the model must return one "
                f"logit per row, shape ({len(probe)},), got {shape}"
            )
            raise ConfigError(msg)
        return module

    def run_gate(self, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> GateReport:
        section = self.config.gate
        self.progress.start(Stage.GATE, None)
        candidates = gate_candidate_rows(inputs, targets)
        if len(candidates) < section.batch_size:
            msg = (
                f"key 'gate.batch_size' = {section.batch_size}: only {len(candidates)} of the "
                f"{len(inputs)} training rows have encoded inputs that no row with another label shares, "
                "and the gate needs targets a correct model can reach; lower gate.batch_size or use "
                "more varied training data"
            )
            raise DataError(msg)
        generator = torch.Generator().manual_seed(self.config.seed)
        rows = candidates[torch.randperm(len(candidates), generator=generator)[: section.batch_size]]
        try:
            report = OverfitGate.from_options(section.options()).check(
                module, inputs[rows], targets[rows], nn.BCEWithLogitsLoss(), task=Task.CLASSIFICATION
            )
        except GateError as exc:
            msg = f"[gate] / model.factory: the gate cannot run this model ({exc})"
            raise ConfigError(msg) from exc
        if not report.passed:
            raise GateStopped(report)
        self._done(
            Stage.GATE,
            f"passed {sum(c.passed for c in report.checks)} checks on one batch of {len(rows)} rows "
            f"({report.steps} steps, {report.seconds:.2f} s; drawn from {len(candidates):,} rows with "
            "distinct encoded inputs and consistent labels)",
        )
        return report

    # -- train -----------------------------------------------------------------------------------------

    def train(
        self,
        module: nn.Module,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
    ) -> TrainingOutcome:
        section = self.config.training
        options = TrainingOptions(
            batch_size=section.batch_size,
            lr=section.lr,
            weight_decay=section.weight_decay,
            max_epochs=section.max_epochs,
            patience=section.patience,
            min_delta=section.min_delta,
            seed=self.config.seed,
        )
        self.progress.start(Stage.TRAIN, section.max_epochs)
        try:
            outcome = train_with_early_stopping(
                module, train, val, options, on_epoch=lambda _record: self.progress.advance(Stage.TRAIN)
            )
        except TrainingDiverged as exc:
            raise RetrainStopped(Stage.TRAIN, str(exc)) from exc
        if outcome.best_epoch == 0:
            # Early stopping restored epoch 0, the random initial weights: registering them would
            # ship (and, as the first version, promote) a model that never learned anything.
            msg = (
                f"no epoch improved on the initial weights: no epoch of {outcome.epochs_run} lowered the "
                f"validation loss below its initial {outcome.best_val_loss:.4f}; the untrained weights "
                "are not registered (check training.lr and the data)"
            )
            raise RetrainStopped(Stage.TRAIN, msg)
        self._done(
            Stage.TRAIN,
            f"{outcome.epochs_run} epochs ({outcome.stop_reason.value}), best epoch {outcome.best_epoch} "
            f"with validation loss {outcome.best_val_loss:.4f}",
        )
        return outcome

    # -- evaluate --------------------------------------------------------------------------------------

    def evaluate(
        self, candidate: BinaryMetrics, holdout_raw: pd.DataFrame, labels: np.ndarray[Any, Any]
    ) -> HoldoutComparison:
        section = self.config.evaluation
        self.progress.start(Stage.EVALUATE, None)
        production_dir = section.production_dir
        if production_dir is None and section.compare_with_production:
            production_dir = self.registry.production_dir()
        comparison = HoldoutComparison(
            metric=section.metric, candidate=candidate, tolerance=section.tolerance
        )
        if production_dir is not None and section.compare_with_production:
            try:
                production = load_trained_model(production_dir)
                scores = production.score_raw(holdout_raw)
            except (ConfigError, DataError, FeatureError) as exc:
                msg = (
                    f"the production model {str(production_dir)!r} cannot score the holdout ({exc}); "
                    "set evaluation.production_dir, or evaluation.compare_with_production = false"
                )
                raise DataError(msg) from exc
            comparison = replace(
                comparison,
                production=binary_metrics(labels, scores),
                production_version=production.version,
            )
        if section.require_better and comparison.worse_than_production:
            raise HoldoutStopped(comparison)
        metric = section.metric
        summary = f"holdout {metric.value} {candidate.value(metric):.4f}, AUC {candidate.auc:.4f}"
        if comparison.production is not None:
            summary += (
                f"; production {comparison.production_version} {metric.value} "
                f"{comparison.production.value(metric):.4f}"
            )
        self._done(Stage.EVALUATE, summary)
        return comparison

    # -- the whole run ---------------------------------------------------------------------------------

    def run(self, raw: pd.DataFrame | None, holdout: pd.DataFrame | None) -> RetrainResult:
        config, fs = self.config, self.feature_set
        label = config.data.label
        raw, holdout, files, holdout_files = self.load(raw, holdout)
        self.validate(raw, holdout)

        self.progress.start(Stage.FEATURES, None)
        train_raw, val_raw, holdout_raw = self.split(raw, holdout)
        self._check_sizes(len(train_raw))
        state = fs.fit(train_raw)
        features = {
            name: fs.transform_frame(part, state)
            for name, part in (("train", train_raw), ("val", val_raw), ("holdout", holdout_raw))
        }
        encoder = FeatureEncoder.fit(features["train"], fs, state)

        def tensors(name: str, part: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
            inputs = torch.from_numpy(encoder.transform(features[name]))
            targets = torch.from_numpy(pd.to_numeric(part[label]).to_numpy(dtype="float32"))
            return inputs, targets

        train, val = tensors("train", train_raw), tensors("val", val_raw)
        sizes = SplitSizes(len(train_raw), len(val_raw), len(holdout_raw))
        self._done(
            Stage.FEATURES,
            f"state {state.content_hash[:12]}, {encoder.width} inputs; split {sizes.train:,} train / "
            f"{sizes.validation:,} validation / {sizes.holdout:,} holdout",
        )

        module = self.build_model(train[0])
        gate_report = self.run_gate(module, *train)
        outcome = self.train(module, train, val)

        holdout_labels = pd.to_numeric(holdout_raw[label]).to_numpy(dtype="float64")
        holdout_scores = predict_scores(module, encoder, features["holdout"])
        candidate = binary_metrics(holdout_labels, holdout_scores)
        comparison = self.evaluate(candidate, holdout_raw, holdout_labels)

        self.registry.root.mkdir(parents=True, exist_ok=True)
        staging = self.registry.root / f".staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            self.progress.start(Stage.ARTIFACTS, None)
            train_scores = predict_scores(module, encoder, features["train"])
            self._write_artifacts(
                staging,
                module,
                encoder,
                state,
                train_raw,
                train_scores,
                gate_report,
                comparison,
                (holdout_scores, holdout_labels),
            )
            self._done(Stage.ARTIFACTS, "weights, encoder, feature state, baseline, gate report, metrics")

            self.progress.start(Stage.REGISTER, None)
            manifest: dict[str, Any] = {
                "format": MODEL_FORMAT,
                "model_name": config.model_name,
                "feature_set": fs.name,
                "feature_set_reference": config.data.features,
                "feature_state_hash": state.content_hash,
                "model": {
                    "factory": config.model.factory,
                    "options": dict(config.model.options),
                    "task": config.model.task,
                    "input_dim": encoder.width,
                },
                "data": {
                    "files": [vars(f) for f in files],
                    "holdout_files": [vars(f) for f in holdout_files],
                    "source": "files" if files else "frame",
                    "rows": vars(sizes),
                },
                "gate": {
                    "passed": gate_report.passed,
                    "steps": gate_report.steps,
                    "seconds": gate_report.seconds,
                },
                "training": {
                    "epochs_run": outcome.epochs_run,
                    "best_epoch": outcome.best_epoch,
                    "best_val_loss": outcome.best_val_loss,
                    "stop_reason": outcome.stop_reason.value,
                },
                "config": config.model_dump(mode="json"),
                "versions": {"skewguard": __version__, "torch": torch.__version__},
            }

            written: dict[str, Any] = {}

            def finalize(version: str, created: str) -> None:
                artifacts = {
                    str(path.relative_to(staging)): sha256_file(path)
                    for path in sorted(staging.rglob("*"))
                    if path.is_file()
                }
                document = manifest | {"version": version, "created": created, "artifacts": artifacts}
                (staging / MANIFEST).write_text(json.dumps(document, indent=2, allow_nan=False))
                written.update(document)

            entry = self.registry.register(
                staging,
                feature_state_hash=state.content_hash,
                metrics=_finite(candidate.to_dict()),
                promote_first=config.registry.promote_first,
                finalize=finalize,
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        directory = self.registry.version_dir(entry.version)
        self._done(Stage.REGISTER, f"{config.model_name} {entry.version} registered as {entry.status.value}")
        return RetrainResult(
            model_name=config.model_name,
            version=entry.version,
            directory=directory,
            status=entry.status,
            feature_state_hash=state.content_hash,
            rows=sizes,
            gate=gate_report,
            training=outcome,
            comparison=comparison,
            model=TrainedModel(
                directory=directory,
                manifest=written,
                module=module,
                encoder=encoder,
                state=state,
                feature_set=fs,
            ),
            seconds=dict(self.seconds),
        )

    def _write_artifacts(
        self,
        staging: Path,
        module: nn.Module,
        encoder: FeatureEncoder,
        state: FeatureState,
        train_raw: pd.DataFrame,
        train_scores: np.ndarray[Any, Any],
        gate_report: GateReport,
        comparison: HoldoutComparison,
        holdout: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    ) -> None:
        """Write every artifact of the version into ``staging``.

        ``holdout`` is the candidate's holdout scores and labels: the baseline's holdout metrics, with
        their standard errors, are computed from them by the functions the daemon judges windows with.
        """
        config = self.config
        save_weights(module, staging / WEIGHTS)
        (staging / ENCODER).write_text(encoder.to_json())
        (staging / FEATURE_STATE).write_text(state.to_json())
        (staging / GATE_REPORT).write_text(gate_report.to_json())
        gate_report.plot(staging / GATE_CURVE)
        (staging / METRICS).write_text(
            json.dumps(_json_safe(comparison.to_dict()), indent=2, allow_nan=False)
        )
        section = config.baseline
        metrics, errors = holdout_metrics(PredictionKind.SCORE, *holdout, seed=config.seed)
        rows = train_raw.copy(deep=False)
        rows[SCORE_COLUMN] = train_scores
        baseline = build_baseline(
            self.feature_set,
            lambda: iter([rows]),
            model=config.model_name,
            prediction_column=SCORE_COLUMN,
            prediction_kind=PredictionKind.SCORE,
            label_column=config.data.label,
            options=BaselineOptions(
                window_size=section.window_size,
                # The whole training split in one chunk, unsampled: the baseline then fits exactly
                # the FeatureState the model was trained with (checked below).
                fit_rows=len(rows),
                holdout_every=section.holdout_every,
                reservoir_size=section.reservoir_size,
                bins=section.bins,
                top_k=section.top_k,
                calibration_draws=section.calibration_draws,
                seed=config.seed,
            ),
            metrics=metrics,
            metric_errors=errors,
            progress=lambda _phase, n: self.progress.advance(Stage.ARTIFACTS, n),
        )
        if baseline.state_hash != state.content_hash:
            msg = (
                f"the baseline fitted FeatureState {baseline.state_hash[:12]}, the model was trained with "
                f"{state.content_hash[:12]}; refusing to write a baseline serving records would not match"
            )
            raise SkewguardError(msg)
        baseline.save(staging / BASELINE_DIR, self.feature_set)


def _copy_for_probe(module: nn.Module) -> nn.Module:
    """An eval-mode copy, so a shape probe neither moves BatchNorm statistics nor draws dropout masks."""
    return copy.deepcopy(module).eval()


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Drop NaN/Inf (an AUC without both classes): JSON documents here are strict."""
    return {key: value for key, value in values.items() if math.isfinite(value)}


def _json_safe(value: Any) -> Any:
    """NaN/Inf → None, recursively, so ``allow_nan=False`` JSON can hold a metric that is undefined."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
