"""One mergeable Profile type for the training baseline and every serving window.

A :class:`ProfileLayout` is fitted once on the reference: it fixes each numeric column's bin edges (the
reference's quantiles) and each categorical column's vocabulary (its top-K categories, plus the set of
all categories it has seen). Every profile built from that layout — the baseline, a five-minute window,
one Kafka partition's share of a window — then has the same shape, so profiles add up exactly.

Folding is two vectorised steps: :meth:`ProfileLayout.encode` turns a frame into per-column bin codes
(``searchsorted`` for numbers, one hash-table lookup for categories) and :meth:`Profile.fold_encoded`
counts them (``bincount``). Calibration re-uses one encoding for hundreds of resampled chunks.

Per numeric column a sketch keeps: counts per bin (underflow below the reference minimum, quantile bins,
overflow above the reference maximum), the sum of values per bin (so a bin's centroid is known, which
makes the binned Wasserstein distance follow shifts inside a bin and in the open tails), null count,
count / mean / M2 merged with Chan's parallel update, min, max, and out-of-domain count. Per
categorical column: counts of the vocabulary, of "other" (known to the reference but not in the top-K),
of "unseen" (never seen in the reference), nulls and out-of-domain. Non-finite numbers (NaN, ±inf),
numbers beyond ±``MAX_MAGNITUDE`` (1e100) and missing values count as null.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from skewguard.errors import ConfigError, DataError, StatisticsError
from skewguard.stats.columns import MAX_MAGNITUDE, ColumnKind, ColumnRole, ColumnSpec
from skewguard.stats.reservoir import Reservoir, row_priorities

FORMAT = "skewguard.profile/1"

IntArray: TypeAlias = npt.NDArray[np.int64]
FloatArray: TypeAlias = npt.NDArray[np.float64]
ObjectArray: TypeAlias = npt.NDArray[np.object_]
ColumnValues: TypeAlias = "pd.Series[Any] | npt.NDArray[Any]"
"""One batch column: a Series, or a 1-d array (the monitor's hot path hands arrays over, no Series)."""


# --------------------------------------------------------------------------------------------------
# Encoding: values -> bin codes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedColumn:
    """One column of a batch as bin codes (``codes == n_bins`` means null) plus its values.

    Numeric columns keep their float values in ``numbers`` (NaN for null). Categorical columns keep
    them factorised: ``labels`` indexes ``categories`` (the batch's distinct normalised values, -1 for
    null), so a batch of 100k strings is hashed once and only the sampled rows are materialised.
    ``out_of_domain`` is None when the column has no domain.
    """

    codes: npt.NDArray[np.intp]
    numbers: FloatArray | None = None
    labels: npt.NDArray[np.intp] | None = None
    categories: ObjectArray | None = None
    out_of_domain: npt.NDArray[np.bool_] | None = None

    def values(self, index: npt.NDArray[np.intp] | None = None) -> npt.NDArray[Any]:
        """The values (all rows, or those at ``index``): float64 with NaN, or objects with None."""
        if self.numbers is not None:
            return self.numbers if index is None else self.numbers[index]
        if self.labels is None or self.categories is None:  # pragma: no cover - constructors set both
            msg = "an encoded column needs numbers or labels"
            raise StatisticsError(msg)
        table = np.empty(len(self.categories) + 1, dtype=object)
        table[:-1] = self.categories
        table[-1] = None  # label -1 (null) picks the last entry
        labels = self.labels if index is None else self.labels[index]
        out: npt.NDArray[Any] = table[labels]
        return out

    def take(self, index: npt.NDArray[np.intp]) -> EncodedColumn:
        """The rows at ``index`` (fancy indexing; used to resample chunks without re-encoding)."""
        return EncodedColumn(
            codes=self.codes[index],
            numbers=None if self.numbers is None else self.numbers[index],
            labels=None if self.labels is None else self.labels[index],
            categories=self.categories,
            out_of_domain=None if self.out_of_domain is None else self.out_of_domain[index],
        )


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A batch encoded against a layout. A column mapped to None was absent (an unjoined label)."""

    rows: int
    columns: Mapping[str, EncodedColumn | None]

    def take(self, index: npt.ArrayLike) -> EncodedFrame:
        """The rows at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.intp)
        return EncodedFrame(
            rows=len(idx),
            columns={name: None if col is None else col.take(idx) for name, col in self.columns.items()},
        )


def _numeric_values(series: ColumnValues, name: str) -> FloatArray:
    if isinstance(series, np.ndarray) and series.dtype == np.float64:
        converted: npt.NDArray[Any] = series  # the monitor's hot path: already float64
    else:
        try:
            column = series if isinstance(series, pd.Series) else pd.Series(series)
            converted = column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            msg = f"column {name!r} is declared numeric but holds non-numeric values ({exc})"
            raise DataError(msg) from exc
    values = np.array(converted, dtype=np.float64, copy=True)
    values[~(np.abs(values) <= MAX_MAGNITUDE)] = np.nan  # (NaN and ±inf too)
    return values


