"""Label join and per-window performance: numbers against scipy on the same data, classes end to end."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy import stats

from skewguard.baseline import LABEL_COLUMN, PredictionKind
from skewguard.errors import DataError
from skewguard.labels import (
    LabelTally,
    PerformanceOptions,
    evaluate_window,
    holdout_metrics,
    label_outcome,
    label_to_float,
    outcome_arrays,
)
from skewguard.monitor import prediction_values
from skewguard.results import Check
from skewguard.stats import CategoricalSketch, ColumnKind, ColumnRole, ColumnSpec
from skewguard.stats.profile import CategoricalColumnLayout

CLASSES = ("cat", "dog", "owl")


def label_sketch(labels: list[str]) -> CategoricalSketch:
    """A training label profile of these labels, as the baseline builds it."""
    spec = ColumnSpec(LABEL_COLUMN, ColumnKind.CATEGORICAL, ColumnRole.LABEL)
    series = pd.Series(labels, dtype=object)
    layout = CategoricalColumnLayout.fit(spec, series, top_k=20, max_known=100)
    codes = layout.encode(series).codes
    return CategoricalSketch(layout, np.bincount(codes, minlength=layout.n_bins).astype(np.int64))


def scipy_mean_interval(values: np.ndarray, options: PerformanceOptions) -> Any:
    """scipy's percentile bootstrap of the mean of per-pair ``values``, by index, with the options' seed."""
    return stats.bootstrap(
        (values,),
        np.mean,
        vectorized=False,
        n_resamples=options.resamples,
        confidence_level=options.confidence,
        method="percentile",
        rng=np.random.default_rng(options.seed),
    ).confidence_interval


def class_tally(truth: list[str], predicted: list[str]) -> LabelTally:
    tally = LabelTally()
    for i, (label, prediction) in enumerate(zip(truth, predicted, strict=True)):
        tally.add(f"r{i:05d}", prediction, label)
    tally.predicted = len(truth)
    return tally


def noisy(truth: list[str], accuracy: float, seed: int) -> list[str]:
    """Predictions right with probability ``accuracy``, else another class."""
    rng = np.random.default_rng(seed)
    out = []
    for label in truth:
        if rng.random() < accuracy:
            out.append(label)
        else:
            out.append(str(rng.choice([c for c in CLASSES if c != label])))
    return out


def draw(n: int, shares: tuple[float, ...], seed: int) -> list[str]:
    return [str(c) for c in np.random.default_rng(seed).choice(CLASSES, size=n, p=shares)]


def test_a_score_label_is_a_number_a_boolean_or_a_boolean_word_and_nothing_else() -> None:
    labels = (True, 0.25, " 1 ", "0.0", "YES", "No", "no_click")
    assert [label_to_float(label) for label in labels] == [1.0, 0.25, 1.0, 0.0, 1.0, 0.0, 0.0]
    # Text that says nothing of the outcome was read as 0, a negative: now it is no label at all.
    assert label_to_float("n/a") is None and label_to_float("unknown") is None
    assert label_to_float("nan") is None and label_to_float(float("inf")) is None
    with pytest.raises(DataError, match=r"'n/a'.*noclick"):
        label_outcome("n/a", PredictionKind.SCORE)
    assert label_outcome("n/a", PredictionKind.CLASS) == "n/a"  # a class model's label is any class name


def test_class_labels_are_spelled_as_the_profile_spells_categories() -> None:
    assert [label_outcome(v, PredictionKind.CLASS) for v in (2, 2.0, "2", True, "owl")] == [
        "2",
        "2",
        "2",
        "true",
        "owl",
    ]
    # ... and so are class predictions, so a logged prediction equals its label's class.
    assert prediction_values([2, True, "owl", [0.1, 0.7, 0.2]], PredictionKind.CLASS).tolist() == [
        "2",
        "true",
        "owl",
        "1",
    ]
    assert label_outcome("yes", PredictionKind.SCORE) == 1.0
    assert label_outcome(3, PredictionKind.VALUE) == 3.0


def test_class_accuracy_and_its_interval_match_scipy_on_the_same_pairs() -> None:
    truth = draw(600, (0.5, 0.3, 0.2), seed=1)
    predicted = noisy(truth, 0.8, seed=2)
    options = PerformanceOptions(min_pairs=100, resamples=300)
    holdout = 0.8
    tally, sketch = class_tally(truth, predicted), label_sketch(truth)
    [finding, drift] = evaluate_window(tally, PredictionKind.CLASS, {"accuracy": holdout}, options, sketch)
    expected = float(np.mean(np.asarray(truth) == np.asarray(predicted)))
    assert finding.check is Check.PERFORMANCE and finding.subject == "accuracy"
    assert finding.effect == pytest.approx(expected, abs=1e-12)
    correct = (np.asarray(truth) == np.asarray(predicted)).astype(float)
    # The same bootstrap over the same pairs (by index), computed directly by scipy.
    reference = scipy_mean_interval(correct, options)
    assert finding.detail["ci_low"] == pytest.approx(reference.low, abs=1e-12)
    assert finding.detail["ci_high"] == pytest.approx(reference.high, abs=1e-12)
    assert not finding.flagged
    # Labels drawn from the training shares themselves: no label drift.
    assert drift.check is Check.LABEL_DRIFT and not drift.flagged


def test_a_degraded_class_model_and_shifted_classes_are_flagged() -> None:
    training = draw(5_000, (0.5, 0.3, 0.2), seed=3)
    truth = draw(800, (0.2, 0.3, 0.5), seed=4)  # owls went from 20 % to 50 %
    predicted = noisy(truth, 0.45, seed=5)
    options = PerformanceOptions(min_pairs=100, resamples=300)
    tally, sketch = class_tally(truth, predicted), label_sketch(training)
    [finding, drift] = evaluate_window(tally, PredictionKind.CLASS, {"accuracy": 0.8}, options, sketch)
    assert finding.flagged and finding.effect is not None and finding.effect < 0.55
    assert finding.detail["ci_high"] < 0.8
    assert drift.flagged
    codes = sketch.layout.encode(pd.Series(truth, dtype=object)).codes
    window = np.bincount(codes, minlength=sketch.layout.n_bins)
    # Every bin present in both is dense here, so the test is scipy's chi-square over the non-empty bins.
    table = np.vstack([sketch.counts, window])
    table = table[:, table.sum(axis=0) > 0]
    expected_p = stats.chi2_contingency(table, correction=False).pvalue
    assert drift.p_value == pytest.approx(expected_p, rel=1e-9)
    shares = {c: truth.count(c) / len(truth) for c in CLASSES}
    before = {c: training.count(c) / len(training) for c in CLASSES}
    assert drift.effect == pytest.approx(max(abs(shares[c] - before[c]) for c in CLASSES), abs=1e-12)
    assert "'owl'" in drift.reason


def test_a_class_unknown_to_training_is_a_label_shift() -> None:
    training = draw(5_000, (0.5, 0.3, 0.2), seed=6)
    truth = draw(400, (0.5, 0.3, 0.2), seed=7)
    truth[:100] = ["bat"] * 100  # a quarter of the window is a class training never had
    [_, drift] = evaluate_window(
        class_tally(truth, truth),
        PredictionKind.CLASS,
        {},
        PerformanceOptions(min_pairs=100, resamples=100),
        label_sketch(training),
    )
    assert drift.flagged and drift.effect == pytest.approx(0.25)
    assert "<unseen>" in drift.reason


def test_score_metrics_match_scipy_on_the_same_data() -> None:
    rng = np.random.default_rng(8)
    labels = (rng.random(500) < 0.3).astype(float)
    scores = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, 500), 0.01, 0.99)
    tally = LabelTally()
    for i, (s, y) in enumerate(zip(scores.tolist(), labels.tolist(), strict=True)):
        tally.add(f"r{i}", s, y)
    tally.predicted = 500
    findings = {
        f.subject: f
        for f in evaluate_window(tally, PredictionKind.SCORE, {}, PerformanceOptions(resamples=100))
    }
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    assert findings["auc"].effect == pytest.approx(u / (labels.sum() * (500 - labels.sum())), rel=1e-12)
    expected_loss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert findings["log_loss"].effect == pytest.approx(expected_loss, rel=1e-12)
    assert findings["accuracy"].effect == pytest.approx(np.mean((scores >= 0.5) == (labels == 1)))


def test_tally_keeps_classes_and_missing_candidates_through_merge_and_checkpoint() -> None:
    a, b = LabelTally(), LabelTally()
    a.add("r2", "dog", "dog", {"v2": "cat"})
    a.add("r0", "cat", "owl")
    b.add("r1", "owl", "owl", {"v2": "owl"})
    b.beyond_horizon = 1
    merged = a.merge(b)
    assert merged.to_dict() == b.merge(a).to_dict()  # the merge order does not matter
    assert merged.ids == ["r0", "r1", "r2"]
    assert merged.predictions == ["cat", "owl", "dog"]
    restored = LabelTally.from_dict(merged.to_dict())
    assert restored.predictions == merged.predictions and restored.labels == merged.labels
    missing = restored.candidates["v2"][0]
    assert isinstance(missing, float) and math.isnan(missing)
    assert restored.candidates["v2"][1:] == ["owl", "cat"]
    production, truth, candidates, _ = outcome_arrays(restored)
    # One vocabulary for all three: equal classes, equal codes; a missing candidate stays NaN.
    assert production[1] == truth[1] == candidates["v2"][1]
    assert production[0] != truth[0] and math.isnan(candidates["v2"][0])
    assert candidates["v2"][2] == production[0]  # both "cat"


def test_class_probabilities_survive_merge_and_checkpoint_and_read_as_their_argmax_class() -> None:
    a, b = LabelTally(), LabelTally()
    a.add("r1", (0.2, 0.5, 0.3), "1", {"v2": "2"})
    a.add("r3", (0.6, 0.3, 0.1), "7")  # the label names no class of the list
    b.add("r2", "2", "2")  # a prediction logged as a class name
    b.add("r0", (0.1, 0.1, 0.8), "0")
    restored = LabelTally.from_dict(orjson.loads(orjson.dumps(a.merge(b).to_dict())))
    assert restored.predictions == [(0.1, 0.1, 0.8), (0.2, 0.5, 0.3), "2", (0.6, 0.3, 0.1)]
    outcomes = outcome_arrays(restored)
    # As codes: r0 predicts class 2 (like r2, and like r1's candidate), r1 and r3 predict their argmax.
    assert outcomes.predictions[0] == outcomes.predictions[2] == outcomes.candidates["v2"][1]
    assert outcomes.predictions[1] == outcomes.labels[1] and outcomes.predictions[3] == outcomes.labels[0]
    # The probability each list gave the true class: 0 when the label is outside it; NaN for a name.
    assert outcomes.true_class_probability[[0, 1, 3]].tolist() == [0.1, 0.5, 0.0]
    assert math.isnan(outcomes.true_class_probability[2])


def test_class_log_loss_matches_sklearn_on_the_probability_predictions_only() -> None:
    from sklearn.metrics import log_loss as sk_log_loss

    rng = np.random.default_rng(9)
    n = 600
    truth = rng.choice(3, size=n, p=(0.5, 0.3, 0.2))
    # Probabilities leaning towards the true class; every third prediction logged as a class name.
    probabilities = rng.dirichlet((1.0, 1.0, 1.0), size=n) + np.eye(3)[truth]
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    tally = LabelTally()
    for i in range(n):
        prediction = str(int(np.argmax(probabilities[i]))) if i % 3 == 2 else tuple(probabilities[i].tolist())
        tally.add(f"r{i:04d}", prediction, label_outcome(int(truth[i]), PredictionKind.CLASS))
    tally.predicted = n
    listed = np.arange(n) % 3 != 2
    options = PerformanceOptions(min_pairs=100, resamples=300)
    findings = evaluate_window(tally, PredictionKind.CLASS, {"log_loss": 0.3}, options)
    by_name = {f.subject: f for f in findings}
    assert list(by_name) == ["accuracy", "log_loss"]
    accuracy, loss = by_name["accuracy"], by_name["log_loss"]
    # Accuracy over every pair (a list counts as its argmax); log-loss over the listed ones only.
    assert accuracy.detail["pairs"] == n and loss.detail["pairs"] == int(listed.sum())
    assert accuracy.effect == pytest.approx(float(np.mean(np.argmax(probabilities, axis=1) == truth)))
    expected = sk_log_loss(truth[listed], probabilities[listed], labels=[0, 1, 2])
    assert loss.effect == pytest.approx(expected, rel=1e-12)
    # The interval: scipy's percentile bootstrap of the per-pair losses, by index with the same seed.
    per_pair = -np.log(probabilities[listed][np.arange(int(listed.sum())), truth[listed]])
    reference = scipy_mean_interval(per_pair, options)
    assert loss.detail["ci_low"] == pytest.approx(reference.low, rel=1e-12)
    assert loss.detail["ci_high"] == pytest.approx(reference.high, rel=1e-12)
    # A holdout of 0.3 is far below this window's interval: worse (higher loss) with confidence.
    assert loss.flagged and loss.detail["ci_low"] > 0.3 + options.tolerance
    assert not evaluate_window(tally, PredictionKind.CLASS, {"log_loss": expected}, options)[1].flagged


def test_a_true_class_given_no_probability_costs_the_clipped_log_loss() -> None:
    tally = LabelTally()
    tally.add("r0", (1.0, 0.0), "1")  # certain and wrong
    tally.add("r1", (0.5, 0.5), "4")  # the label is no class of the list
    tally.predicted = 2
    [_, loss] = evaluate_window(
        tally, PredictionKind.CLASS, {}, PerformanceOptions(min_pairs=1, resamples=20)
    )
    assert loss.subject == "log_loss" and loss.effect == pytest.approx(-math.log(1e-15))


def test_tally_merge_order_does_not_matter_when_a_request_id_repeats() -> None:
    a, b = LabelTally(), LabelTally()
    a.add("r1", "cat", "cat")
    b.add("r1", "dog", "cat", {"v2": "dog"})
    assert a.merge(b).to_dict() == b.merge(a).to_dict()


def test_log_loss_reads_normalised_probabilities_and_leaves_out_what_it_cannot_judge() -> None:
    tally = LabelTally()
    tally.add("a", (2.0, 6.0), "1")  # not normalised: 0.75 of it on class 1
    tally.add("b", (0.5, 0.5), "0")
    tally.add("c", (-1.0, 3.0), "1")  # logits, not probabilities
    tally.add("d", (0.3, 0.7), "cat")  # a label that names no class index
    tally.add("e", "1", "1")  # logged as a class name
    tally.predicted = 5
    options = PerformanceOptions(min_pairs=1, resamples=20)
    findings = {f.subject: f for f in evaluate_window(tally, PredictionKind.CLASS, {}, options)}
    loss, accuracy = findings["log_loss"], findings["accuracy"]
    assert loss.detail["pairs"] == 2 and loss.detail["labelled_share"] == pytest.approx(0.4)
    assert loss.effect == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2, rel=1e-12)
    assert "2 labelled predictions logged as class probabilities" in loss.reason
    assert accuracy.detail["pairs"] == 5 and accuracy.effect == pytest.approx(4 / 5)  # b's tie: class 0


def test_a_holdout_log_loss_with_no_probabilities_logged_is_reported_not_judged() -> None:
    names_only = class_tally(["0", "1", "1"], ["0", "1", "0"])
    options = PerformanceOptions(min_pairs=1, resamples=20)
    assert [f.subject for f in evaluate_window(names_only, PredictionKind.CLASS, {}, options)] == ["accuracy"]
    findings = evaluate_window(names_only, PredictionKind.CLASS, {"log_loss": 0.4}, options)
    [loss] = [f for f in findings if f.subject == "log_loss"]
    assert not loss.flagged and loss.effect is None and loss.threshold == 0.4
    assert "only 0 labelled predictions logged as class probabilities" in loss.reason


def value_tally(predictions: np.ndarray, labels: np.ndarray) -> LabelTally:
    tally = LabelTally()
    for i, (p, y) in enumerate(zip(predictions.tolist(), labels.tolist(), strict=True)):
        tally.add(f"r{i:05d}", p, y)
    tally.predicted = len(labels)
    return tally


def test_holdout_metrics_and_their_standard_errors_match_scipy_and_sklearn() -> None:
    from sklearn import metrics as sk

    rng = np.random.default_rng(21)
    labels = (rng.random(400) < 0.35).astype(float)
    scores = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, 400), 0.01, 0.99)
    values, errors = holdout_metrics(PredictionKind.SCORE, scores, labels, resamples=150, seed=4)
    assert values["auc"] == pytest.approx(sk.roc_auc_score(labels, scores), rel=1e-12)
    assert values["log_loss"] == pytest.approx(sk.log_loss(labels, scores), rel=1e-12)
    assert values["accuracy"] == pytest.approx(sk.accuracy_score(labels, scores >= 0.5), rel=1e-12)

    def scipy_se(statistic: Any) -> float:
        """scipy's bootstrap standard error of ``statistic`` on the same pairs, seed and resamples."""
        return float(
            stats.bootstrap(
                (scores, labels),
                statistic,
                paired=True,
                vectorized=False,
                n_resamples=150,
                rng=np.random.default_rng(4),
            ).standard_error
        )

    # Independent definitions of each metric, so the check is of the bootstrap and of the metric alike.
    assert errors["auc"] == pytest.approx(scipy_se(lambda s, y: sk.roc_auc_score(y, s)), rel=1e-9)
    assert errors["log_loss"] == pytest.approx(
        scipy_se(lambda s, y: sk.log_loss(y, s, labels=[0, 1])), rel=1e-9
    )
    assert errors["accuracy"] == pytest.approx(
        scipy_se(lambda s, y: np.mean((s >= 0.5) == (y == 1))), rel=1e-9
    )
    assert 0.005 < errors["auc"] < 0.05  # a 400-pair holdout knows its AUC to a few hundredths

    predictions = rng.normal(0, 1, 300)
    truth = predictions + rng.normal(0, 0.5, 300)
    values, errors = holdout_metrics(PredictionKind.VALUE, predictions, truth, resamples=100, seed=1)
    assert values == pytest.approx(
        {
            "rmse": sk.root_mean_squared_error(truth, predictions),
            "mae": sk.mean_absolute_error(truth, predictions),
        }
    )
    assert set(errors) == {"rmse", "mae"} and all(e > 0 for e in errors.values())
    # Few positives: some resamples draw none (no AUC there); the error is the spread of the others,
    # as scipy's own bootstrap distribution gives it. With one positive most resamples have no AUC:
    # the value stands, without an error.
    rare = np.zeros(400)
    rare[[3, 50, 120]] = 1.0
    values, errors = holdout_metrics(PredictionKind.SCORE, scores, rare, resamples=200, seed=2)
    with pytest.warns(stats.DegenerateDataWarning):  # scipy's interval is NaN: some resamples are
        distribution = stats.bootstrap(
            (scores, rare),
            lambda s, y: sk.roc_auc_score(y, s) if 0 < y.sum() < len(y) else np.nan,
            paired=True,
            vectorized=False,
            n_resamples=200,
            method="percentile",
            rng=np.random.default_rng(2),
        ).bootstrap_distribution
    assert np.isnan(distribution).any() and np.isfinite(distribution).mean() >= 0.9
    assert errors["auc"] == pytest.approx(np.nanstd(distribution, ddof=1), rel=1e-9)
    single = np.zeros(400)
    single[7] = 1.0
    values, errors = holdout_metrics(PredictionKind.SCORE, scores, single, resamples=200, seed=2)
    assert "auc" in values and "auc" not in errors
    # One class in the holdout: no AUC, and so no error for it either; the other metrics stand.
    values, errors = holdout_metrics(PredictionKind.SCORE, scores, np.zeros(400), resamples=50)
    assert set(values) == set(errors) == {"log_loss", "accuracy"}
    with pytest.raises(ValueError, match="as many predictions as labels"):
        holdout_metrics(PredictionKind.SCORE, scores, labels[:10])


