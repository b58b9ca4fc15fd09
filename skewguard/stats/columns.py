"""What a profiled column is: its kind (how it is sketched), its role, and its optional domain.

The kind decides the sketch (bins for numbers, category counts for everything else); the role only
labels the column for reports (a prediction drifting reads differently from an input drifting); the
domain, when known, lets a window report the share of values that should never occur at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias

from skewguard.errors import ConfigError

#: Numbers larger in magnitude count as null, as NaN and ±inf do: their squares, summed over a window
#: (variance, M2, sums of squares), would overflow float64 to inf, which JSON cannot carry, so a
#: checkpoint holding one could not be restored. No feature or score is legitimately this large.
MAX_MAGNITUDE: Final = 1e100


class ColumnKind(StrEnum):
    """How a column is sketched. Booleans are CATEGORICAL, profiled as ``"true"`` / ``"false"``."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class ColumnRole(StrEnum):
    """What the column is to the model; every role is profiled and judged the same way."""

    FEATURE = "feature"
    PREDICTION = "prediction"
    LABEL = "label"


NumericDomain: TypeAlias = tuple[float, float]
"""Closed interval ``(low, high)`` of the values a numeric column may take."""

CategoricalDomain: TypeAlias = frozenset[str]
"""The set of values a categorical column may take."""


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column to profile.

    ``domain`` is optional: a ``(low, high)`` interval for a NUMERIC column, a frozenset of allowed
    values for a CATEGORICAL one. Values outside it are counted (``out_of_domain``) so a window can say
    "3 % of ages are negative" even when the bins, fitted on clean training data, cannot.
    """

    name: str
    kind: ColumnKind
    role: ColumnRole = ColumnRole.FEATURE
    domain: NumericDomain | CategoricalDomain | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            msg = f"ColumnSpec.name must be a non-empty string, got {self.name!r}"
            raise ConfigError(msg)
        if not isinstance(self.kind, ColumnKind):
            msg = f"ColumnSpec({self.name!r}).kind must be a ColumnKind, got {self.kind!r}"
            raise ConfigError(msg)
        if not isinstance(self.role, ColumnRole):
            msg = f"ColumnSpec({self.name!r}).role must be a ColumnRole, got {self.role!r}"
            raise ConfigError(msg)
        if self.domain is None:
            return
        if self.kind is ColumnKind.NUMERIC:
            if not (isinstance(self.domain, tuple) and len(self.domain) == 2):
                msg = (
                    f"ColumnSpec({self.name!r}).domain must be a (low, high) tuple for a numeric column, "
                    f"got {self.domain!r}"
                )
                raise ConfigError(msg)
            low, high = (float(v) for v in self.domain)
            if not low <= high:
                msg = f"ColumnSpec({self.name!r}).domain must have low <= high, got ({low}, {high})"
                raise ConfigError(msg)
            object.__setattr__(self, "domain", (low, high))
        else:
            if not isinstance(self.domain, frozenset) or not all(isinstance(v, str) for v in self.domain):
                msg = (
                    f"ColumnSpec({self.name!r}).domain must be a frozenset of strings for a categorical "
                    f"column, got {self.domain!r}"
                )
                raise ConfigError(msg)

    @property
    def numeric_domain(self) -> NumericDomain | None:
        """The numeric interval, or None (typed accessor so callers need no isinstance)."""
        if self.kind is ColumnKind.NUMERIC and isinstance(self.domain, tuple):
            return self.domain
        return None

    @property
    def categorical_domain(self) -> CategoricalDomain | None:
        """The allowed category set, or None."""
        if self.kind is ColumnKind.CATEGORICAL and isinstance(self.domain, frozenset):
            return self.domain
        return None
