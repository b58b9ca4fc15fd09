"""What one window remembers about one model's traffic, in mergeable pieces.

Every piece has the same small contract: ``merge`` (exact and associative, so partitions and processes
add up), ``to_dict``/``from_dict`` (JSON, for the checkpoint). The daemon folds records into the
accumulator of their partition; finalisation merges the partitions' accumulators and judges the sum.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from skewguard.stats import MAX_MAGNITUDE, CategoricalColumnLayout, Profile, ProfileLayout

FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]

#: Request ids kept as examples per finding: enough to start debugging, bounded for the checkpoint.
MAX_EXAMPLES = 5


def merge_examples(a: list[str], b: list[str]) -> list[str]:
    """At most MAX_EXAMPLES ids from both lists.

    The smallest ones, so the result never depends on the order in which partitions are merged (merges
    stay associative and commutative).
    """
    return sorted(set(a) | set(b))[:MAX_EXAMPLES]


@dataclass
class SkewTally:
    """Implementation-skew counts of one feature: how often the logged value differs from the replay."""

    compared: int = 0
    mismatched: int = 0
    max_difference: float = 0.0
    examples: list[str] = field(default_factory=list)

    def merge(self, other: SkewTally) -> SkewTally:
        """Sum of both tallies."""
        return SkewTally(
            self.compared + other.compared,
            self.mismatched + other.mismatched,
            max(self.max_difference, other.max_difference),
            merge_examples(self.examples, other.examples),
        )

    def add(self, compared: int, mismatched_ids: list[str], max_difference: float) -> None:
        """Fold one batch's comparison in."""
        self.compared += compared
        self.mismatched += len(mismatched_ids)
        self.max_difference = max(self.max_difference, max_difference)
        self.examples = merge_examples(self.examples, mismatched_ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "compared": self.compared,
            "mismatched": self.mismatched,
            "max_difference": self.max_difference,
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkewTally:
        """Inverse of :meth:`to_dict`."""
        largest = data["max_difference"]  # an infinite difference was written as JSON null
        return cls(
            int(data["compared"]),
            int(data["mismatched"]),
            math.inf if largest is None else float(largest),
            list(data["examples"]),
        )


@dataclass
class ShadowTally:
    """One shadow candidate's agreement with production in one window (or one partition's share).

    Plain sums and histograms, so it merges exactly; ``skewguard.shadow.compare`` turns it into findings.
    Scores and values fill every field (:meth:`add`); classes (:meth:`add_classes`) only the counts and
    the histograms over the baseline's class bins, and set ``classes``.
    """

    compared: int = 0
    missing: int = 0
    agree: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0
    sabs: float = 0.0
    production_hist: list[int] = field(default_factory=list)
    candidate_hist: list[int] = field(default_factory=list)
    #: The predictions are classes: agreement is equality; sums and correlation do not apply.
    classes: bool = False

    def add(self, production: FloatArray, candidate: FloatArray, edges: FloatArray) -> None:
        """Fold paired predictions (NaN where a model gave none) into the tally.

        A prediction beyond ±``MAX_MAGNITUDE`` (or ±inf) counts as none: its square would overflow the
        sums to inf, which a checkpoint (JSON) cannot carry.
        """
        has_production = np.abs(production) <= MAX_MAGNITUDE
        has_candidate = np.abs(candidate) <= MAX_MAGNITUDE
        usable = has_production & has_candidate
        self.missing += int((has_production & ~has_candidate).sum())
        x, y = production[usable], candidate[usable]
        self.compared += len(x)
        self.agree += int(((x >= 0.5) == (y >= 0.5)).sum())
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float((x * x).sum())
        self.syy += float((y * y).sum())
        self.sxy += float((x * y).sum())
        self.sabs += float(np.abs(x - y).sum())
        bins = len(edges) + 1
        self._histograms(
            np.searchsorted(edges, x, side="right"), np.searchsorted(edges, y, side="right"), bins
        )

    def add_classes(
        self, production: ObjectArray, candidate: ObjectArray, layout: CategoricalColumnLayout
    ) -> None:
        """Fold paired predicted classes (None where a model gave none), binned as the baseline bins them."""
        self.classes = True
        have_production = production != None  # noqa: E711 (elementwise on an object array)
        have_candidate = candidate != None  # noqa: E711
        self.missing += int((have_production & ~have_candidate).sum())
        usable = have_production & have_candidate
        x, y = production[usable], candidate[usable]
        self.compared += len(x)
        self.agree += int((x == y).sum())
        self._histograms(layout.encode(x).codes, layout.encode(y).codes, layout.n_bins)

    def _histograms(
        self, production_bins: npt.NDArray[np.intp], candidate_bins: npt.NDArray[np.intp], bins: int
    ) -> None:
        prod = np.bincount(production_bins, minlength=bins)
        cand = np.bincount(candidate_bins, minlength=bins)
        self.production_hist = (np.asarray(self.production_hist or np.zeros(bins, int)) + prod).tolist()
        self.candidate_hist = (np.asarray(self.candidate_hist or np.zeros(bins, int)) + cand).tolist()

    def merge(self, other: ShadowTally) -> ShadowTally:
        """The tally of both record sets."""

        def hist(a: list[int], b: list[int]) -> list[int]:
            if not a or not b:
                return list(a or b)
            return [int(v) for v in np.asarray(a) + np.asarray(b)]

        return ShadowTally(
            self.compared + other.compared,
            self.missing + other.missing,
            self.agree + other.agree,
            self.sx + other.sx,
            self.sy + other.sy,
            self.sxx + other.sxx,
            self.syy + other.syy,
            self.sxy + other.sxy,
            self.sabs + other.sabs,
            hist(self.production_hist, other.production_hist),
            hist(self.candidate_hist, other.candidate_hist),
            self.classes or other.classes,
        )

    @property
    def correlation(self) -> float:
        """Pearson correlation of production and candidate scores (NaN when either is constant)."""
        n = self.compared
        if n < 2:
            return math.nan
        cov = self.sxy - self.sx * self.sy / n
        vx = self.sxx - self.sx**2 / n
        vy = self.syy - self.sy**2 / n
        return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowTally:
        """Inverse of :meth:`to_dict` (checkpoints from before ``classes`` existed hold scores)."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "classes"}
        return cls(**fields, classes=bool(data.get("classes", False)))


@dataclass
class WindowAccumulator:
    """One model's window (or one partition's share of it)."""

    profile: Profile
    records: int = 0
    late_records: int = 0
    defaulted: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    unknown_state: int = 0
    unknown_state_hashes: Counter[str] = field(default_factory=Counter)
    unknown_state_examples: list[str] = field(default_factory=list)
    skew: dict[str, SkewTally] = field(default_factory=dict)
    replayed: int = 0
    shadow: dict[str, ShadowTally] = field(default_factory=dict)
    #: Earliest and latest event time folded (epoch µs); tracked for count windows, whose stored
    #: bounds are the span of their records (an event-time window's bounds are fixed in advance).
    first_event_us: int | None = None
    last_event_us: int | None = None

    @classmethod
    def empty(cls, layout: ProfileLayout) -> WindowAccumulator:
        """A zero accumulator over ``layout``."""
        return cls(profile=layout.empty_profile())

    def widen(self, first_us: int, last_us: int) -> None:
        """Extend the event-time span by records from ``first_us`` to ``last_us``."""
        self.first_event_us = first_us if self.first_event_us is None else min(self.first_event_us, first_us)
        self.last_event_us = last_us if self.last_event_us is None else max(self.last_event_us, last_us)

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        """The accumulator of both record sets (neither input changes)."""
        firsts = [v for v in (self.first_event_us, other.first_event_us) if v is not None]
        lasts = [v for v in (self.last_event_us, other.last_event_us) if v is not None]
        skew = {name: tally.merge(SkewTally()) for name, tally in self.skew.items()}
        for name, tally in other.skew.items():
            skew[name] = skew[name].merge(tally) if name in skew else tally.merge(SkewTally())
        return WindowAccumulator(
            profile=self.profile.merge(other.profile),
            records=self.records + other.records,
            late_records=self.late_records + other.late_records,
            defaulted=self.defaulted + other.defaulted,
            versions=self.versions + other.versions,
            unknown_state=self.unknown_state + other.unknown_state,
            unknown_state_hashes=self.unknown_state_hashes + other.unknown_state_hashes,
            unknown_state_examples=merge_examples(self.unknown_state_examples, other.unknown_state_examples),
            skew=skew,
            replayed=self.replayed + other.replayed,
            shadow={
                version: self.shadow.get(version, ShadowTally()).merge(
                    other.shadow.get(version, ShadowTally())
                )
                for version in sorted(set(self.shadow) | set(other.shadow))
            },
            first_event_us=min(firsts) if firsts else None,
            last_event_us=max(lasts) if lasts else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the profile carries its layout, so it restores on its own)."""
        return {
            "profile": self.profile.to_dict(),
            "records": self.records,
            "late_records": self.late_records,
            "defaulted": dict(self.defaulted),
            "versions": dict(self.versions),
            "unknown_state": self.unknown_state,
            "unknown_state_hashes": dict(self.unknown_state_hashes),
            "unknown_state_examples": self.unknown_state_examples,
            "skew": {name: tally.to_dict() for name, tally in self.skew.items()},
            "replayed": self.replayed,
            "shadow": {version: tally.to_dict() for version, tally in self.shadow.items()},
            "first_event_us": self.first_event_us,
            "last_event_us": self.last_event_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowAccumulator:
        """Inverse of :meth:`to_dict`."""
        return cls(
            profile=Profile.from_dict(data["profile"]),
            records=int(data["records"]),
            late_records=int(data["late_records"]),
            defaulted=Counter({str(k): int(v) for k, v in data["defaulted"].items()}),
            versions=Counter({str(k): int(v) for k, v in data["versions"].items()}),
            unknown_state=int(data["unknown_state"]),
            unknown_state_hashes=Counter({str(k): int(v) for k, v in data["unknown_state_hashes"].items()}),
            unknown_state_examples=list(data["unknown_state_examples"]),
            skew={str(k): SkewTally.from_dict(v) for k, v in data["skew"].items()},
            replayed=int(data["replayed"]),
            shadow={str(k): ShadowTally.from_dict(v) for k, v in data.get("shadow", {}).items()},
            first_event_us=_optional_int(data.get("first_event_us")),
            last_event_us=_optional_int(data.get("last_event_us")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