def _format_floats(values: FloatArray) -> ObjectArray:
    # Integral floats print as the integers they are, up to int64: an int column that picked up a null
    # (float64 in pandas) spells an id as the same column without the null does, and as serving does.
    integral = np.isfinite(values) & (values == np.floor(values)) & (values >= -(2**63)) & (values < 2**63)
    out = values.astype(str).astype(object)
    if integral.any():
        out[integral] = values[integral].astype(np.int64).astype(str)
    return out


def categorical_values(series: pd.Series[Any]) -> ObjectArray:
    """Normalise a column to category strings (``None`` for null), vectorised.

    Booleans become ``"true"`` / ``"false"``; integers print exactly (ids above 2**53 included); integral
    floats print without ``.0`` (so an int column that picked up a NaN and became float still yields
    ``"3"``, not ``"3.0"``); strings stay as they are.
    """
    null = series.isna().to_numpy()
    dtype = series.dtype
    out: ObjectArray
    if isinstance(dtype, pd.CategoricalDtype):
        categories = categorical_values(pd.Series(dtype.categories))
        codes = series.cat.codes.to_numpy()
        out = np.full(len(series), None, dtype=object)
        present = codes >= 0
        out[present] = categories[codes[present]]
        return out
    if pd.api.types.is_bool_dtype(dtype):
        raw = series.to_numpy(dtype=object)
        out = np.full(len(series), None, dtype=object)
        out[~null] = np.where(raw[~null].astype(bool), "true", "false")
        return out
    if pd.api.types.is_integer_dtype(dtype):
        # Exactly: through float64 (below), ids above 2**53 would collapse into their neighbours.
        out = np.full(len(series), None, dtype=object)
        out[~null] = series[~null].astype(str).to_numpy(dtype=object)
        return out
    if pd.api.types.is_numeric_dtype(dtype):
        floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.full(len(series), None, dtype=object)
        out[~null] = _format_floats(floats[~null])
        return out
    raw = np.array(series.to_numpy(dtype=object), dtype=object, copy=True)
    raw[null] = None
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred in ("string", "empty"):
        return raw
    if inferred == "boolean":
        out = np.full(len(series), None, dtype=object)
        out[~null] = np.where(raw[~null].astype(bool), "true", "false")
        return out
    # Mixed objects (numbers, booleans, strings together): format each *distinct* value once.
    inverse, uniques = pd.factorize(raw[~null])
    texts = np.asarray([category_text(v) for v in uniques], dtype=object)
    raw[~null] = texts[inverse]
    return raw


def factorize_categories(series: ColumnValues) -> tuple[npt.NDArray[np.intp], ObjectArray]:
    """``(labels, categories)``: each row's index into the distinct normalised values (-1 = null).

    The hash pass runs once over the rows; normalisation (:func:`categorical_values`) only over the
    distinct values, and not at all when they are all strings already (the common case). Note that
    ``pd.factorize`` treats hash-equal objects (``1``, ``1.0``, ``True``) in a mixed object column as
    one value.
    """
    if isinstance(series, np.ndarray):
        data: Any = series if series.dtype == object else pd.Series(series)
    else:
        data = series.to_numpy() if series.dtype == object else series
    labels, uniques = pd.factorize(data, use_na_sentinel=True)
    categories: ObjectArray
    if (
        isinstance(uniques, np.ndarray)
        and uniques.dtype == object
        and _STRINGS.issuperset(map(type, uniques))
    ):
        categories = uniques  # what categorical_values would return for strings, without a Series
    else:
        categories = categorical_values(pd.Series(uniques))
    return np.asarray(labels, dtype=np.intp), categories


_STRINGS = frozenset({str})


def category_text(value: Any) -> str:
    """One value as the category text a profile gives it (what :func:`categorical_values` does per value).

    For code that meets categories one at a time (a class label joined with its prediction) and must
    name them exactly as the baseline's profile does: ``True`` is ``"true"``, ``3.0`` is ``"3"``.
    """
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):  # exactly, as an int column's are
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(_format_floats(np.asarray([value], dtype=np.float64))[0])
    return str(value)


