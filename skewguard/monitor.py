"""One model's monitor: how serving records fold into a window, and what a closed window is judged to say.

This is where the analyses meet (drift and span drift from ``detect``, implementation-skew replay through
``features/``, default rates, unknown FeatureState hashes); the daemon only routes records here and
stores what comes back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from features import FeatureError, FeatureKind, FeatureSet, FeatureState
from skewguard.baseline import PREDICTION_COLUMN, Baseline, PredictionKind
from skewguard.detect import DriftPolicy, FeatureVerdict, judge
from skewguard.errors import ConfigError, DataError, StatisticsError
from skewguard.labels.join import class_of
from skewguard.records import ServingBatch, ServingRecord, column_values
from skewguard.results import Check, Finding, Severity, WindowKey, WindowResult
from skewguard.shadow.compare import ShadowOptions, serving_findings
from skewguard.stats import ColumnRole, EncodedColumn, EncodedFrame, Profile, category_text
from skewguard.windows import ShadowTally, SkewTally, WindowAccumulator, merge_examples

log = logging.getLogger(__name__)

#: Shadow candidates one window compares, and the longest version name (see ``_shadow_versions``).
MAX_SHADOW_VERSIONS: Final = 16
MAX_VERSION_CHARS: Final = 200


@dataclass(frozen=True)
class MonitorOptions:
    """How one model's windows are judged, beyond the drift policy."""

    #: Features left out of drift checks: seasonal ones (hour of day) drift within a day by design.
    drift_exclude: frozenset[str] = frozenset()
    #: A feature falling back to its default for more than this share of requests is flagged.
    defaults_max_rate: float = 0.05
    #: Replayed features whose share of mismatches exceeds this are flagged as implementation skew.
    skew_max_rate: float = 0.0
    #: Two numeric values match when |a - b| <= skew_atol + skew_rtol * |b| (JSON keeps floats exact,
    #: so the defaults only absorb a serving stack that rounds).
    skew_atol: float = 1e-9
    skew_rtol: float = 1e-9
    #: Compare each window with the previous one too (span drift).
    span_drift: bool = True


def prediction_values(predictions: Sequence[Any], kind: PredictionKind) -> np.ndarray[Any, Any]:
    """Logged predictions as the profile's prediction column.

    A score is the positive-class probability (a two-class probability list gives its second entry);
    a class is the label itself, spelled as the profile spells categories (``True`` is ``"true"``), or
    the argmax of a probability list; a value is the number.
    """
    out: list[Any] = []
    for value in predictions:
        if isinstance(value, list):
            if not value:
                out.append(None)
            elif kind is PredictionKind.CLASS:
                out.append(class_of(value))
            else:
                out.append(float(value[-1]) if len(value) == 2 else float(max(value)))
        elif kind is PredictionKind.CLASS:
            out.append(None if value is None else category_text(value))
        else:
            out.append(None if value is None or isinstance(value, str) else float(value))
    return np.asarray(out, dtype=object if kind is PredictionKind.CLASS else float)


