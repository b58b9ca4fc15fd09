"""A versioned model directory: what the pipeline writes and how serving loads it back, safely.

Layout of ``<models_dir>/<model_name>/<version>/``::

    weights.pt           state_dict only; loaded with torch.load(..., weights_only=True), never unpickled
    encoder.json         computed features → input tensor (skewguard.pipeline.encoder)
    feature_state.json   the fitted FeatureState (its hash is what serving records carry)
    baseline/            the monitoring baseline (Profile, calibration, GX suites) incl. predictions
    gate_report.json     the overfit gate's report, and gate_curve.png its loss curves
    metrics.json         holdout metrics, and production's on the same rows
    manifest.json        version, created, data files + hashes, config, artifact hashes

The module is rebuilt by calling the factory the manifest names with the encoder's width and the
configured options, then loading the state dict strictly (a missing or unexpected key is an error).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from features import FeatureError, FeatureSet, FeatureState
from skewguard.config import import_object
from skewguard.errors import ConfigError, DataError
from skewguard.pipeline.encoder import FeatureEncoder

MODEL_FORMAT = "skewguard.model/1"
WEIGHTS = "weights.pt"
ENCODER = "encoder.json"
FEATURE_STATE = "feature_state.json"
BASELINE_DIR = "baseline"
GATE_REPORT = "gate_report.json"
GATE_CURVE = "gate_curve.png"
METRICS = "metrics.json"
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (data files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_module(factory_reference: str, input_dim: int, options: dict[str, Any]) -> nn.Module:
    """Call ``factory(input_dim, **options)``; ConfigError naming ``model.factory`` if it misbehaves."""
    factory = import_object(factory_reference, what="model.factory")
    if not callable(factory):
        msg = (
            f"key 'model.factory' = {factory_reference!r}: expected a callable, got {type(factory).__name__}"
        )
        raise ConfigError(msg)
    try:
        module = factory(input_dim, **options)
    except Exception as exc:
        msg = (
            f"key 'model.factory' = {factory_reference!r}: calling it with input_dim={input_dim} and "
            f"model.options {options} raised {type(exc).__name__}: {exc}"
        )
        raise ConfigError(msg) from exc
    if not isinstance(module, nn.Module):
        msg = (
            f"key 'model.factory' = {factory_reference!r}: expected it to return a torch.nn.Module, got "
            f"{type(module).__name__}"
        )
        raise ConfigError(msg)
    return module


def save_weights(module: nn.Module, path: Path) -> None:
    """Write the state dict only (tensors), the one format ``weights_only=True`` can load."""
    torch.save({key: value.detach().cpu() for key, value in module.state_dict().items()}, path)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``: no pickled code can run.

    The restricted unpickler refuses a corrupt file, or a legacy ``torch.save(model)`` full-module
    pickle, with ``pickle.UnpicklingError``: a bad weights file like any other, so a DataError.
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False, i.e. running the file's code: not repeated.
        msg = (
            f"weights {str(path)!r}: cannot be loaded with weights_only=True; expected a state dict of "
            "tensors as the pipeline writes it (the file is corrupt, or holds a whole pickled model)"
        )
        raise DataError(msg) from exc
    except Exception as exc:  # (torch's unpickler raises anything: a KeyError for a text file)
        msg = f"weights {str(path)!r}: cannot be loaded with weights_only=True ({type(exc).__name__}: {exc})"
        raise DataError(msg) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"weights {str(path)!r}: expected a state dict of tensors"
        raise DataError(msg)
    return state


@dataclass
class TrainedModel:
    """A loaded model version: everything needed to score computed features like training did."""

    directory: Path
    manifest: dict[str, Any]
    module: nn.Module
    encoder: FeatureEncoder
    state: FeatureState
    feature_set: FeatureSet

    @property
    def version(self) -> str:
        """The registry version this directory was registered as."""
        return str(self.manifest["version"])

    def predict_scores(self, features: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Click probabilities for a frame of computed features (``transform_frame`` output)."""
        return predict_scores(self.module, self.encoder, features)

    def score_raw(self, raw: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Click probabilities for raw requests, through this version's own FeatureState."""
        return self.predict_scores(self.feature_set.transform_frame(raw, self.state))


def predict_scores(
    module: nn.Module, encoder: FeatureEncoder, features: pd.DataFrame, *, batch_rows: int = 65_536
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Sigmoid of the module's logits on encoded features, in eval mode, in bounded-memory batches."""
    encoded = encoder.transform(features)
    module.eval()
    parts: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_rows):
            logits = module(torch.from_numpy(encoded[start : start + batch_rows]))
            parts.append(torch.sigmoid(logits.reshape(-1)).double().numpy())
    return np.concatenate(parts) if parts else np.empty(0, dtype="float64")


def _read_json(directory: Path, name: str) -> Any:
    path = directory / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"model directory {str(directory)!r}: cannot read {name} ({exc.strerror})"
        raise DataError(msg) from exc
    except ValueError as exc:
        msg = f"model directory {str(directory)!r}: {name} is not JSON ({exc})"
        raise DataError(msg) from exc


def load_trained_model(directory: Path) -> TrainedModel:
    """Load a model directory written by the pipeline; DataError naming the file that is wrong."""
    manifest = _read_json(directory, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        msg = f"model directory {str(directory)!r}: {MANIFEST} is not a {MODEL_FORMAT} manifest"
        raise DataError(msg)
    try:
        encoder = FeatureEncoder.from_json((directory / ENCODER).read_text(encoding="utf-8"))
        state = FeatureState.from_json((directory / FEATURE_STATE).read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"model directory {str(directory)!r}: cannot read {Path(str(exc.filename)).name}"
        raise DataError(msg) from exc
    except FeatureError as exc:
        msg = f"model directory {str(directory)!r}: {FEATURE_STATE}: {exc}"
        raise DataError(msg) from exc
    if state.content_hash != manifest.get("feature_state_hash") or encoder.feature_state_hash != (
        state.content_hash
    ):
        msg = (
            f"model directory {str(directory)!r}: {FEATURE_STATE}, {ENCODER} and {MANIFEST} disagree on "
            "the FeatureState hash"
        )
        raise DataError(msg)
    model = manifest.get("model", {})
    feature_set = import_object(
        str(manifest.get("feature_set_reference")), expected=FeatureSet, what="feature set"
    )
    module = build_module(str(model.get("factory")), encoder.width, dict(model.get("options", {})))
    try:
        module.load_state_dict(load_weights(directory / WEIGHTS), strict=True)
    except RuntimeError as exc:
        msg = f"model directory {str(directory)!r}: {WEIGHTS} does not fit the factory's module ({exc})"
        raise DataError(msg) from exc
    module.eval()
    return TrainedModel(
        directory=directory,
        manifest=manifest,
        module=module,
        encoder=encoder,
        state=state,
        feature_set=feature_set,
    )