# --------------------------------------------------------------------------------------------------
# Column layouts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NumericColumnLayout:
    """Bin edges of one numeric column: ``len(edges) + 1`` bins.

    Bin 0 is underflow (``x < edges[0]``, the reference minimum), bins ``1 .. E-1`` are
    ``[edges[i-1], edges[i])`` with the last one closed (so the reference maximum is inside), and bin
    ``E`` is overflow (``x > edges[-1]``).
    """

    spec: ColumnSpec
    edges: FloatArray

    kind: ClassVar[ColumnKind] = ColumnKind.NUMERIC

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            msg = f"column {self.spec.name!r}: bin edges must be >= 2 finite, strictly increasing values"
            raise ConfigError(msg)
        object.__setattr__(self, "edges", edges)

    @property
    def name(self) -> str:
        """The column name."""
        return self.spec.name

    @property
    def n_bins(self) -> int:
        """Bins including underflow and overflow (nulls are not a bin)."""
        return len(self.edges) + 1

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NumericColumnLayout)
            and self.spec == other.spec
            and np.array_equal(self.edges, other.edges)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def fit(cls, spec: ColumnSpec, series: pd.Series[Any], bins: int) -> NumericColumnLayout:
        """Edges at the reference's quantiles (actual data values, duplicates collapsed).

        A maximum the reference holds more than once is an atom — a 0/1 flag's 1, a capped value, a
        constant — and gets a bin of its own, ``[max, next float]``: the last bin is closed, so it would
        otherwise hold the atom together with the values below it (a flag's 0s and 1s in one bin), and
        a shift between them would be invisible to every binned test. A continuous reference's maximum
        (one row) keeps the plain quantile bins.
        """
        values = _numeric_values(series, spec.name)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            # All null in the reference (a blank CSV column reads as float NaN): nothing to place edges
            # at, and nothing to compare a distribution with. One bin at 0 keeps the column profiled, so
            # its null rate is still judged (values appearing later are a null-rate change).
            return cls(spec=spec, edges=_NO_VALUE_EDGES.copy())
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1), method="inverted_cdf"))
        top = edges[-1]
        if len(edges) == 1 or np.count_nonzero(values == top) > 1:
            edges = np.append(edges, np.nextafter(top, np.inf))
        return cls(spec=spec, edges=edges)

    @property
    def fitted_without_values(self) -> bool:
        """Whether the reference it was fitted on held no value (its one bin at 0 is a placeholder)."""
        return np.array_equal(self.edges, _NO_VALUE_EDGES)

    def encode(self, series: ColumnValues) -> EncodedColumn:
        """Bin codes (``n_bins`` for null) and float values of one batch column."""
        values = _numeric_values(series, self.spec.name)
        null = np.isnan(values)
        codes = np.searchsorted(self.edges, values, side="right")
        codes[values == self.edges[-1]] = len(self.edges) - 1
        codes[null] = self.n_bins
        domain = self.spec.numeric_domain
        ood = None
        if domain is not None:
            ood = ~null & ((values < domain[0]) | (values > domain[1]))
        return EncodedColumn(codes=codes, numbers=values, out_of_domain=ood)

    def bin_labels(self) -> list[str]:
        """Human labels of the bins, for reports."""
        labels = [f"< {self.edges[0]:.6g}"]
        labels += [f"[{lo:.6g}, {hi:.6g})" for lo, hi in zip(self.edges[:-2], self.edges[1:-1], strict=True)]
        labels += [f"[{self.edges[-2]:.6g}, {self.edges[-1]:.6g}]", f"> {self.edges[-1]:.6g}"]
        return labels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**_spec_to_dict(self.spec), "edges": self.edges.tolist()}


#: The edges of a numeric column whose reference held no value: one bin at 0, a placeholder.
_NO_VALUE_EDGES: Final = np.array([0.0, np.nextafter(0.0, np.inf)])


@dataclass(frozen=True, eq=False)
class CategoricalColumnLayout:
    """Category bins of one column: the top-K ``vocabulary``, then OTHER, then UNSEEN.

    ``known`` lists every category the reference held (most frequent first, so it starts with the
    vocabulary); a value in ``known`` but not in the vocabulary counts as OTHER, a value outside it as
    UNSEEN. ``known_complete`` is False when the reference had more distinct values than the cap, in
    which case UNSEEN also contains rare reference categories.
    """

    spec: ColumnSpec
    vocabulary: tuple[str, ...]
    known: tuple[str, ...]
    known_complete: bool = True
    #: category -> its bin (vocabulary position, or OTHER); anything else is UNSEEN.
    _bins: dict[str, int] = field(init=False, repr=False)

    kind: ClassVar[ColumnKind] = ColumnKind.CATEGORICAL

    def __post_init__(self) -> None:
        if self.known[: len(self.vocabulary)] != self.vocabulary:
            msg = f"column {self.spec.name!r}: the known categories must start with the vocabulary"
            raise ConfigError(msg)
        if len(set(self.known)) != len(self.known):
            msg = f"column {self.spec.name!r}: duplicate categories in the layout"
            raise ConfigError(msg)
        other = len(self.vocabulary)
        object.__setattr__(self, "_bins", {c: min(i, other) for i, c in enumerate(self.known)})

    @property
    def name(self) -> str:
        """The column name."""
        return self.spec.name

    @property
    def other_bin(self) -> int:
        """Index of the OTHER bin (known to the reference, outside the top-K)."""
        return len(self.vocabulary)

    @property
    def unseen_bin(self) -> int:
        """Index of the UNSEEN bin (never seen in the reference)."""
        return len(self.vocabulary) + 1

    @property
    def n_bins(self) -> int:
        """Vocabulary + OTHER + UNSEEN (nulls are not a bin)."""
        return len(self.vocabulary) + 2

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CategoricalColumnLayout)
            and self.spec == other.spec
            and self.vocabulary == other.vocabulary
            and self.known == other.known
            and self.known_complete == other.known_complete
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def fit(
        cls, spec: ColumnSpec, series: pd.Series[Any], top_k: int, max_known: int
    ) -> CategoricalColumnLayout:
        """Vocabulary = the ``top_k`` most frequent reference categories (ties broken by name)."""
        labels, categories = factorize_categories(series)
        counts = np.bincount(labels[labels >= 0], minlength=len(categories))
        # Distinct raw values can normalise to the same text (1 and 1.0): add their counts up.
        merged = pd.Series(counts, index=categories.astype(str)).groupby(level=0, sort=False).sum()
        table = pd.DataFrame({"value": merged.index.astype(str), "count": merged.to_numpy()})
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="mergesort")
        ordered = tuple(str(v) for v in table["value"].tolist())
        known = ordered[:max_known]
        return cls(
            spec=spec,
            vocabulary=known[:top_k],
            known=known,
            known_complete=len(ordered) <= max_known,
        )

    def encode(self, series: ColumnValues) -> EncodedColumn:
        """Bin codes (``n_bins`` for null) and factorised values of one batch column.

        One hash pass over the rows (``pd.factorize``); the vocabulary lookup and the domain check run
        on the batch's distinct values only (a dict lookup each: a batch has few).
        """
        labels, categories = factorize_categories(series)
        distinct = categories.tolist()
        bin_of, unseen = self._bins.get, self.unseen_bin
        per_category = [bin_of(c, unseen) for c in distinct]
        per_category.append(self.n_bins)  # label -1 (null) picks the last entry: the null bin
        codes = np.array(per_category, dtype=np.intp)[labels]
        domain = self.spec.categorical_domain
        ood = None
        if domain is not None:
            outside = [c not in domain for c in distinct]
            outside.append(False)
            ood = np.array(outside, dtype=bool)[labels]
        return EncodedColumn(codes=codes, labels=labels, categories=categories, out_of_domain=ood)

    def bin_labels(self) -> list[str]:
        """Human labels of the bins, for reports."""
        return [*self.vocabulary, "<other>", "<unseen>"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **_spec_to_dict(self.spec),
            "vocabulary": list(self.vocabulary),
            "known": list(self.known),
            "known_complete": self.known_complete,
        }


