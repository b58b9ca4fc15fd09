"""Reservoir rows of equal priority (a repeated row key): ordered by content hash, merged exactly.

The tiebreak hash is worked out only where priorities tie, and no longer stored; these tests pin that the
sample is still the bottom-k by (priority, content hash) of every row seen, in any merge order.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.util import hash_array, hash_pandas_object

from skewguard.errors import DataError
from skewguard.stats import ColumnKind, ColumnSpec, Profile, ProfileLayout, Reservoir, row_priorities

_REFERENCE = pd.DataFrame(
    {"x": np.linspace(-5.0, 5.0, 100), "c": np.array(["a", "b", "c", "d"] * 25, dtype=object)}
)
_SPECS = [ColumnSpec("x", ColumnKind.NUMERIC), ColumnSpec("c", ColumnKind.CATEGORICAL)]
_KINDS = {"x": "f", "c": "O"}


def _layout(reservoir_size: int) -> ProfileLayout:
    return ProfileLayout.fit(_REFERENCE, _SPECS, bins=5, top_k=2, reservoir_size=reservoir_size)


def _bottom_k(frame: pd.DataFrame, keys: Any, k: int) -> pd.DataFrame:
    """The specification, computed directly: rows ordered by (key priority, hash of the row's values)."""
    priorities = row_priorities(len(frame), keys, 0)
    content = np.asarray(hash_pandas_object(frame[["x", "c"]], index=False).to_numpy(), dtype=np.uint64)
    order = np.lexsort((content, priorities))[:k]
    return frame.iloc[order].reset_index(drop=True)


def _assert_sample_is(profile: Profile, expected: pd.DataFrame) -> None:
    values = profile.reservoir.values
    np.testing.assert_array_equal(values["x"], expected["x"].to_numpy(dtype=np.float64))
    assert list(values["c"]) == list(expected["c"])


def _frame_with_repeated_keys(
    n: int, distinct_keys: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0.0, 2.0, n), 1)  # few distinct values: identical rows happen too
    x[rng.random(n) < 0.1] = np.nan
    c = rng.choice(np.array(["a", "b", "e", None], dtype=object), n)
    keys = np.array([f"req-{k}" for k in rng.integers(0, distinct_keys, n)], dtype=object)
    return pd.DataFrame({"x": x, "c": c}), keys


def test_rows_of_a_repeated_key_are_ordered_by_their_content_hash() -> None:
    frame, keys = _frame_with_repeated_keys(600, 40, seed=1)
    layout = _layout(reservoir_size=90)  # about 6 keys' worth of rows: the cut falls inside a tie
    profile = layout.profile(frame, keys)
    assert len(np.unique(profile.reservoir.priorities)) < len(profile.reservoir)  # ties were kept
    _assert_sample_is(profile, _bottom_k(frame, keys, 90))


def test_repeated_keys_across_parts_merge_to_the_whole_in_every_order_and_grouping() -> None:
    frame, keys = _frame_with_repeated_keys(900, 60, seed=2)
    layout = _layout(reservoir_size=50)
    cuts = [0, 130, 400, 410, 777, 900]
    parts = [layout.profile(frame.iloc[a:b], keys[a:b]) for a, b in itertools.pairwise(cuts)]
    whole = layout.profile(frame, keys)
    _assert_sample_is(whole, _bottom_k(frame, keys, 50))
    rng = np.random.default_rng(3)
    for _ in range(6):
        merged = layout.empty_profile()
        for i in rng.permutation(len(parts)):
            merged = merged + parts[i]
        assert merged.reservoir.equals(whole.reservoir)
    left = ((parts[0] + parts[1]) + (parts[2] + parts[3])) + parts[4]
    right = parts[4] + (parts[3] + (parts[2] + (parts[1] + parts[0])))
    assert left.reservoir.equals(whole.reservoir)
    assert right.reservoir.equals(whole.reservoir)


