"""What one window remembers about one model's traffic, in mergeable pieces.

Every piece has the same small contract: ``merge`` (exact and associative, so partitions and processes
add up), ``to_dict``/``from_dict`` (JSON, for the checkpoint). The daemon folds records into the
accumulator of their partition; finalisation merges the partitions' accumulators and judges the sum.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from skewguard.stats import Profile, ProfileLayout

#: Request ids kept as examples per finding: enough to start debugging, bounded for the checkpoint.
MAX_EXAMPLES = 5


def _merge_examples(a: list[str], b: list[str]) -> list[str]:
    # Keep the smallest ids: a deterministic choice, so the merged examples do not depend on the order
    # in which partitions are merged (merge stays associative and commutative).
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
            _merge_examples(self.examples, other.examples),
        )

    def add(self, compared: int, mismatched_ids: list[str], max_difference: float) -> None:
        """Fold one batch's comparison in."""
        self.compared += compared
        self.mismatched += len(mismatched_ids)
        self.max_difference = max(self.max_difference, max_difference)
        self.examples = _merge_examples(self.examples, mismatched_ids)

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
        return cls(
            int(data["compared"]),
            int(data["mismatched"]),
            float(data["max_difference"]),
            list(data["examples"]),
        )


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

    @classmethod
    def empty(cls, layout: ProfileLayout) -> WindowAccumulator:
        """A zero accumulator over ``layout``."""
        return cls(profile=layout.empty_profile())

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        """The accumulator of both record sets (neither input changes)."""
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
            unknown_state_examples=_merge_examples(self.unknown_state_examples, other.unknown_state_examples),
            skew=skew,
            replayed=self.replayed + other.replayed,
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
        )