ColumnLayout: TypeAlias = NumericColumnLayout | CategoricalColumnLayout


def _spec_to_dict(spec: ColumnSpec) -> dict[str, Any]:
    domain: Any = None
    if spec.numeric_domain is not None:
        domain = list(spec.numeric_domain)
    elif spec.categorical_domain is not None:
        domain = sorted(spec.categorical_domain)
    return {"name": spec.name, "kind": spec.kind.value, "role": spec.role.value, "domain": domain}


def _spec_from_dict(data: Mapping[str, Any]) -> ColumnSpec:
    kind = ColumnKind(data["kind"])
    raw = data.get("domain")
    domain: tuple[float, float] | frozenset[str] | None = None
    if raw is not None:
        domain = (float(raw[0]), float(raw[1])) if kind is ColumnKind.NUMERIC else frozenset(raw)
    return ColumnSpec(name=data["name"], kind=kind, role=ColumnRole(data["role"]), domain=domain)


def _layout_from_dict(data: Mapping[str, Any]) -> ColumnLayout:
    spec = _spec_from_dict(data)
    if spec.kind is ColumnKind.NUMERIC:
        return NumericColumnLayout(spec=spec, edges=np.asarray(data["edges"], dtype=np.float64))
    return CategoricalColumnLayout(
        spec=spec,
        vocabulary=tuple(data["vocabulary"]),
        known=tuple(data["known"]),
        known_complete=bool(data["known_complete"]),
    )