def test_label_drift_counts_training_positives_as_a_windows_labels_count_them() -> None:
    """Labels spelled "yes"/"no": training's positives are the "yes" bin, as a window's "yes" is 1."""
    training = label_sketch(["yes"] * 300 + ["no"] * 700)
    rng = np.random.default_rng(4)
    for rate, drifted in ((0.3, False), (0.6, True)):
        spelled = np.where(rng.random(2_000) < rate, "yes", "no").tolist()
        window = np.asarray([label_outcome(v, PredictionKind.SCORE) for v in spelled], dtype=float)
        tally = value_tally(np.full(2_000, 0.5), window)
        options = PerformanceOptions(resamples=50)
        findings = evaluate_window(tally, PredictionKind.SCORE, {}, options, training)
        [drift] = [f for f in findings if f.check is Check.LABEL_DRIFT]
        assert drift.detail["reference_rate"] == pytest.approx(0.3)
        assert drift.detail["window_rate"] == pytest.approx(np.mean(window))
        assert drift.flagged is drifted


def test_an_auc_on_few_positives_is_judged_and_on_one_positive_is_reported_not_judged() -> None:
    """A window with a handful of positives: some resamples draw none, yet its AUC is still judged."""
    rng = np.random.default_rng(14)
    labels = np.zeros(400)
    labels[rng.choice(400, 6, replace=False)] = 1.0
    scores = np.clip(0.2 + rng.normal(0, 0.1, 400) - 0.15 * labels, 0.01, 0.99)  # positives scored lower
    options = PerformanceOptions(resamples=200, seed=3)
    findings = {
        f.subject: f
        for f in evaluate_window(value_tally(scores, labels), PredictionKind.SCORE, {"auc": 0.85}, options)
    }
    auc = findings["auc"]
    # (1 - 6/400)^400 ~ 0.2 %: a resample or so lacks a positive; the interval comes from the rest.
    assert auc.flagged and auc.effect is not None and auc.effect < 0.3
    assert auc.detail["ci_high"] < 0.85 and "not judged" not in auc.reason
    # One positive: the AUC has a value but no interval (most resamples lack the positive).
    single = np.zeros(400)
    single[11] = 1.0
    findings = {
        f.subject: f
        for f in evaluate_window(value_tally(scores, single), PredictionKind.SCORE, {"auc": 0.85}, options)
    }
    auc = findings["auc"]
    assert not auc.flagged and auc.effect is not None and "ci_low" not in auc.detail
    assert "undefined on most bootstrap resamples" in auc.reason and auc.reason.endswith("not judged")
    # No positive at all: no AUC.
    findings = {
        f.subject: f
        for f in evaluate_window(
            value_tally(scores, np.zeros(400)), PredictionKind.SCORE, {"auc": 0.85}, options
        )
    }
    assert findings["auc"].effect is None and "undefined on these 400 " in findings["auc"].reason
    assert findings["accuracy"].detail["ci_low"] <= findings["accuracy"].effect  # the others stand


