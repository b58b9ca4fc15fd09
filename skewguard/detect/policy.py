"""The knobs of the verdict: which evidence counts, how much effect matters, how long it must last."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Method(StrEnum):
    """A check: an effect size paired with the test that supplies its evidence.

    * ``wasserstein`` — numeric columns: normalised Wasserstein distance over the binned values
      (effect), binned Kolmogorov–Smirnov test (evidence).
    * ``jensen_shannon`` — categorical columns: Jensen–Shannon distance over the category bins
      (effect), chi-square test of homogeneity (evidence).
    * ``null_rate`` — every column: absolute change of the null share (effect), two-proportion z-test
      (evidence).
    """

    WASSERSTEIN = "wasserstein"
    JENSEN_SHANNON = "jensen_shannon"
    NULL_RATE = "null_rate"


_DEFAULT_FLOORS: dict[Method, float] = {
    Method.WASSERSTEIN: 0.01,
    Method.JENSEN_SHANNON: 0.01,
    Method.NULL_RATE: 0.005,
}


class DriftPolicy(BaseModel):
    """When a feature is flagged, and when a flag becomes an alert.

    A check flags when its effect exceeds the calibrated threshold (never below ``min_threshold``),
    its test's Benjamini–Hochberg adjusted p-value across all the window's checks is below ``alpha``,
    and it saw at least ``min_count`` values. An alert needs flags in ``persistence_k`` of the last
    ``persistence_m`` windows, unless the effect is at least ``severe_multiplier`` times its threshold.

    The floors guard calibrations whose null effects are degenerate (a column that is never null in
    training gives a null-rate threshold of exactly 0): they are the smallest change worth a flag.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.01, gt=0.0, lt=1.0, description="Benjamini–Hochberg false discovery rate.")
    min_count: int = Field(100, ge=1, description="Fewest values a check needs before it may flag.")
    persistence_k: int = Field(2, ge=1, description="Flags needed ...")
    persistence_m: int = Field(3, ge=1, description="... within this many most recent windows.")
    severe_multiplier: float = Field(
        3.0, gt=1.0, description="Effect / threshold ratio that alerts at once, without persistence."
    )
    min_threshold: dict[Method, float] = Field(
        default_factory=lambda: dict(_DEFAULT_FLOORS),
        description="Per-method floor under every calibrated threshold.",
    )

    @field_validator("min_threshold")
    @classmethod
    def _complete_floors(cls, value: dict[Method, float]) -> dict[Method, float]:
        for method, floor in value.items():
            if not floor >= 0.0:
                msg = f"min_threshold[{method.value}] must be >= 0, got {floor}"
                raise ValueError(msg)
        return {**_DEFAULT_FLOORS, **value}

    @model_validator(mode="after")
    def _k_within_m(self) -> DriftPolicy:
        if self.persistence_k > self.persistence_m:
            msg = f"persistence_k ({self.persistence_k}) must not exceed persistence_m ({self.persistence_m})"
            raise ValueError(msg)
        return self

    def floor(self, method: Method) -> float:
        """The smallest threshold allowed for ``method``."""
        return self.min_threshold[method]