def test_the_same_rows_folded_in_batches_and_merged_from_restored_checkpoints_agree() -> None:
    frame, keys = _frame_with_repeated_keys(700, 30, seed=4)
    layout = _layout(reservoir_size=64)
    folded = layout.empty_profile()
    for start in range(0, len(frame), 97):  # poll-sized batches, each restored from JSON in between
        folded.fold(frame.iloc[start : start + 97], keys[start : start + 97])
        folded = Profile.from_json(folded.to_json())
    _assert_sample_is(folded, _bottom_k(frame, keys, 64))
    assert folded.reservoir.equals(layout.profile(frame, keys).reservoir)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=1, max_value=150),
    distinct=st.integers(min_value=1, max_value=12),
    capacity=st.integers(min_value=1, max_value=20),
    seed=st.integers(min_value=0, max_value=2**16),
    data=st.data(),
)
def test_any_split_and_merge_order_of_tied_rows_gives_the_bottom_k(
    n: int, distinct: int, capacity: int, seed: int, data: st.DataObject
) -> None:
    frame, keys = _frame_with_repeated_keys(n, distinct, seed)
    layout = _layout(reservoir_size=capacity)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=5))) | {0, n})
    order = data.draw(st.permutations(range(len(cuts) - 1)))
    merged = layout.empty_profile()
    for i in order:
        merged = merged + layout.profile(frame.iloc[cuts[i] : cuts[i + 1]], keys[cuts[i] : cuts[i + 1]])
    _assert_sample_is(merged, _bottom_k(frame, keys, capacity))


def test_the_serialised_reservoir_has_no_tiebreaks_and_round_trips_bit_exactly() -> None:
    layout = _layout(reservoir_size=8)
    x = np.array([-0.0, 5e-324, 1.2345678901234567e150, np.nan, 0.1 + 0.2, -1e-300, 2.0**53 + 2, 3.0])
    frame = pd.DataFrame({"x": x, "c": np.array(["a", None, "é", "", "b", "a", None, "z"], dtype=object)})
    reservoir = layout.profile(frame).reservoir
    data = reservoir.to_dict()
    assert set(data) == {"capacity", "priorities", "values"}
    assert all(type(p) is int for p in data["priorities"])
    assert all(v is None or type(v) is float for v in data["values"]["x"])
    back = Reservoir.from_dict(json.loads(json.dumps(data, allow_nan=False)), _KINDS)
    assert back.equals(reservoir)
    np.testing.assert_array_equal(back.values["x"].view(np.uint64), reservoir.values["x"].view(np.uint64))
    assert list(back.values["c"]) == list(reservoir.values["c"])


def test_the_earlier_form_with_stored_tiebreaks_is_still_read() -> None:
    frame, keys = _frame_with_repeated_keys(300, 20, seed=5)
    reservoir = _layout(reservoir_size=30).profile(frame, keys).reservoir
    earlier = reservoir.to_dict()
    kept = pd.DataFrame({"x": reservoir.values["x"], "c": reservoir.values["c"]})
    earlier["tiebreaks"] = hash_pandas_object(kept, index=False).to_numpy().tolist()
    assert Reservoir.from_dict(earlier, _KINDS).equals(reservoir)


@pytest.mark.parametrize(
    "broken",
    [
        {"capacity": 2, "priorities": 5, "values": {"x": [1.0], "c": ["a"]}},
        {"capacity": 2, "priorities": [5], "values": {"x": 1.0, "c": ["a"]}},
        {"capacity": 2, "priorities": [5], "values": {"x": [1.0, 2.0], "c": ["a"]}},
        {"capacity": 2, "priorities": [5], "values": {"x": ["one"], "c": ["a"]}},
        {"capacity": 2, "priorities": [5], "values": {"c": ["a"]}},
    ],
)
def test_a_malformed_reservoir_is_a_data_error(broken: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="malformed reservoir"):
        Reservoir.from_dict(broken, _KINDS)


def test_string_keys_in_a_list_hash_as_they_did_through_a_unicode_array() -> None:
    keys = [f"r{i:09d}" for i in range(500)] + ["é", "😀 x", "", "a\x00", "a"]
    expected = np.asarray(hash_array(np.asarray(keys).astype(object), categorize=False), dtype=np.uint64)
    np.testing.assert_array_equal(row_priorities(len(keys), keys, 0), expected)
    assert row_priorities(2, ["3", "4"], 0)[0] != row_priorities(2, [3, 4], 0)[0]