def test_the_holdouts_standard_error_widens_the_margin_in_quadrature() -> None:
    rng = np.random.default_rng(5)
    predictions = rng.normal(0, 1, 2_000)
    truth = predictions + rng.normal(0, 1, 2_000)
    options = PerformanceOptions(resamples=200, tolerance=0.0)
    tally = value_tally(predictions, truth)
    exact = {f.subject: f for f in evaluate_window(tally, PredictionKind.VALUE, {"mae": 0.72}, options)}
    mae = exact["mae"]
    # The window's MAE (~0.80) is above its interval's reach of a holdout at 0.72: worse, flagged.
    assert mae.flagged and mae.detail["ci_low"] > 0.72
    assert mae.detail["margin"] == pytest.approx(mae.effect - mae.detail["ci_low"])
    # The same holdout value known only to ±0.04 (SE): the gap is within both samples' errors.
    noisy_holdout = evaluate_window(
        tally, PredictionKind.VALUE, {"mae": 0.72}, options, holdout_errors={"mae": 0.04}
    )
    [mae_noisy] = [f for f in noisy_holdout if f.subject == "mae"]
    z = stats.norm.ppf(0.5 + options.confidence / 2)
    own = mae.effect - mae.detail["ci_low"]
    assert mae_noisy.detail["margin"] == pytest.approx(math.hypot(own, z * 0.04))
    assert mae_noisy.detail["holdout_standard_error"] == 0.04
    assert not mae_noisy.flagged and "(SE 0.0400)" in mae_noisy.reason
    assert mae_noisy.effect == mae.effect and mae_noisy.detail["ci_low"] == mae.detail["ci_low"]