@dataclass
class ModelMonitor:
    """Folds one model's serving records into window accumulators and judges closed windows."""

    baseline: Baseline
    feature_set: FeatureSet
    policy: DriftPolicy = field(default_factory=DriftPolicy)
    options: MonitorOptions = field(default_factory=MonitorOptions)
    #: FeatureStates a record may legitimately carry (the baseline's, plus any other deployed one).
    known_states: dict[str, FeatureState] = field(default_factory=dict)
    shadow_options: ShadowOptions = field(default_factory=ShadowOptions)

    def __post_init__(self) -> None:
        if self.baseline.feature_set != self.feature_set.name:
            msg = (
                f"baseline of model {self.baseline.model!r} was built with feature set "
                f"{self.baseline.feature_set!r}, not {self.feature_set.name!r}"
            )
            raise ConfigError(msg)
        self.known_states.setdefault(self.baseline.state_hash, self.baseline.state)
        layout = self.baseline.profile.layout
        self._feature_columns = [s.name for s in layout.specs if s.role is ColumnRole.FEATURE]
        self._has_prediction = PREDICTION_COLUMN in layout.names
        self._kinds = {name: f.kind for name, f in self.feature_set.features.items()}
        self._defaultable = sorted(
            name for group in self.feature_set.group_defaults().values() for name in group
        )

    @property
    def name(self) -> str:
        """The model name records carry."""
        return self.baseline.model

    def new_accumulator(self) -> WindowAccumulator:
        """An empty accumulator for a window of this model."""
        return WindowAccumulator.empty(self.baseline.profile.layout)

    # -- folding -------------------------------------------------------------------------------------

    def fold(self, accumulator: WindowAccumulator, records: ServingBatch | Sequence[ServingRecord]) -> None:
        """Fold a batch of this model's records (all of one window) into ``accumulator``.

        This is the daemon's hot path, so it works on columns (a :class:`ServingBatch`, as the daemon
        decodes them): numeric columns go straight to float64 arrays and each column is encoded on its
        own, with no DataFrame in between; the profile folded is the same as ``profile.fold`` of the
        batch as a frame. A list of records is turned into columns first.
        """
        batch = records if isinstance(records, ServingBatch) else ServingBatch.from_records(records)
        if not len(batch):
            return
        self._fold_profile(accumulator.profile, batch)
        accumulator.records += len(batch)
        accumulator.versions.update(batch.model_versions)
        for defaulted in batch.defaulted or ():
            if defaulted:
                # Only this model's features: each name counted becomes a finding's subject, an alert's
                # key and a /metrics series, so a name a serving bug makes up (a request id, a 300-
                # character string) would mint series without bound and overflow the store's columns.
                accumulator.defaulted.update(name for name in defaulted if name in self._kinds)
        # Replay only has work when a record carries raw inputs or an unknown FeatureState hash.
        if batch.raw_inputs is not None or not self.known_states.keys() >= set(batch.state_hashes):
            self._replay(accumulator, batch)

    def refused(self, batch: ServingBatch) -> list[tuple[int, str]]:
        """The rows whose features cannot be profiled (e.g. text in a numeric feature), with why.

        Checked one record at a time, so only worth calling after ``fold`` of the batch failed; ``fold``
        encodes every column before it changes anything, so the batch can then be folded without these.
        """
        refused: list[tuple[int, str]] = []
        layout = self.baseline.profile.layout
        for row in range(len(batch)):
            try:
                columns = self._fold_columns(batch.take([row]))
                for column in layout.columns:
                    values = columns.get(column.name)
                    if values is not None:
                        column.encode(values)
                    elif column.spec.role is not ColumnRole.LABEL:
                        layout.encode(pd.DataFrame(columns))
            except (DataError, StatisticsError, ValueError, TypeError) as exc:
                refused.append((row, f"record {batch.request_ids[row]!r}: {exc}"))
        return refused

    def _fold_profile(self, profile: Profile, batch: ServingBatch) -> None:
        """Encode the batch's columns against the profile's layout and fold them in."""
        columns = self._fold_columns(batch)
        encoded: dict[str, EncodedColumn | None] = {}
        for layout in profile.layout.columns:
            values = columns.get(layout.name)
            if values is None:
                if layout.spec.role is not ColumnRole.LABEL:  # labels join later; anything else is an error
                    profile.layout.encode(pd.DataFrame(columns))  # raises DataError naming the column
                encoded[layout.name] = None
            else:
                encoded[layout.name] = layout.encode(values)
        profile.fold_encoded(EncodedFrame(rows=len(batch), columns=encoded), batch.request_ids)

    def _fold_columns(self, batch: ServingBatch) -> dict[str, np.ndarray[Any, Any]]:
        """The batch as the profile's columns (1-d arrays): one per feature, plus the prediction.

        A feature a record lacks is null. Booleans become ``"true"``/``"false"``, as the baseline
        profiled them. A numeric column that numpy cannot convert (a string in it, say) is handed to the
        profile as objects, which reports it exactly as before. No Series is built: the layout encodes
        arrays directly.
        """
        data: dict[str, np.ndarray[Any, Any]] = {}
        kinds = self._kinds
        absent: list[Any] | None = None
        for name in self._feature_columns:
            column = batch.features.get(name)
            kind = kinds.get(name)
            if isinstance(column, np.ndarray) and kind is FeatureKind.NUMERIC:
                data[name] = column  # arrived packed: float64 already, NaN for null
                continue
            if column is None:
                values = absent = absent or [None] * len(batch)
            else:
                values = column_values(column)
            if kind is FeatureKind.NUMERIC:
                data[name] = self._float_column(values)
            elif kind is FeatureKind.BOOLEAN:
                data[name] = _objects(_flag_texts(values))
            else:
                data[name] = _objects(values)
        kind_of_prediction = self.baseline.prediction_kind
        if self._has_prediction and kind_of_prediction is not None:
            predictions = batch.predictions
            if kind_of_prediction is not PredictionKind.CLASS and {float, int}.issuperset(
                map(type, predictions)
            ):
                data[PREDICTION_COLUMN] = np.array(predictions, dtype=np.float64)
            else:
                data[PREDICTION_COLUMN] = prediction_values(predictions, kind_of_prediction)
        return data

    @staticmethod
    def _float_column(values: Sequence[Any]) -> np.ndarray[Any, Any]:
        """A numeric feature column as float64 (None -> NaN), or as objects when numpy refuses it."""
        try:
            column = np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return _objects(values)
        if column.ndim != 1:
            return _objects(values)
        return column

    def _replay(self, accumulator: WindowAccumulator, batch: ServingBatch) -> None:
        """Implementation skew: recompute features from logged raw inputs with the logged state."""
        by_state: dict[str, list[int]] = {}
        raw_inputs = batch.raw_inputs
        for row, state_hash in enumerate(batch.state_hashes):
            if state_hash not in self.known_states:
                accumulator.unknown_state += 1
                accumulator.unknown_state_hashes[state_hash] += 1
                accumulator.unknown_state_examples = merge_examples(
                    accumulator.unknown_state_examples, [batch.request_ids[row]]
                )
                continue
            if raw_inputs is not None and raw_inputs[row] is not None:
                by_state.setdefault(state_hash, []).append(row)
        for state_hash, rows in by_state.items():
            self._compare(accumulator, batch.take(rows), self.known_states[state_hash])

    def _compare(self, accumulator: WindowAccumulator, group: ServingBatch, state: FeatureState) -> None:
        raw = pd.DataFrame.from_records([r or {} for r in group.raw_inputs or ()])
        try:
            replayed = self.feature_set.transform_frame(raw, state)
        except FeatureError:
            # One bad request must not hide the skew of the others: replay one by one.
            replayed = self._replay_each(raw, state)
        n = len(group)
        ids = np.asarray(group.request_ids, dtype=object)
        accumulator.replayed += int(replayed["__ok__"].sum()) if "__ok__" in replayed else n
        usable = replayed["__ok__"].to_numpy(dtype=bool) if "__ok__" in replayed else np.ones(n, bool)
        defaulted_lists = group.defaulted or [[] for _ in range(n)]
        for name in self.feature_set.features:
            defaulted = np.fromiter((name in d for d in defaulted_lists), dtype=bool, count=n)
            compare = usable & ~defaulted  # a defaulted feature was not computed from these inputs
            if not compare.any():
                continue
            column = group.features.get(name)
            logged = [None] * n if column is None else column_values(column)
            mismatched, difference = self._mismatches(name, logged, replayed[name], compare)
            tally = accumulator.skew.setdefault(name, SkewTally())
            tally.add(int(compare.sum()), sorted(ids[mismatched].tolist()), difference)

    def _replay_each(self, raw: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        for position in range(len(raw)):
            try:
                request = {str(k): v for k, v in raw.iloc[position].to_dict().items()}
                values = self.feature_set.transform_record(request, state)
                rows.append({**values, "__ok__": True})
            except FeatureError:
                rows.append({"__ok__": False})
        return pd.DataFrame(rows, columns=[*self.feature_set.features, "__ok__"])

    def _mismatches(
        self, name: str, logged: list[Any], replayed: pd.Series[Any], compare: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], float]:
        if self._kinds[name] is FeatureKind.NUMERIC:
            a = np.asarray([np.nan if v is None else v for v in logged], dtype=float)
            b = pd.to_numeric(replayed, errors="coerce").to_numpy(dtype=float)
            b = np.where(np.isfinite(b), b, np.nan)  # as the logged side reads them: ±inf is logged null
            both_null = np.isnan(a) & np.isnan(b)
            diff = np.abs(a - b)
            close = diff <= self.options.skew_atol + self.options.skew_rtol * np.abs(b)
            mismatched = compare & ~both_null & ~close
            largest = float(np.nanmax(np.where(mismatched, diff, np.nan))) if mismatched.any() else 0.0
            return mismatched, largest if math.isfinite(largest) else float("inf")
        expected = [None if pd.isna(v) else v for v in replayed.tolist()]
        mismatched = compare & np.fromiter(
            (x != y for x, y in zip(logged, expected, strict=True)), dtype=bool
        )
        return mismatched, float(mismatched.any())

    # -- judging -------------------------------------------------------------------------------------

    def judge(
        self, key: WindowKey, accumulator: WindowAccumulator, previous: Profile | None = None
    ) -> WindowResult:
        """Every finding about one closed window."""
        findings: list[Finding] = []
        if accumulator.records:
            verdict = judge(
                self.baseline.profile, accumulator.profile, self.baseline.calibration, self.policy
            )
            for feature in verdict.features:
                if feature.role is ColumnRole.FEATURE and feature.name not in self.options.drift_exclude:
                    findings.append(_drift_finding(Check.DRIFT, feature))
                elif feature.role is ColumnRole.PREDICTION:
                    findings.append(_drift_finding(Check.PREDICTION_DRIFT, feature))
            if previous is not None and self.options.span_drift and previous.rows:
                span = judge(previous, accumulator.profile, self.baseline.calibration, self.policy)
                findings += [
                    _drift_finding(Check.SPAN_DRIFT, f)
                    for f in span.features
                    if f.role is ColumnRole.FEATURE and f.name not in self.options.drift_exclude
                ]
        findings += self._default_findings(accumulator)
        findings += self._skew_findings(accumulator)
        for version, tally in sorted(accumulator.shadow.items()):
            findings += serving_findings(version, tally, self.shadow_options)
        if accumulator.unknown_state:
            share = accumulator.unknown_state / max(accumulator.records, 1)
            hashes = ", ".join(h[:12] for h in sorted(accumulator.unknown_state_hashes))
            findings.append(
                Finding(
                    Check.UNKNOWN_STATE,
                    "feature_state",
                    True,
                    effect=share,
                    threshold=0.0,
                    method="hash",
                    reason=(
                        f"{accumulator.unknown_state:,} of {accumulator.records:,} requests ({share:.1%}) "
                        f"carry FeatureState hash(es) {hashes} that the baseline does not know: serving "
                        f"computes features with fitted values training never produced"
                    ),
                    severity=Severity.CRITICAL,
                    detail={
                        "hashes": dict(accumulator.unknown_state_hashes),
                        "examples": accumulator.unknown_state_examples,
                    },
                )
            )
        else:  # (said explicitly: an alert on unknown hashes is resolved by a window without them)
            findings.append(
                Finding(
                    Check.UNKNOWN_STATE,
                    "feature_state",
                    False,
                    effect=0.0,
                    threshold=0.0,
                    method="hash",
                    reason="every request carries a FeatureState hash the baseline knows",
                )
            )
        return WindowResult(
            key=key,
            records=accumulator.records,
            late_records=accumulator.late_records,
            findings=tuple(findings),
            context={"versions": dict(accumulator.versions), "replayed": accumulator.replayed},
        )

    @staticmethod
    def _shadow_versions(accumulator: WindowAccumulator, seen: set[str]) -> list[str]:
        """The candidate versions of a batch this window compares, in order.

        A version names a finding's subject, an alert's key and a /metrics series, so a serving bug
        that writes per-request keys (a request id as the version) must not mint them without bound:
        at most ``MAX_SHADOW_VERSIONS`` per window, each at most ``MAX_VERSION_CHARS`` long; the
        rest are left out and logged.
        """
        fits = sorted(v for v in seen if len(v) <= MAX_VERSION_CHARS)
        room = MAX_SHADOW_VERSIONS - len(accumulator.shadow)
        taken = [v for v in fits if v in accumulator.shadow]
        taken += [v for v in fits if v not in accumulator.shadow][: max(0, room)]
        left = sorted(seen - set(taken))
        if left:
            log.warning(
                "shadow: %d candidate version(s) left out of a window (at most %d per window, each at most "
                "%d characters), e.g. %r",
                len(left),
                MAX_SHADOW_VERSIONS,
                MAX_VERSION_CHARS,
                left[0][:80],
            )
        return sorted(taken)

    def fold_shadow(self, accumulator: WindowAccumulator, batch: ServingBatch) -> None:
        """Pair each shadow candidate's predictions with production's, per candidate version."""
        shadows = batch.shadow_predictions
        if shadows is None:
            return
        versions = self._shadow_versions(accumulator, {v for s in shadows for v in s})
        kind = self.baseline.prediction_kind
        if not versions or kind is None:
            return
        if kind is PredictionKind.CLASS:
            classes = prediction_values(batch.predictions, kind)
            layout = self.baseline.profile.categorical(PREDICTION_COLUMN).layout
            for version in versions:
                candidate = prediction_values([s.get(version) for s in shadows], kind)
                accumulator.shadow.setdefault(version, ShadowTally()).add_classes(classes, candidate, layout)
            return
        production = np.asarray(prediction_values(batch.predictions, kind), dtype=float)
        edges = self._prediction_edges()
        for version in versions:
            candidate = np.asarray(prediction_values([s.get(version) for s in shadows], kind), dtype=float)
            accumulator.shadow.setdefault(version, ShadowTally()).add(production, candidate, edges)

    def _prediction_edges(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        layout = self.baseline.profile.layout
        if PREDICTION_COLUMN in layout.names:
            column = layout.column(PREDICTION_COLUMN)
            edges = getattr(column, "edges", None)
            if edges is not None:
                return np.asarray(edges, dtype=np.float64)
        return np.linspace(0.0, 1.0, 21)

    def _default_findings(self, accumulator: WindowAccumulator) -> list[Finding]:
        """A finding per feature that can fall back to a default, also at rate 0.

        At 0 too: an open alert is resolved only by an unflagged finding of its subject, so a feature
        whose defaults stopped must say so (it was left out, and its alert stayed open for good, which
        also silenced the next outage of it: one alert per episode).
        """
        findings = []
        counts = {name: 0 for name in self._defaultable} | dict(accumulator.defaulted)
        for name, count in sorted(counts.items()):
            rate = count / max(accumulator.records, 1)
            flagged = rate > self.options.defaults_max_rate
            findings.append(
                Finding(
                    Check.DEFAULTS,
                    name,
                    flagged,
                    effect=rate,
                    threshold=self.options.defaults_max_rate,
                    method="default_rate",
                    reason=(
                        f"{name} fell back to its declared default in {count:,} of {accumulator.records:,} "
                        f"requests ({rate:.1%}; limit {self.options.defaults_max_rate:.1%})"
                        + ("; its feature group is failing or timing out" if flagged else "")
                    ),
                    severity=Severity.WARNING if flagged else Severity.INFO,
                    detail={"defaulted": count},
                )
            )
        return findings

    def _skew_findings(self, accumulator: WindowAccumulator) -> list[Finding]:
        findings = []
        for name, tally in sorted(accumulator.skew.items()):
            rate = tally.mismatched / tally.compared if tally.compared else 0.0
            flagged = tally.mismatched > 0 and rate > self.options.skew_max_rate
            reason = (
                f"{name}: serving value differs from the replay through features/ in {tally.mismatched:,} of "
                f"{tally.compared:,} requests ({rate:.2%}), largest difference {tally.max_difference:.6g}; "
                f"examples {tally.examples}"
                if tally.mismatched
                else f"{name}: all {tally.compared:,} replayed requests match"
            )
            findings.append(
                Finding(
                    Check.SKEW,
                    name,
                    flagged,
                    effect=rate,
                    threshold=self.options.skew_max_rate,
                    method="replay",
                    reason=reason,
                    severity=Severity.CRITICAL if flagged else Severity.INFO,
                    detail={
                        "compared": tally.compared,
                        "mismatched": tally.mismatched,
                        "max_difference": tally.max_difference,
                        "examples": tally.examples,
                    },
                )
            )
        return findings


#: A logged boolean as the baseline profiled it; a key missing here (2, "yes", NaN) takes the slow path.
_FLAG_TEXT: dict[Any, str | None] = {True: "true", False: "false", None: None}


def _flag_texts(values: Sequence[Any]) -> list[str | None]:
    """``"true"`` / ``"false"`` by truthiness, None for null: one dict lookup per value when it can."""
    try:
        return list(map(_FLAG_TEXT.__getitem__, values))
    except (KeyError, TypeError):  # another truthy or falsy value (2, "", NaN), or an unhashable one
        return [None if v is None else ("true" if v else "false") for v in values]


def _objects(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    """A 1-d object array of the values as they are (a list among them stays one element)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _drift_finding(check: Check, verdict: FeatureVerdict) -> Finding:
    severity = Severity.CRITICAL if verdict.severe else Severity.WARNING if verdict.drifted else Severity.INFO
    return Finding(
        check,
        verdict.name,
        verdict.drifted,
        effect=_finite(verdict.effect),
        threshold=_finite(verdict.threshold),
        p_value=_finite(verdict.p_value),
        method=str(verdict.method),
        reason=verdict.reason,
        severity=severity,
        detail={"p_adjusted": _finite(verdict.p_adjusted), "count": verdict.count},
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


__all__ = ["ModelMonitor", "MonitorOptions", "prediction_values"]
