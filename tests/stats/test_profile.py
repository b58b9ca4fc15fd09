"""The Profile: what folding counts, that merging is exact and associative, and lossless JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from skewguard.errors import ConfigError, DataError, StatisticsError
from skewguard.stats import (
    CategoricalColumnLayout,
    ColumnKind,
    ColumnRole,
    ColumnSpec,
    NumericColumnLayout,
    NumericSketch,
    Profile,
    ProfileLayout,
    categorical_values,
    category_text,
    ks_binned,
    row_priorities,
)
from skewguard.stats.profile import factorize_categories

NUM = ColumnKind.NUMERIC
CAT = ColumnKind.CATEGORICAL


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 5000
    x = rng.normal(10, 3, n)
    x[rng.random(n) < 0.05] = np.nan
    x[:3] = [np.inf, -np.inf, np.nan]
    colour = rng.choice(np.array(["red", "green", "blue", "teal"], dtype=object), n, p=[0.5, 0.3, 0.15, 0.05])
    colour[rng.random(n) < 0.02] = None
    return pd.DataFrame(
        {
            "x": x,
            "count": rng.poisson(2, n),
            "colour": colour,
            "flag": rng.random(n) < 0.3,
        }
    )


SPECS = [
    ColumnSpec("x", NUM, domain=(0.0, 20.0)),
    ColumnSpec("count", NUM),
    ColumnSpec("colour", CAT, domain=frozenset({"red", "green", "blue"})),
    ColumnSpec("flag", CAT),
]


def test_numeric_edges_are_reference_quantiles_that_are_data_values(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, bins=10)
    x = layout.column("x")
    assert isinstance(x, NumericColumnLayout)
    finite = frame["x"][np.isfinite(frame["x"])].to_numpy()
    expected = np.unique(np.quantile(finite, np.linspace(0, 1, 11), method="inverted_cdf"))
    np.testing.assert_array_equal(x.edges, expected)
    assert set(x.edges) <= set(finite)
    # Discrete values collapse duplicate quantiles.
    count = layout.column("count")
    assert isinstance(count, NumericColumnLayout)
    assert len(count.edges) < 11
    assert np.all(np.diff(count.edges) > 0)


def test_constant_reference_column_gets_one_bin_holding_that_value() -> None:
    layout = ProfileLayout.fit(pd.DataFrame({"c": [2.0] * 10}), [ColumnSpec("c", NUM)])
    profile = layout.profile(pd.DataFrame({"c": [1.0, 2.0, 2.0, 3.0]}))
    np.testing.assert_array_equal(profile.numeric("c").counts, [1, 2, 1])


def test_a_repeated_maximum_gets_its_own_bin_so_every_value_of_a_discrete_column_is_told_apart() -> None:
    """A 0/1 flag: its 0s and 1s once shared the closed last bin, and no binned test saw them move."""
    rng = np.random.default_rng(3)
    reference = (rng.random(4000) < 0.1).astype(float)
    window = (rng.random(1000) < 0.9).astype(float)
    layout = ProfileLayout.fit(pd.DataFrame({"flag": reference}), [ColumnSpec("flag", NUM)], bins=10)
    flag = layout.column("flag")
    assert isinstance(flag, NumericColumnLayout)
    np.testing.assert_array_equal(flag.edges, [0.0, 1.0, np.nextafter(1.0, np.inf)])
    before = layout.profile(pd.DataFrame({"flag": reference})).numeric("flag").counts
    after = layout.profile(pd.DataFrame({"flag": window})).numeric("flag").counts
    np.testing.assert_array_equal(before, [0, *np.bincount(reference.astype(int)), 0])
    np.testing.assert_array_equal(after, [0, *np.bincount(window.astype(int)), 0])
    # Every value in its own bin: the binned KS is scipy's exact one on the raw values.
    assert ks_binned(before, after).statistic == pytest.approx(stats.ks_2samp(reference, window).statistic)
    # Small integers alike, the largest included; values above it overflow.
    counts = rng.integers(0, 5, 3000).astype(float)
    layout = ProfileLayout.fit(pd.DataFrame({"n": counts}), [ColumnSpec("n", NUM)], bins=10)
    folded = layout.profile(pd.DataFrame({"n": [*counts, 5.0]})).numeric("n").counts
    np.testing.assert_array_equal(folded, [0, *np.bincount(counts.astype(int)), 1])


def test_categorical_vocabulary_is_top_k_by_frequency_then_name(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, top_k=2)
    colour = layout.column("colour")
    assert isinstance(colour, CategoricalColumnLayout)
    assert colour.vocabulary == ("red", "green")
    assert colour.known == ("red", "green", "blue", "teal")
    flag = layout.column("flag")
    assert isinstance(flag, CategoricalColumnLayout)
    assert set(flag.known) == {"true", "false"}
    tie = ProfileLayout.fit(pd.DataFrame({"t": ["b", "a", "c", "c"]}), [ColumnSpec("t", CAT)])
    assert tie.column("t").vocabulary == ("c", "a", "b")  # type: ignore[union-attr]


def test_fold_counts_match_numpy_and_pandas(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, bins=12, top_k=2)
    profile = layout.profile(frame)
    x = profile.numeric("x")
    edges = layout.column("x").edges  # type: ignore[union-attr]
    raw = frame["x"].to_numpy()
    finite = raw[np.isfinite(raw)]
    assert x.nulls == int((~np.isfinite(raw)).sum())  # NaN and ±inf both count as null
    assert x.count == len(finite)
    assert x.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert x.std == pytest.approx(finite.std(ddof=1), rel=1e-12)
    assert (x.min, x.max) == (finite.min(), finite.max())
    inner, _ = np.histogram(finite, bins=edges)  # numpy's last bin is closed, like ours
    np.testing.assert_array_equal(x.counts[1:-1], inner)
    assert x.counts[0] == (finite < edges[0]).sum()
    assert x.counts[-1] == (finite > edges[-1]).sum()
    assert x.out_of_domain == int(((finite < 0) | (finite > 20)).sum())
    centroid = finite[(finite >= edges[0]) & (finite < edges[1])].mean()
    assert x.centroids[1] == pytest.approx(centroid, rel=1e-12)

    colour = profile.categorical("colour")
    counts = frame["colour"].value_counts()
    assert list(colour.counts) == [counts["red"], counts["green"], counts["blue"] + counts["teal"], 0]
    assert colour.nulls == frame["colour"].isna().sum()
    assert colour.out_of_domain == counts["teal"]


def test_unseen_categories_are_told_apart_from_known_rare_ones(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, top_k=2)
    window = frame.head(10).copy()
    window["colour"] = ["red", "blue", "purple", "purple", None, "red", "teal", "green", "zzz", "red"]
    colour = layout.profile(window).categorical("colour")
    assert list(colour.counts) == [3, 1, 2, 3]  # red, green, OTHER (blue, teal), UNSEEN (purple×2, zzz)
    assert colour.unseen == 3
    assert colour.nulls == 1


def test_categorical_values_are_normalised_the_same_whatever_the_dtype() -> None:
    specs = [ColumnSpec("v", CAT)]
    reference = pd.DataFrame({"v": [1, 2, 3, 3]})
    layout = ProfileLayout.fit(reference, specs)
    assert layout.column("v").known == ("3", "1", "2")  # type: ignore[union-attr]
    as_float = pd.DataFrame({"v": [1.0, np.nan, 3.0]})  # ints that picked up a NaN
    as_text = pd.DataFrame({"v": pd.array(["1", None, "3"], dtype="string")})
    as_category = pd.DataFrame({"v": pd.Categorical(["1", None, "3"])})
    profiles = [layout.profile(f) for f in (as_float, as_text, as_category)]
    for profile in profiles:
        assert list(profile.categorical("v").counts) == [1, 1, 0, 0, 0]
        assert profile.categorical("v").nulls == 1
    booleans = ProfileLayout.fit(pd.DataFrame({"b": [True, False]}), [ColumnSpec("b", CAT)])
    nullable = pd.DataFrame({"b": pd.array([True, None, True], dtype="boolean")})
    sketch = booleans.profile(nullable).categorical("b")
    assert booleans.column("b").known == ("false", "true")  # type: ignore[union-attr]
    assert list(sketch.counts) == [0, 2, 0, 0]
    assert sketch.nulls == 1


def test_integer_categories_above_two_to_the_53_stay_apart_on_every_path() -> None:
    """Through float64, 2**53 and 2**53 + 1 were one category: hashed ids collapsed into each other."""
    ids = [2**53, 2**53 + 1, 2**53 + 2, 2**63 - 1]
    texts = [str(i) for i in ids]
    assert list(categorical_values(pd.Series(ids))) == texts  # a training frame's int64 column
    assert list(categorical_values(pd.Series(ids, dtype="Int64"))) == texts
    assert list(categorical_values(pd.Series([*ids, None], dtype="Int64"))) == [*texts, None]
    # An int column that picked up a null is float64 in pandas: its ids spell the same (2**53 is exact).
    floats = pd.Series([float(ids[0]), None, 2.5, 1e20, -(2.0**63), -0.0])
    expected = [texts[0], None, "2.5", "1e+20", str(-(2**63)), "0"]
    assert list(categorical_values(floats)) == expected
    assert [category_text(i) for i in ids] == texts  # one value at a time (a joined class label)
    assert category_text(np.int64(ids[1])) == texts[1] and category_text(3.0) == "3"
    labels, categories = factorize_categories(np.asarray(ids, dtype=object))  # a decoded JSON column
    assert list(categories[labels]) == texts
    layout = ProfileLayout.fit(pd.DataFrame({"v": ids[:3] * 2}), [ColumnSpec("v", CAT)])
    window = layout.profile(pd.DataFrame({"v": pd.Series([ids[1]] * 4, dtype=object)}))
    known = layout.column("v").known  # type: ignore[union-attr]
    counts = dict(zip(known, window.categorical("v").counts, strict=False))
    assert counts == {texts[0]: 0, texts[1]: 4, texts[2]: 0}


def test_missing_label_column_is_skipped_but_missing_feature_is_an_error(frame: pd.DataFrame) -> None:
    specs = [*SPECS, ColumnSpec("y", NUM, role=ColumnRole.LABEL)]
    reference = frame.assign(y=np.arange(len(frame), dtype=float))
    layout = ProfileLayout.fit(reference, specs)
    profile = layout.profile(frame)
    assert profile.numeric("y").total == 0
    assert profile.rows == len(frame)
    assert np.isnan(profile.reservoir.values["y"]).all()
    with pytest.raises(DataError, match="colour"):
        layout.profile(frame.drop(columns=["colour"]))


def test_non_numeric_values_in_a_numeric_column_are_a_data_error() -> None:
    layout = ProfileLayout.fit(pd.DataFrame({"x": [1.0, 2.0]}), [ColumnSpec("x", NUM)])
    with pytest.raises(DataError, match="'x'"):
        layout.profile(pd.DataFrame({"x": ["a", "b"]}))


def test_reservoir_keeps_exactly_the_rows_with_the_smallest_hash_priorities(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, reservoir_size=2500)
    profile = layout.profile(frame, key_offset=1000)
    priorities = row_priorities(len(frame), None, 1000)
    chosen = np.argsort(priorities, kind="stable")[:2500]
    np.testing.assert_array_equal(profile.reservoir.priorities, priorities[chosen])
    # Columns are sampled jointly: the kept values are those of the same rows.
    expected_x = frame["x"].to_numpy()[chosen]
    expected_x[~np.isfinite(expected_x)] = np.nan  # non-finite numbers are kept as null
    np.testing.assert_array_equal(profile.reservoir.values["x"], expected_x)
    expected_colour = frame["colour"].to_numpy()[chosen]
    assert list(profile.reservoir.values["colour"]) == list(expected_colour)
    sample = profile.sample_frame()
    assert list(sample.columns) == ["x", "count", "colour", "flag"]
    assert len(sample) == 2500
    assert sample["x"].isna().sum() == np.isnan(expected_x).sum()


def test_string_row_keys_drive_the_sample(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, reservoir_size=20)
    keys = np.array([f"req-{i}" for i in range(len(frame))], dtype=object)
    whole = layout.profile(frame, keys)
    halves = layout.profile(frame.iloc[:2000], keys[:2000]) + layout.profile(frame.iloc[2000:], keys[2000:])
    assert halves.equals(whole, rtol=1e-12)
    with pytest.raises(DataError, match="one key per row"):
        layout.profile(frame, keys[:10])


def test_merge_is_associative_and_commutative_for_counts_and_sample(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, reservoir_size=64)
    a, b, c = (layout.profile(frame.iloc[s : s + 1700], key_offset=s) for s in (0, 1700, 3400))
    left, right, swapped = (a + b) + c, a + (b + c), c + (a + b)
    whole = layout.profile(frame)
    for merged in (left, right, swapped):
        assert merged.equals(whole, rtol=1e-12)
    assert left.reservoir.equals(right.reservoir)


def test_merging_profiles_of_different_layouts_is_refused(frame: pd.DataFrame) -> None:
    first = ProfileLayout.fit(frame, SPECS, bins=8).profile(frame)
    second = ProfileLayout.fit(frame, SPECS, bins=9).profile(frame)
    with pytest.raises(StatisticsError):
        first.merge(second)


def test_json_round_trip_is_lossless_and_standard(frame: pd.DataFrame) -> None:
    layout = ProfileLayout.fit(frame, SPECS, reservoir_size=100)
    profile = layout.profile(frame)
    text = profile.to_json()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    restored = Profile.from_json(text)
    assert restored == profile  # exact, floats included
    x, y = profile.numeric("x"), restored.numeric("x")
    assert (x.mean.hex(), x.m2.hex()) == (y.mean.hex(), y.m2.hex())
    assert restored.to_json() == text
    empty = layout.empty_profile()
    assert Profile.from_json(empty.to_json()) == empty


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(DataError):
        Profile.from_json('{"format": "something-else"}')
    with pytest.raises(DataError):
        Profile.from_json("not json")


def test_layout_refuses_bad_arguments(frame: pd.DataFrame) -> None:
    with pytest.raises(ConfigError):
        ProfileLayout.fit(frame, SPECS, bins=0)
    with pytest.raises(ConfigError):
        ProfileLayout.fit(frame, [*SPECS, ColumnSpec("x", NUM)])
    with pytest.raises(DataError, match="nope"):
        ProfileLayout.fit(frame, [ColumnSpec("nope", NUM)])
    with pytest.raises(ConfigError):
        ColumnSpec("x", NUM, domain=frozenset({"a"}))
    with pytest.raises(ConfigError):
        ColumnSpec("x", CAT, domain=(0.0, 1.0))
    with pytest.raises(ConfigError):
        ColumnSpec("x", NUM, domain=(2.0, 1.0))


# -- property: merge(chunks) == profile(whole) ------------------------------------------------------------

_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just(math.nan),
    st.sampled_from([0.0, 1.0, 1.0, 2.5]),
)


@st.composite
def _frames_and_cuts(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int], list[int]]:
    n = draw(st.integers(min_value=1, max_value=120))
    x = draw(st.lists(_values, min_size=n, max_size=n))
    cat = draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(min_value=0, max_value=n), max_size=6))) | {0, n})
    order = draw(st.permutations(range(len(cuts) - 1)))
    return pd.DataFrame({"x": x, "c": pd.Series(cat, dtype=object)}), cuts, list(order)


_REFERENCE = pd.DataFrame(
    {"x": np.linspace(-10, 10, 200), "c": np.array(["a", "a", "b", "c"] * 50, dtype=object)}
)
_LAYOUT = ProfileLayout.fit(
    _REFERENCE, [ColumnSpec("x", NUM), ColumnSpec("c", CAT)], bins=7, top_k=2, reservoir_size=9
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames_and_cuts())
def test_merging_chunk_profiles_in_any_order_equals_profiling_the_whole(
    case: tuple[pd.DataFrame, list[int], list[int]],
) -> None:
    frame, cuts, order = case
    whole = _LAYOUT.profile(frame)
    parts = [
        _LAYOUT.profile(frame.iloc[cuts[i] : cuts[i + 1]], key_offset=cuts[i]) for i in range(len(cuts) - 1)
    ]
    merged = _LAYOUT.empty_profile()
    for i in order:
        merged = merged + parts[i]
    assert merged.equals(whole, rtol=1e-12)
    # Counts and the sample are exact, not merely close.
    for name in ("x", "c"):
        np.testing.assert_array_equal(merged.sketch(name).counts, whole.sketch(name).counts)
    assert merged.reservoir.equals(whole.reservoir)
    assert merged.rows == whole.rows == len(frame)


def test_reservoir_is_a_uniform_sample_of_the_rows() -> None:
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"x": rng.exponential(2.0, 50_000)})
    layout = ProfileLayout.fit(data, [ColumnSpec("x", NUM)], reservoir_size=2000)
    sample = layout.profile(data).sample("x")
    assert len(sample) == 2000
    # A uniform sample is indistinguishable from the data it was drawn from ...
    assert stats.ks_2samp(sample, data["x"].to_numpy()).pvalue > 0.001
    priorities = layout.profile(data).reservoir.priorities.astype(np.float64) / 2.0**64
    # ... and the kept priorities are the bottom 4 % of a uniform hash (their maximum sits near 0.04).
    assert 0.03 < priorities.max() < 0.05


def test_profiles_restored_with_one_layout_share_it_and_other_layouts_stay_apart(frame: pd.DataFrame) -> None:
    first = ProfileLayout.fit(frame, SPECS, bins=8).profile(frame)
    second = ProfileLayout.fit(frame, SPECS, bins=9).profile(frame)
    data = json.loads(first.to_json())
    a, b = Profile.from_dict(data), Profile.from_dict(json.loads(first.to_json()))
    assert a.layout is b.layout  # read once: a checkpoint restores many windows of one model
    assert a == first and b == first
    other = Profile.from_json(second.to_json())
    assert other.layout == second.layout and other.layout != a.layout
    assert other == second
    # -0.0 and 0.0 are different JSON, so different cache entries: each reads back as written.
    layout = ProfileLayout.fit(pd.DataFrame({"x": [-1.0, -0.0, 1.0]}), [ColumnSpec("x", NUM)], bins=2)
    assert json.dumps(layout.to_dict()["columns"][0]["edges"]) == "[-1.0, -0.0, 1.0]"
    flipped = layout.to_dict()
    flipped["columns"][0]["edges"] = [-1.0, 0.0, 1.0]
    assert ProfileLayout.from_dict(layout.to_dict()).to_dict() == layout.to_dict()
    assert json.dumps(ProfileLayout.from_dict(flipped).to_dict()) == json.dumps(flipped)


def test_a_malformed_layout_is_an_error_every_time_it_is_read(frame: pd.DataFrame) -> None:
    data = ProfileLayout.fit(frame, SPECS).to_dict()
    data["columns"][0]["edges"] = [1.0]
    for _ in range(2):
        with pytest.raises(ConfigError, match="bin edges"):
            ProfileLayout.from_dict(data)
    with pytest.raises(DataError, match="malformed profile layout"):
        ProfileLayout.from_dict({"columns": "nope"})


def test_numbers_too_large_to_square_count_as_null_so_the_profile_stays_serialisable() -> None:
    """One 1e200 made M2 inf: JSON cannot carry it, and a checkpoint holding it could not be restored."""
    reference = pd.DataFrame({"x": np.random.default_rng(0).normal(size=1000)})
    layout = ProfileLayout.fit(reference, [ColumnSpec("x", NUM)])
    profile = layout.profile(pd.DataFrame({"x": [1.0, 2.0, 1e200, -1.7e308, 3.0]}))
    sketch = numeric(profile, "x")
    assert (sketch.count, sketch.nulls) == (3, 2)
    assert sketch.mean == pytest.approx(2.0) and math.isfinite(sketch.m2)
    restored = numeric(Profile.from_json(profile.to_json()), "x")
    assert restored.m2 == sketch.m2 and restored.nulls == 2
    big = layout.profile(pd.DataFrame({"x": [1e99, -1e99]}))  # within MAX_MAGNITUDE: kept
    assert numeric(big, "x").count == 2 and math.isfinite(numeric(Profile.from_json(big.to_json()), "x").m2)


def numeric(profile: Profile, name: str) -> NumericSketch:
    sketch = profile.sketches[name]
    assert isinstance(sketch, NumericSketch)
    return sketch