def test_a_small_holdouts_luck_no_longer_raises_false_alarms_and_real_degradation_still_does() -> None:
    """Windows of the holdout's own model, judged against a 150-pair holdout's MAE and RMSE.

    Taken as exact, the holdout's sampling error alone flags about a quarter of the windows; with its
    standard error the false-alarm rate is back near the confidence level's tail (a few in a hundred:
    two metrics, each at 99 %, with a tolerance). A model whose errors
    grew by 40 % is still flagged in nearly every window.
    """
    options = PerformanceOptions(resamples=150)
    trials = 100
    alarms = {"exact": 0, "with_error": 0, "degraded": 0}
    rng = np.random.default_rng(11)
    for trial in range(trials):
        held = rng.normal(0, 1, 150)
        values, errors = holdout_metrics(PredictionKind.VALUE, held, np.zeros(150), resamples=100, seed=trial)
        window = rng.normal(0, 1, 2_000)
        tally = value_tally(window, np.zeros(2_000))
        for name, holdout_errors in (("exact", None), ("with_error", errors)):
            findings = evaluate_window(
                tally, PredictionKind.VALUE, values, options, holdout_errors=holdout_errors
            )
            alarms[name] += any(f.flagged for f in findings)
        if trial % 4 == 0:  # power, on fewer windows (each a real degradation)
            worse = value_tally(1.4 * rng.normal(0, 1, 2_000), np.zeros(2_000))
            findings = evaluate_window(
                tally=worse, kind=PredictionKind.VALUE, holdout=values, options=options, holdout_errors=errors
            )
            alarms["degraded"] += any(f.flagged for f in findings)
    assert alarms["exact"] >= 0.15 * trials, alarms  # the problem the error term fixes
    assert alarms["with_error"] <= 0.05 * trials, alarms
    assert alarms["degraded"] >= 0.9 * (trials // 4), alarms


def test_binary_log_loss_reads_labels_as_auc_and_accuracy_do() -> None:
    """Labels coded -1/+1 gave a negative log-loss; they are positives above 0.5, as for the AUC."""
    from sklearn.metrics import log_loss as sk_log_loss

    from skewguard.labels.performance import log_loss

    scores = np.array([0.9, 0.2, 0.6, 0.4, 0.05])
    zero_one = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    minus_plus = 2 * zero_one - 1
    expected = sk_log_loss(zero_one, scores)
    assert log_loss(scores, zero_one) == pytest.approx(expected, rel=1e-12)
    assert log_loss(scores, minus_plus) == pytest.approx(expected, rel=1e-12)