# --------------------------------------------------------------------------------------------------
# Sketches
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class NumericSketch:
    """Mergeable summary of one numeric column (see the module docstring)."""

    layout: NumericColumnLayout
    counts: IntArray
    sums: FloatArray
    nulls: int = 0
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    out_of_domain: int = 0

    @classmethod
    def empty(cls, layout: NumericColumnLayout) -> NumericSketch:
        """A zero sketch."""
        return cls(
            layout=layout,
            counts=np.zeros(layout.n_bins, dtype=np.int64),
            sums=np.zeros(layout.n_bins, dtype=np.float64),
        )

    @property
    def name(self) -> str:
        """The column name."""
        return self.layout.name

    @property
    def total(self) -> int:
        """Values seen, null or not."""
        return self.count + self.nulls

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); NaN below two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN below two values."""
        return math.sqrt(self.variance) if self.count > 1 else math.nan

    @property
    def null_rate(self) -> float:
        """Share of null values; NaN when nothing was seen."""
        return self.nulls / self.total if self.total else math.nan

    @property
    def centroids(self) -> FloatArray:
        """Mean value per bin (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    def fold(self, column: EncodedColumn) -> None:
        """Add one encoded batch column."""
        n_bins = self.layout.n_bins
        binned = np.bincount(column.codes, minlength=n_bins + 1)
        x, codes = column.values(), column.codes
        if binned[n_bins]:  # drop the nulls (skipped when there are none: no copy)
            present = codes < n_bins
            x, codes = x[present], codes[present]
        self.counts += binned[:n_bins]
        self.nulls += int(binned[n_bins])
        if column.out_of_domain is not None:
            self.out_of_domain += int(np.count_nonzero(column.out_of_domain))
        if len(x) == 0:
            return
        self.sums += np.bincount(codes, weights=x, minlength=n_bins)
        mean = float(x.mean())
        centred = x - mean
        self._combine(len(x), mean, float(centred @ centred), float(x.min()), float(x.max()))

    def _combine(self, count: int, mean: float, m2: float, low: float, high: float) -> None:
        # Chan, Golub & LeVeque's pairwise update: exact for counts, stable for the moments.
        if count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2, self.min, self.max = count, mean, m2, low, high
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta * delta * self.count * count / total
        self.count = total
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    def merged(self, other: NumericSketch) -> NumericSketch:
        """A new sketch holding both."""
        out = NumericSketch(
            layout=self.layout,
            counts=self.counts + other.counts,
            sums=self.sums + other.sums,
            nulls=self.nulls + other.nulls,
            count=self.count,
            mean=self.mean,
            m2=self.m2,
            min=self.min,
            max=self.max,
            out_of_domain=self.out_of_domain + other.out_of_domain,
        )
        out._combine(other.count, other.mean, other.m2, other.min, other.max)
        return out

    def equals(self, other: NumericSketch, *, rtol: float = 0.0) -> bool:
        """Exact equality of counts; sums and moments equal within ``rtol`` (0 = exactly)."""
        # Tolerances scale with the data's magnitude: a mean near zero is compared absolutely.
        scale = max(abs(self.min), abs(self.max)) if self.count else 1.0
        return (
            self.layout == other.layout
            and np.array_equal(self.counts, other.counts)
            and (self.nulls, self.count, self.out_of_domain)
            == (other.nulls, other.count, other.out_of_domain)
            and (self.min, self.max) == (other.min, other.max)
            and bool(np.all(np.abs(self.sums - other.sums) <= rtol * scale * self.counts))
            and abs(self.mean - other.mean) <= rtol * scale
            and abs(self.m2 - other.m2) <= rtol * self.count * scale * scale
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``min``/``max`` are null while the column is empty)."""
        return {
            "counts": self.counts.tolist(),
            "sums": self.sums.tolist(),
            "nulls": self.nulls,
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": None if self.count == 0 else self.min,
            "max": None if self.count == 0 else self.max,
            "out_of_domain": self.out_of_domain,
        }

    @classmethod
    def from_dict(cls, layout: NumericColumnLayout, data: Mapping[str, Any]) -> NumericSketch:
        """Inverse of :meth:`to_dict`."""
        counts = np.asarray(data["counts"], dtype=np.int64)
        sums = np.asarray(data["sums"], dtype=np.float64)
        if len(counts) != layout.n_bins or len(sums) != layout.n_bins:
            msg = f"column {layout.name!r}: {len(counts)} bin counts in JSON, the layout has {layout.n_bins}"
            raise DataError(msg)
        count = int(data["count"])
        return cls(
            layout=layout,
            counts=counts,
            sums=sums,
            nulls=int(data["nulls"]),
            count=count,
            mean=float(data["mean"]),
            m2=float(data["m2"]),
            min=math.inf if data["min"] is None else float(data["min"]),
            max=-math.inf if data["max"] is None else float(data["max"]),
            out_of_domain=int(data["out_of_domain"]),
        )


@dataclass(eq=False)
class CategoricalSketch:
    """Mergeable summary of one categorical column: counts per vocabulary / OTHER / UNSEEN bin."""

    layout: CategoricalColumnLayout
    counts: IntArray
    nulls: int = 0
    out_of_domain: int = 0

    @classmethod
    def empty(cls, layout: CategoricalColumnLayout) -> CategoricalSketch:
        """A zero sketch."""
        return cls(layout=layout, counts=np.zeros(layout.n_bins, dtype=np.int64))

    @property
    def name(self) -> str:
        """The column name."""
        return self.layout.name

    @property
    def count(self) -> int:
        """Non-null values seen."""
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        """Values seen, null or not."""
        return self.count + self.nulls

    @property
    def null_rate(self) -> float:
        """Share of null values; NaN when nothing was seen."""
        return self.nulls / self.total if self.total else math.nan

    @property
    def unseen(self) -> int:
        """Values never seen in the reference."""
        return int(self.counts[self.layout.unseen_bin])

    def fold(self, column: EncodedColumn) -> None:
        """Add one encoded batch column."""
        n_bins = self.layout.n_bins
        binned = np.bincount(column.codes, minlength=n_bins + 1)
        self.counts += binned[:n_bins]
        self.nulls += int(binned[n_bins])
        if column.out_of_domain is not None:
            self.out_of_domain += int(np.count_nonzero(column.out_of_domain))

    def merged(self, other: CategoricalSketch) -> CategoricalSketch:
        """A new sketch holding both."""
        return CategoricalSketch(
            layout=self.layout,
            counts=self.counts + other.counts,
            nulls=self.nulls + other.nulls,
            out_of_domain=self.out_of_domain + other.out_of_domain,
        )

    def equals(self, other: CategoricalSketch, *, rtol: float = 0.0) -> bool:
        """Exact equality (everything here is a count; ``rtol`` is accepted for symmetry)."""
        del rtol
        return (
            self.layout == other.layout
            and np.array_equal(self.counts, other.counts)
            and (self.nulls, self.out_of_domain) == (other.nulls, other.out_of_domain)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "counts": self.counts.tolist(),
            "nulls": self.nulls,
            "out_of_domain": self.out_of_domain,
        }

    @classmethod
    def from_dict(cls, layout: CategoricalColumnLayout, data: Mapping[str, Any]) -> CategoricalSketch:
        """Inverse of :meth:`to_dict`."""
        counts = np.asarray(data["counts"], dtype=np.int64)
        if len(counts) != layout.n_bins:
            msg = f"column {layout.name!r}: {len(counts)} bin counts in JSON, the layout has {layout.n_bins}"
            raise DataError(msg)
        return cls(
            layout=layout, counts=counts, nulls=int(data["nulls"]), out_of_domain=int(data["out_of_domain"])
        )


Sketch: TypeAlias = NumericSketch | CategoricalSketch


def _empty_sketch(layout: ColumnLayout) -> Sketch:
    if isinstance(layout, NumericColumnLayout):
        return NumericSketch.empty(layout)
    return CategoricalSketch.empty(layout)


def _merge_sketches(a: Sketch, b: Sketch) -> Sketch:
    if isinstance(a, NumericSketch) and isinstance(b, NumericSketch):
        return a.merged(b)
    if isinstance(a, CategoricalSketch) and isinstance(b, CategoricalSketch):
        return a.merged(b)
    msg = f"column {a.name!r} has different kinds in the two profiles"
    raise StatisticsError(msg)


def _sketch_from_dict(layout: ColumnLayout, data: Mapping[str, Any]) -> Sketch:
    if isinstance(layout, NumericColumnLayout):
        return NumericSketch.from_dict(layout, data)
    return CategoricalSketch.from_dict(layout, data)


# --------------------------------------------------------------------------------------------------
# Layout and profile
# --------------------------------------------------------------------------------------------------


class ProfileLayout:
    """The fixed shape of every profile compared with one reference: columns, bins, vocabularies."""

    def __init__(self, columns: Sequence[ColumnLayout], *, reservoir_size: int = 1000) -> None:
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            msg = f"duplicate column names in the layout: {duplicates}"
            raise ConfigError(msg)
        if not columns:
            msg = "a profile layout needs at least one column"
            raise ConfigError(msg)
        if reservoir_size < 0:
            msg = f"reservoir_size must be >= 0, got {reservoir_size}"
            raise ConfigError(msg)
        self.columns: tuple[ColumnLayout, ...] = tuple(columns)
        self.reservoir_size = reservoir_size
        self._by_name = {c.name: c for c in self.columns}

    @classmethod
    def fit(
        cls,
        reference_df: pd.DataFrame,
        specs: Sequence[ColumnSpec],
        *,
        bins: int = 32,
        top_k: int = 50,
        reservoir_size: int = 1000,
        max_known: int = 10_000,
    ) -> ProfileLayout:
        """Fix bin edges and vocabularies from the reference frame.

        ``bins`` quantile bins per numeric column (fewer when values repeat), ``top_k`` categories per
        categorical column, ``reservoir_size`` rows in every profile's sample, and up to ``max_known``
        reference categories remembered to tell OTHER from UNSEEN.
        """
        if bins < 1:
            msg = f"bins must be >= 1, got {bins}"
            raise ConfigError(msg)
        if top_k < 1:
            msg = f"top_k must be >= 1, got {top_k}"
            raise ConfigError(msg)
        if max_known < top_k:
            msg = f"max_known ({max_known}) must be >= top_k ({top_k})"
            raise ConfigError(msg)
        missing = [s.name for s in specs if s.name not in reference_df.columns]
        if missing:
            msg = f"reference frame lacks column(s) {missing}; it has {list(reference_df.columns)}"
            raise DataError(msg)
        if len(reference_df) == 0:
            msg = "the reference frame is empty; a layout needs reference rows"
            raise DataError(msg)
        layouts: list[ColumnLayout] = []
        for spec in specs:
            if spec.kind is ColumnKind.NUMERIC:
                layouts.append(NumericColumnLayout.fit(spec, reference_df[spec.name], bins))
            else:
                layouts.append(CategoricalColumnLayout.fit(spec, reference_df[spec.name], top_k, max_known))
        return cls(layouts, reservoir_size=reservoir_size)

    @property
    def specs(self) -> tuple[ColumnSpec, ...]:
        """The column specs, in layout order."""
        return tuple(c.spec for c in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in layout order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnLayout:
        """The layout of one column."""
        try:
            return self._by_name[name]
        except KeyError:
            msg = f"no column {name!r} in the layout; it has {list(self._by_name)}"
            raise ConfigError(msg) from None

    def same_columns(self, other: ProfileLayout) -> bool:
        """True when profiles of both layouts can be merged or compared (reservoir size may differ)."""
        return self.columns == other.columns

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProfileLayout)
            and self.columns == other.columns
            and self.reservoir_size == other.reservoir_size
        )

    __hash__ = None  # type: ignore[assignment]

    def encode(self, df: pd.DataFrame) -> EncodedFrame:
        """Encode a batch. A missing LABEL column is allowed (labels join later); any other is an error."""
        missing = [
            c.name for c in self.columns if c.name not in df.columns and c.spec.role is not ColumnRole.LABEL
        ]
        if missing:
            msg = f"batch lacks column(s) {missing}; it has {list(df.columns)}"
            raise DataError(msg)
        columns: dict[str, EncodedColumn | None] = {}
        for layout in self.columns:
            columns[layout.name] = layout.encode(df[layout.name]) if layout.name in df.columns else None
        return EncodedFrame(rows=len(df), columns=columns)

    def empty_profile(self, *, reservoir_size: int | None = None) -> Profile:
        """A zero profile; ``reservoir_size`` overrides the layout's (0 turns sampling off)."""
        capacity = self.reservoir_size if reservoir_size is None else reservoir_size
        return Profile(
            layout=self,
            rows=0,
            sketches={c.name: _empty_sketch(c) for c in self.columns},
            reservoir=Reservoir.empty(capacity, self._reservoir_kinds()),
        )

    def profile(
        self,
        df: pd.DataFrame,
        row_keys: Sequence[Any] | npt.ArrayLike | None = None,
        *,
        key_offset: int = 0,
        reservoir_size: int | None = None,
    ) -> Profile:
        """Shorthand: an empty profile with ``df`` folded in."""
        profile = self.empty_profile(reservoir_size=reservoir_size)
        profile.fold(df, row_keys, key_offset=key_offset)
        return profile

    def _reservoir_kinds(self) -> dict[str, str]:
        return {c.name: "f" if c.kind is ColumnKind.NUMERIC else "O" for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"reservoir_size": self.reservoir_size, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileLayout:
        """Inverse of :meth:`to_dict`.

        Every window profile of a model carries the same layout, and a checkpoint restores dozens of
        them: a layout read recently is shared (layouts are immutable), keyed by its exact JSON bytes.
        """
        try:
            key = orjson.dumps(data)
        except TypeError:  # not plain JSON data (orjson's encode error is a TypeError): no caching
            return cls._parse(data)
        with _LAYOUTS_LOCK:
            layout = _LAYOUTS.get(key)
        if layout is None or type(layout) is not cls:
            layout = cls._parse(data)
            with _LAYOUTS_LOCK:
                if len(_LAYOUTS) >= _LAYOUTS_KEPT:
                    del _LAYOUTS[next(iter(_LAYOUTS))]  # the oldest
                _LAYOUTS[key] = layout
        return layout

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> ProfileLayout:
        try:
            columns = [_layout_from_dict(c) for c in data["columns"]]
            reservoir_size = int(data["reservoir_size"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            msg = f"malformed profile layout JSON: {exc!r}"
            raise DataError(msg) from exc
        return cls(columns, reservoir_size=reservoir_size)


#: Layouts read recently, by their JSON bytes (a daemon has one per monitored model).
_LAYOUTS: dict[bytes, ProfileLayout] = {}
_LAYOUTS_KEPT = 32
_LAYOUTS_LOCK = threading.Lock()


class Profile:
    """Mergeable summary of a set of rows: one sketch per column, the row count, and a row sample.

    Build with :meth:`ProfileLayout.empty_profile` / :meth:`ProfileLayout.profile`; :meth:`fold` adds
    a batch in place; :meth:`merge` (or ``+``) returns the profile of the union, exactly for counts
    and the sample and to rounding for float moments, in any order or grouping.
    """

    def __init__(
        self, layout: ProfileLayout, rows: int, sketches: dict[str, Sketch], reservoir: Reservoir
    ) -> None:
        self.layout = layout
        self.rows = rows
        self.sketches = sketches
        self.reservoir = reservoir

    def __repr__(self) -> str:
        return f"Profile(rows={self.rows}, columns={list(self.sketches)}, sample={len(self.reservoir)})"

    def sketch(self, name: str) -> Sketch:
        """The sketch of one column."""
        try:
            return self.sketches[name]
        except KeyError:
            msg = f"no column {name!r} in the profile; it has {list(self.sketches)}"
            raise ConfigError(msg) from None

    def numeric(self, name: str) -> NumericSketch:
        """The sketch of a numeric column (ConfigError for a categorical one)."""
        sketch = self.sketch(name)
        if not isinstance(sketch, NumericSketch):
            msg = f"column {name!r} is categorical, not numeric"
            raise ConfigError(msg)
        return sketch

    def categorical(self, name: str) -> CategoricalSketch:
        """The sketch of a categorical column (ConfigError for a numeric one)."""
        sketch = self.sketch(name)
        if not isinstance(sketch, CategoricalSketch):
            msg = f"column {name!r} is numeric, not categorical"
            raise ConfigError(msg)
        return sketch

    def fold(
        self,
        df: pd.DataFrame,
        row_keys: Sequence[Any] | npt.ArrayLike | None = None,
        *,
        key_offset: int = 0,
    ) -> None:
        """Add a batch in place.

        ``row_keys`` (one per row, e.g. request ids) drive the sample; by default row ``i`` gets key
        ``key_offset + i``, so a caller folding a file in chunks passes the chunk's start row as
        ``key_offset`` and gets the same profile as folding the whole file at once.
        """
        self.fold_encoded(self.layout.encode(df), row_keys, key_offset=key_offset)

    def fold_encoded(
        self,
        encoded: EncodedFrame,
        row_keys: Sequence[Any] | npt.ArrayLike | None = None,
        *,
        key_offset: int = 0,
    ) -> None:
        """Add an already encoded batch in place (see :meth:`fold`)."""
        if set(encoded.columns) != set(self.sketches):
            msg = "the encoded batch was made with a different layout"
            raise StatisticsError(msg)
        for name, sketch in self.sketches.items():
            column = encoded.columns[name]
            if column is None:
                continue
            sketch.fold(column)
        self.rows += encoded.rows
        if self.reservoir.capacity > 0 and encoded.rows > 0:
            priorities = row_priorities(encoded.rows, row_keys, key_offset)
            self.reservoir.offer(priorities, lambda index: self._sampled_values(encoded, index))

    def _sampled_values(
        self, encoded: EncodedFrame, index: npt.NDArray[np.intp]
    ) -> dict[str, npt.NDArray[Any]]:
        values: dict[str, npt.NDArray[Any]] = {}
        for layout in self.layout.columns:
            column = encoded.columns[layout.name]
            if column is not None:
                values[layout.name] = column.values(index)
            elif layout.kind is ColumnKind.NUMERIC:
                values[layout.name] = np.full(len(index), np.nan)
            else:
                values[layout.name] = np.full(len(index), None, dtype=object)
        return values

    def merge(self, other: Profile) -> Profile:
        """The profile of both row sets (a new object; neither input changes)."""
        if not self.layout.same_columns(other.layout):
            msg = "cannot merge profiles built on different layouts (bins or vocabularies differ)"
            raise StatisticsError(msg)
        sketches = {name: _merge_sketches(mine, other.sketches[name]) for name, mine in self.sketches.items()}
        return Profile(self.layout, self.rows + other.rows, sketches, self.reservoir.merge(other.reservoir))

    def __add__(self, other: Profile) -> Profile:
        return self.merge(other)

    def copy(self) -> Profile:
        """A deep copy."""
        return Profile.from_dict(self.to_dict())

    def equals(self, other: Profile, *, rtol: float = 0.0) -> bool:
        """Counts and sample exactly equal; float sums and moments within ``rtol`` (0 = exactly)."""
        if not (self.layout == other.layout and self.rows == other.rows):
            return False
        for name, mine in self.sketches.items():
            theirs = other.sketches[name]
            if isinstance(mine, NumericSketch):
                if not (isinstance(theirs, NumericSketch) and mine.equals(theirs, rtol=rtol)):
                    return False
            elif not (isinstance(theirs, CategoricalSketch) and mine.equals(theirs)):
                return False
        return self.reservoir.equals(other.reservoir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.equals(other)

    __hash__ = None  # type: ignore[assignment]

    # -- the row sample ---------------------------------------------------------------------------

    def sample(self, name: str) -> npt.NDArray[Any]:
        """The non-null sampled values of one column (float64 or strings)."""
        values = self.reservoir.values[self.sketch(name).name]
        null = np.isnan(values) if values.dtype.kind == "f" else np.asarray(pd.isna(values), dtype=bool)
        present: npt.NDArray[Any] = values[~null]
        return present

    def sample_frame(self) -> pd.DataFrame:
        """The sampled rows as a frame (nulls as NaN / None), columns in layout order."""
        return pd.DataFrame({name: self.reservoir.values[name] for name in self.layout.names})

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (standard JSON: no NaN or infinity anywhere)."""
        return {
            "format": FORMAT,
            "layout": self.layout.to_dict(),
            "rows": self.rows,
            "columns": {name: sketch.to_dict() for name, sketch in self.sketches.items()},
            "reservoir": self.reservoir.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != FORMAT:
            msg = f"not a skewguard profile (format {data.get('format')!r}, expected {FORMAT!r})"
            raise DataError(msg)
        layout = ProfileLayout.from_dict(data["layout"])
        try:
            sketches = {c.name: _sketch_from_dict(c, data["columns"][c.name]) for c in layout.columns}
            rows = int(data["rows"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"malformed profile JSON: {exc!r}"
            raise DataError(msg) from exc
        reservoir = Reservoir.from_dict(data["reservoir"], layout._reservoir_kinds())
        return cls(layout, rows, sketches, reservoir)

    def to_json(self) -> str:
        """Lossless JSON: floats are written with their shortest exact repr and read back bit-equal."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            msg = f"profile JSON does not parse: {exc}"
            raise DataError(msg) from exc
        if not isinstance(data, dict):
            msg = "profile JSON must be an object"
            raise DataError(msg)
        return cls.from_dict(data)
