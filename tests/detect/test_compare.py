"""compare_frames: the batch user's path, and its exact JSON shape."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skewguard.detect import DriftPolicy, Method
from skewguard.detect.compare import compare_frames, infer_specs
from skewguard.errors import ConfigError, DataError
from skewguard.stats import ColumnKind


def _frames(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": rng.normal(100.0 + 20.0 * shift, 20.0, n),
            "country": rng.choice(
                np.array(["DE", "FR", "NL", "PL"], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1]
            ),
            "store": rng.integers(0, 5, n),  # integer codes, categorical only when told
            "returning": rng.random(n) < 0.4,
        }
    )


def test_json_shape_is_exactly_the_documented_one() -> None:
    rng = np.random.default_rng(1)
    result = compare_frames(_frames(rng, 20_000), _frames(rng, 3000))
    document = result.to_json_dict()
    assert list(document) == ["chunks"]
    (chunk,) = document["chunks"]
    assert list(chunk) == ["index", "rows", "features"]
    assert (chunk["index"], chunk["rows"]) == (0, 3000)
    assert list(chunk["features"]) == ["amount", "country", "store", "returning"]
    for entry in chunk["features"].values():
        assert list(entry) == ["drifted", "method", "effect", "threshold", "p_value"]
        assert isinstance(entry["drifted"], bool)
        assert entry["method"] in {m.value for m in Method}
        assert all(isinstance(entry[k], float) for k in ("effect", "threshold", "p_value"))
    json.dumps(document, allow_nan=False)
    assert not result.any_drift


def test_chunks_are_consecutive_and_only_the_shifted_one_drifts() -> None:
    rng = np.random.default_rng(2)
    reference = _frames(rng, 30_000)
    current = pd.concat(
        [_frames(rng, 4000), _frames(rng, 4000, shift=0.5), _frames(rng, 1500)], ignore_index=True
    )
    result = compare_frames(reference, current, chunk_size=4000)
    assert [(c.index, c.start, c.rows) for c in result.chunks] == [
        (0, 0, 4000),
        (1, 4000, 4000),
        (2, 8000, 1500),
    ]
    assert [c.verdict.drifted for c in result.chunks] == [(), ("amount",), ()]
    assert result.calibration.window_size == 4000


def test_categorical_option_forces_integer_codes_to_categories() -> None:
    rng = np.random.default_rng(3)
    reference = _frames(rng, 10_000)
    kinds = {s.name: s.kind for s in infer_specs(reference)}
    assert kinds == {
        "amount": ColumnKind.NUMERIC,
        "country": ColumnKind.CATEGORICAL,
        "store": ColumnKind.NUMERIC,
        "returning": ColumnKind.CATEGORICAL,
    }
    current = _frames(rng, 3000)
    current["store"] = np.where(rng.random(3000) < 0.1, 7, current["store"])  # a store never seen before
    result = compare_frames(reference, current, categorical=["store"])
    store = result.chunks[0].verdict.feature("store")
    assert store.kind is ColumnKind.CATEGORICAL
    assert store.drifted and store.statistics.unseen_share == pytest.approx(0.1, abs=0.02)


def test_policy_is_passed_through() -> None:
    rng = np.random.default_rng(4)
    result = compare_frames(
        _frames(rng, 10_000), _frames(rng, 2000, shift=0.5), policy=DriftPolicy(alpha=1e-300)
    )
    assert not result.any_drift  # the shift is real but no evidence clears alpha = 1e-300


def test_bad_inputs_are_refused_with_clear_errors() -> None:
    rng = np.random.default_rng(5)
    reference = _frames(rng, 1000)
    with pytest.raises(DataError, match="country"):
        compare_frames(reference, reference.drop(columns=["country"]))
    with pytest.raises(ConfigError, match="chunk_size"):
        compare_frames(reference, reference, chunk_size=0)
    with pytest.raises(ConfigError, match="nope"):
        compare_frames(reference, reference, categorical=["nope"])
    with pytest.raises(DataError, match="rows"):
        compare_frames(reference, reference.head(0))
    dated = reference.assign(when=pd.Timestamp("2024-01-01", tz="UTC"))
    with pytest.raises(DataError, match="when"):
        compare_frames(dated, dated)


def _cities(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """A long-tailed category: a Zipf(1.1) law over 5000 cities, as many real id-like columns are."""
    weights = 1.0 / np.arange(1, 5001) ** 1.1
    names = np.array([f"city{i}" for i in range(5000)], dtype=object)
    return pd.DataFrame({"city": rng.choice(names, n, p=weights / weights.sum())})


def test_a_long_tail_is_not_drift_though_every_window_meets_new_values() -> None:
    """Cities never seen in the reference turn up in every window (its missing mass, ~7 % here).

    Compared as a bin the reference has at 0 %, they flagged every same-distribution window severely
    (JS ~0.19 against a threshold ~0.06); counted in the tail, they are the rare values they are.
    """
    rng = np.random.default_rng(11)
    reference = _cities(rng, 20_000)
    for seed in range(3):
        current = _cities(np.random.default_rng(100 + seed), 5000)
        city = compare_frames(reference, current).chunks[0].verdict.feature("city")
        assert city.statistics.unseen_share is not None and city.statistics.unseen_share > 0.03
        assert not city.drifted, city.reason


def test_traffic_moving_to_new_values_is_still_drift() -> None:
    rng = np.random.default_rng(12)
    reference = _cities(rng, 20_000)
    current = _cities(rng, 5000)
    moved = rng.random(5000) < 0.25
    current.loc[moved, "city"] = [f"new{i}" for i in range(int(moved.sum()))]
    city = compare_frames(reference, current).chunks[0].verdict.feature("city")
    assert city.drifted and city.statistics.largest_change == "<other or unseen>"


def test_a_numeric_column_all_null_in_the_reference_is_judged_by_its_null_rate() -> None:
    # (a blank CSV column reads as float NaN): it refused the whole comparison; now it is profiled,
    # unchanged while it stays null, and flagged once it holds values.
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"blank": [np.nan] * 3000, "x": rng.normal(size=3000)})
    still_blank = compare_frames(
        reference, pd.DataFrame({"blank": [np.nan] * 1000, "x": rng.normal(size=1000)})
    )
    assert not still_blank.chunks[0].verdict.drifted
    filled = compare_frames(
        reference, pd.DataFrame({"blank": rng.normal(size=1000), "x": rng.normal(size=1000)})
    )
    (blank,) = [f for f in filled.chunks[0].verdict.features if f.name == "blank"]
    assert blank.drifted and blank.method is Method.NULL_RATE
    assert (blank.statistics.reference_null_rate, blank.statistics.window_null_rate) == (1.0, 0.0)
