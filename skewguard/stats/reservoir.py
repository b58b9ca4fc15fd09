"""A bounded row sample whose merge is exact and associative: bottom-k by a hash of the row key.

Classic reservoir sampling (Algorithm R) depends on arrival order, so two partitions' reservoirs can
only be merged approximately. Keeping instead the k rows with the smallest *hash priority* of a stable
per-row key (a request id in the stream, a row number in a file) makes the sample a pure function of
the set of rows seen: ``merge(sample(A), sample(B)) == sample(A ∪ B)`` exactly, in any order and any
grouping. Because every column shares the same priorities, the columns' samples are the *same* rows, so
the reservoir doubles as a joint row sample (what the Evidently HTML report needs).

Ties in priority only happen when a key repeats; they are broken by a hash of the row's content so the
order stays total and the merge stays exact. That hash is a function of the kept values, so it is neither
stored nor computed for rows whose priority is unique (nearly all of them): only when rows tie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas.util import hash_array, hash_pandas_object

from skewguard.errors import DataError, StatisticsError

# splitmix64's increment: without it, key 0 would hash to priority 0 and always be sampled.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_priorities(
    n_rows: int, row_keys: Sequence[Any] | npt.ArrayLike | None, key_offset: int
) -> npt.NDArray[np.uint64]:
    """Hash priorities for a batch: of ``row_keys`` when given, else of ``key_offset + position``.

    Integer keys are hashed as int64 (so ``3`` and ``np.int32(3)`` agree); any other key is hashed by
    its object value (SipHash with pandas' fixed key), so ``"3"`` and ``3`` are different keys.
    """
    if row_keys is None:
        keys: npt.NDArray[Any] = np.arange(key_offset, key_offset + n_rows, dtype=np.int64)
    elif type(row_keys) is list and len(row_keys) == n_rows and _is_text(row_keys):
        # The stream's request ids: hashed as the objects they are, without the detour through a
        # fixed-width unicode array below (which would give the same keys, at three times the cost).
        return np.asarray(hash_array(np.array(row_keys, dtype=object), categorize=False), dtype=np.uint64)
    else:
        keys = np.asarray(row_keys)
        if keys.ndim != 1 or len(keys) != n_rows:
            msg = f"row_keys must be one key per row: got shape {keys.shape} for {n_rows} rows"
            raise DataError(msg)
    if keys.dtype.kind in "iu":
        mixed = keys.astype(np.int64).view(np.uint64) + _GOLDEN
        return np.asarray(hash_array(mixed), dtype=np.uint64)
    if keys.dtype.kind == "b":
        msg = "row_keys must be integers or strings, got booleans"
        raise DataError(msg)
    return np.asarray(hash_array(keys.astype(object), categorize=False), dtype=np.uint64)


def _is_text(keys: list[Any]) -> bool:
    """All strings, none holding NUL (numpy's unicode arrays drop trailing NULs: keep that path's keys)."""
    return bool(keys) and _STRINGS.issuperset(map(type, keys)) and "\x00" not in "".join(keys)


_STRINGS = frozenset({str})


def _empty_values(kind: str, n: int) -> npt.NDArray[Any]:
    if kind == "f":
        return np.full(n, np.nan, dtype=np.float64)
    return np.full(n, None, dtype=object)


@dataclass(eq=False)
class Reservoir:
    """The ``capacity`` rows with the smallest (priority, tiebreak), kept sorted by that order.

    ``values[name]`` holds one entry per kept row: float64 (NaN = null) for numeric columns, object
    (``None`` = null) for categorical ones. A row's tiebreak is the hash of its values
    (:func:`_tiebreaks`), worked out only where priorities tie.
    """

    capacity: int
    priorities: npt.NDArray[np.uint64]
    values: dict[str, npt.NDArray[Any]]

    @classmethod
    def empty(cls, capacity: int, kinds: Mapping[str, str]) -> Reservoir:
        """An empty reservoir; ``kinds`` maps column name to ``"f"`` (float) or ``"O"`` (object)."""
        if capacity < 0:
            msg = f"reservoir capacity must be >= 0, got {capacity}"
            raise StatisticsError(msg)
        return cls(
            capacity=capacity,
            priorities=np.empty(0, dtype=np.uint64),
            values={name: _empty_values(kind, 0) for name, kind in kinds.items()},
        )

    def __len__(self) -> int:
        return len(self.priorities)

    def copy(self) -> Reservoir:
        """A deep copy (arrays are copied, so folding into the copy leaves this one alone)."""
        return Reservoir(
            capacity=self.capacity,
            priorities=self.priorities.copy(),
            values={name: column.copy() for name, column in self.values.items()},
        )

    def offer(
        self,
        priorities: npt.NDArray[np.uint64],
        fetch: Callable[[npt.NDArray[np.intp]], Mapping[str, npt.NDArray[Any]]],
    ) -> None:
        """Offer a batch of rows; keeps the bottom-``capacity`` of old and new together.

        ``fetch(index)`` returns every column's values at those batch rows. Only the batch's own
        bottom-k candidates (plus ties) are fetched, so the cost is one ``np.partition`` over the
        batch priorities, not a sort, and no value of a row that cannot enter is ever built.
        """
        if self.capacity == 0 or len(priorities) == 0:
            return
        n = len(priorities)
        if n > self.capacity:
            kth = np.partition(priorities, self.capacity - 1)[self.capacity - 1]
            if len(self) >= self.capacity and kth > self.priorities[-1]:
                # Only rows at or below the current worst kept priority can enter.
                kth = self.priorities[-1]
            candidates = np.flatnonzero(priorities <= kth)
        else:
            candidates = np.arange(n)
        if len(candidates) == 0:
            return
        self._absorb(priorities[candidates], fetch(candidates))

    def merge(self, other: Reservoir) -> Reservoir:
        """The exact reservoir of the union of both rows sets (capacity: the smaller of the two)."""
        if set(self.values) != set(other.values):
            msg = "cannot merge reservoirs over different columns"
            raise StatisticsError(msg)
        merged = self.copy()
        merged.capacity = min(self.capacity, other.capacity)
        merged._absorb(other.priorities, other.values)
        return merged

    def _absorb(self, priorities: npt.NDArray[np.uint64], columns: Mapping[str, npt.NDArray[Any]]) -> None:
        if self.capacity == 0:
            self.priorities = self.priorities[:0]
            self.values = {name: kept[:0] for name, kept in self.values.items()}
            return
        all_priorities = np.concatenate([self.priorities, priorities])
        combined = {
            name: np.concatenate([kept, np.asarray(columns[name], dtype=kept.dtype)])
            for name, kept in self.values.items()
        }
        order = np.argsort(all_priorities, kind="stable")
        ranked = all_priorities[order]
        tied = ranked[1:] == ranked[:-1]
        if tied.any():
            # Rows of equal priority are ordered by their content hash (stably, as np.lexsort does), so
            # the kept set and its order are the same whichever side of a merge a row came from.
            in_tie = np.zeros(len(ranked), dtype=bool)
            in_tie[1:] |= tied
            in_tie[:-1] |= tied
            if len(ranked) > self.capacity:
                in_tie &= ranked <= ranked[self.capacity - 1]  # ties past the cut-off change nothing
            rows = order[in_tie]
            if len(rows):
                tiebreaks = np.zeros(len(all_priorities), dtype=np.uint64)
                tiebreaks[rows] = _tiebreaks({name: column[rows] for name, column in combined.items()})
                order = np.lexsort((tiebreaks, all_priorities))
        order = order[: self.capacity]
        self.priorities = all_priorities[order]
        for name, column in combined.items():
            self.values[name] = column[order]

    def equals(self, other: Reservoir) -> bool:
        """Exact equality of capacity, kept rows and their values (NaN equal to NaN)."""
        if self.capacity != other.capacity or set(self.values) != set(other.values):
            return False
        if not np.array_equal(self.priorities, other.priorities):
            return False
        for name, mine in self.values.items():
            theirs = other.values[name]
            if mine.dtype.kind == "f":
                if not np.array_equal(mine, theirs, equal_nan=True):
                    return False
            elif list(mine) != list(theirs):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN / None become ``null``, floats keep their exact repr.

        Tiebreaks are not written: they are recomputed from the values when rows tie.
        """
        values: dict[str, list[Any]] = {}
        for name, column in self.values.items():
            items = column.tolist()  # Python floats, or the objects themselves
            if column.dtype.kind == "f":
                for position in np.flatnonzero(np.isnan(column)).tolist():
                    items[position] = None
            elif not _TEXT_OR_NONE.issuperset(map(type, items)):
                items = [None if v is None else str(v) for v in items]
            values[name] = items
        return {"capacity": self.capacity, "priorities": self.priorities.tolist(), "values": values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kinds: Mapping[str, str]) -> Reservoir:
        """Inverse of :meth:`to_dict`; ``kinds`` as in :meth:`empty`.

        Also reads the earlier form, which stored the tiebreaks too (they are ignored: the same hashes
        follow from the values).
        """
        try:
            if type(data["priorities"]) is not list:
                msg = "priorities must be a list"
                raise TypeError(msg)
            priorities = np.asarray(data["priorities"], dtype=np.uint64).reshape(-1)
            values: dict[str, npt.NDArray[Any]] = {}
            for name, kind in kinds.items():
                raw = data["values"][name]
                if type(raw) is not list:
                    msg = f"values of {name!r} must be a list"
                    raise TypeError(msg)
                if kind == "f":
                    # numpy reads None as NaN when the dtype is float.
                    values[name] = np.array(raw, dtype=np.float64).reshape(-1)
                else:
                    values[name] = np.asarray(raw, dtype=object).reshape(-1)
            capacity = int(data["capacity"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"malformed reservoir in profile JSON: {exc}"
            raise DataError(msg) from exc
        if not all(len(v) == len(priorities) for v in values.values()):
            msg = "malformed reservoir in profile JSON: arrays of different lengths"
            raise DataError(msg)
        return cls(capacity=capacity, priorities=priorities, values=values)


_TEXT_OR_NONE = frozenset({str, type(None)})


def _tiebreaks(rows: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.uint64]:
    """The content hash of each row (all columns together, in the reservoir's column order)."""
    frame = pd.DataFrame(dict(rows))
    return np.asarray(hash_pandas_object(frame, index=False).to_numpy(), dtype=np.uint64)
